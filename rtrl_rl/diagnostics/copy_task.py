"""Copy-task diagnostic (Irie et al., 2023): does the gradient method carry credit far enough?

An eLSTM with a linear readout is trained, supervised, on ``B`` streams of back-to-back
copy-task episodes (``rtrl_rl.envs.copy_task``): ``L`` random symbols, a delimiter, then ``L``
recall steps whose targets are the symbols seen ``L + 1`` steps earlier. Training is online,
as in RL: each update consumes the next chunk of ``M`` steps of every stream, the core state
and the gradient module's carried state (RTRL sensitivities) flow from chunk to chunk, and
both are reset inside the core wherever ``first`` marks an episode start. ``chunk=1`` updates
every step. The only switch between methods is ``grad=rtrl | bptt | one_step``:

- ``rtrl``: exact untruncated gradients however episodes straddle chunks;
- ``bptt``: truncated at chunk boundaries, so a gap ``L + 1 >= M`` gets no recurrent credit;
- ``one_step``: no credit through the recurrence at all.

``min_length=1`` draws each pattern's length uniformly from ``[1, L]``: the reference
paper's protocol ("level L"), under which short patterns give an easy start.

Accuracy is measured on fresh patterns (seeds disjoint from training): per-bit (recall
tokens right) and whole-sequence (all recall tokens of an episode right); with varying
lengths, also on patterns of exactly length ``L`` (``*_at_L``). The per-bit
bar to beat is not chance (``1/V``) but ``majority_bit_acc``: answering every recall step
with the pattern's most frequent symbol (about ``0.5 + 0.4/sqrt(L)`` for bits) needs only a
slow counting unit, which even ``one_step`` learns when the forget bias is high enough;
only order-aware memory goes beyond it.

    python -m rtrl_rl.diagnostics.copy_task grad=rtrl pattern_length=50 chunk=10
    rtrl-copy grad=bptt pattern_length=20 min_length=1 json=bptt.json

The command line is a Hydra app (``copy_app``); this module is the model and the training.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from rtrl_rl.diagnostics.copy_config import CopyConfig
from rtrl_rl.envs.copy_task import CopyBatch, CopyTaskStream, copy_task_batch, copy_task_in_dim
from rtrl_rl.grad import TemporalGrad, make_grad
from rtrl_rl.models.cells import Core
from rtrl_rl.models.registry import make_core

#: Evaluation patterns come from these seed offsets, never from the training stream.
PERIODIC_EVAL_SEED, FINAL_EVAL_SEED = 1_000_003, 2_000_003


class CopyModel(nn.Module):
    """eLSTM core ``[T, B, V + 2] -> [T, B, N]`` followed by a linear readout to ``V`` logits."""

    def __init__(self, cfg: CopyConfig) -> None:
        super().__init__()
        in_dim = copy_task_in_dim(cfg.num_symbols)
        self.core: Core = make_core("elstm", in_dim, cfg.hidden_size, cfg.layers,
                                    forget_bias=cfg.forget_bias)
        self.readout = nn.Linear(self.core.output_size, cfg.num_symbols)

    def forward(
        self, x: torch.Tensor, state: torch.Tensor, first: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Plain forward (no carried gradient state): logits ``[T, B, V]``, state ``[B, D]``."""
        h, state = self.core(x, state, first)
        return self.readout(h), state


def _to(batch: CopyBatch, device: torch.device) -> CopyBatch:
    return CopyBatch(*(t.to(device) for t in (batch.inputs, batch.targets, batch.mask,
                                              batch.first)))


@torch.no_grad()
def evaluate(model: CopyModel, cfg: CopyConfig, episodes: int, seed: int) -> dict[str, float]:
    """Accuracy on ``episodes`` fresh aligned episodes from a zero state.

    Returns ``bit_acc`` (fraction of recall tokens right), ``seq_acc`` (fraction of
    episodes with all recall tokens right) and ``majority_bit_acc``: the per-bit accuracy of
    answering every recall step with the episode's most frequent symbol, which needs only a
    counter, no order (a plateau that every method reaches, see the module doc). The
    episodes' lengths follow the training distribution; when it varies
    (``min_length > 0``), ``bit_acc_at_L`` and ``seq_acc_at_L`` are added: the same on
    patterns of exactly the longest length ``L``.
    """
    length, symbols = cfg.pattern_length, cfg.num_symbols
    out = _accuracy(model, length, symbols, episodes, seed, cfg.min_length or None)
    if cfg.min_length and cfg.min_length < length:
        at_l = _accuracy(model, length, symbols, episodes, seed + 1, None)
        out.update(bit_acc_at_L=at_l["bit_acc"], seq_acc_at_L=at_l["seq_acc"])
    return out


def _accuracy(
    model: CopyModel, length: int, num_symbols: int, episodes: int, seed: int,
    min_length: int | None,
) -> dict[str, float]:
    """Per-bit, whole-sequence and majority accuracy on ``episodes`` fresh aligned episodes
    of patterns up to ``length`` (from ``min_length``; fixed when None)."""
    device = next(model.parameters()).device
    batch = _to(copy_task_batch(length, episodes, num_symbols=num_symbols, seed=seed,
                                min_length=min_length), device)
    state = model.core.initial_state(episodes, device=device)
    logits, _ = model(batch.inputs, state, batch.first)  # [E, B, V]
    hit = logits.argmax(-1) == batch.targets  # [E, B]
    right = hit | ~batch.mask
    bits = (hit & batch.mask).sum() / batch.mask.sum()
    counts = nn.functional.one_hot(batch.targets, num_symbols)  # [E, B, V]
    counts = (counts * batch.mask.unsqueeze(-1)).sum(0)  # [B, V]
    majority = counts.max(-1).values.sum() / batch.mask.sum()
    return {"bit_acc": float(bits), "seq_acc": float(right.all(0).float().mean()),
            "majority_bit_acc": float(majority)}


@torch.no_grad()
def accuracy_by_length(
    model: CopyModel, cfg: CopyConfig, episodes: int, seed: int
) -> list[float]:
    """Whole-sequence accuracy on ``episodes`` fresh patterns of each length ``1 .. L``
    (entry ``n - 1`` is length ``n``): where along the length axis a method fails."""
    return [_accuracy(model, n, cfg.num_symbols, episodes, seed + 7919 * n, None)["seq_acc"]
            for n in range(1, cfg.pattern_length + 1)]


def solved_up_to(by_length: list[float], bar: float = 0.99) -> int:
    """The longest ``k`` such that every length ``n <= k`` reaches ``bar`` (0 if none)."""
    k = 0
    while k < len(by_length) and by_length[k] >= bar:
        k += 1
    return k


class CopyTrainer:
    """Online training state: model, gradient module, optimizer, streams and carried state.

    ``update()`` consumes the next ``M = cfg.chunk`` steps of every stream: the gradient
    module unrolls the core from the carried state ``[B, D]`` (RTRL also carries its
    sensitivities), the masked cross-entropy over the chunk's recall tokens is
    back-propagated and the optimizer steps. Chunks without recall tokens only advance the
    state.
    """

    def __init__(self, cfg: CopyConfig) -> None:
        self.cfg = cfg
        self.device = torch.device(cfg.device)
        torch.manual_seed(cfg.seed)
        self.model = CopyModel(cfg).to(self.device)
        self.grad: TemporalGrad = make_grad(cfg.grad, self.model.core, cfg.batch_size)
        self.stream = CopyTaskStream(cfg.pattern_length, cfg.batch_size,
                                     num_symbols=cfg.num_symbols, seed=cfg.seed,
                                     stagger=cfg.stagger, min_length=cfg.min_length or None)
        self.state = self.model.core.initial_state(cfg.batch_size, device=self.device)
        params = self.model.parameters()
        if cfg.optimizer == "adam":
            self.opt: torch.optim.Optimizer = torch.optim.Adam(params, lr=cfg.lr)
        elif cfg.optimizer == "rmsprop":
            self.opt = torch.optim.RMSprop(params, lr=cfg.lr, alpha=0.99, eps=0.01)
        else:
            self.opt = torch.optim.SGD(params, lr=cfg.lr)
        self.steps = 0  # env steps per stream consumed so far
        self.updates = 0

    def _set_lr(self) -> None:
        if self.cfg.lr_decay:
            frac = max(0.0, 1.0 - self.steps / self.cfg.total_steps)
            for group in self.opt.param_groups:
                group["lr"] = self.cfg.lr * frac

    def update(self, num_steps: int | None = None) -> dict[str, float]:
        """One chunk (``num_steps``, default ``cfg.chunk``) and at most one optimizer step.

        Returns the chunk's summed ``loss``, the number of ``correct`` recall predictions
        and the number of recall tokens ``count`` (0 when nothing was learnt from).
        """
        m = num_steps or self.cfg.chunk
        batch = _to(self.stream.next(m), self.device)
        h, state = self.grad.unroll(batch.inputs, self.state, batch.first)  # [M, B, N]
        self.state = state.detach()
        self.steps += m
        count = int(batch.mask.sum())
        if count == 0:
            return {"loss": 0.0, "correct": 0.0, "count": 0.0}
        logits = self.model.readout(h[batch.mask])  # [K, V]
        targets = batch.targets[batch.mask]
        loss = nn.functional.cross_entropy(logits, targets)
        self._set_lr()
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        if self.cfg.clip > 0:
            nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.clip)
        self.opt.step()
        self.updates += 1
        correct = float((logits.detach().argmax(-1) == targets).sum())
        return {"loss": float(loss.detach()) * count, "correct": correct, "count": float(count)}


ProgressFn = Callable[[dict[str, Any]], None]


def print_progress(row: dict[str, Any]) -> None:
    print(
        f"[copy {row['grad']} L={row['pattern_length']}] step {row['step']:>8d} "
        f"ep {row['episodes']:>7.1f}  loss {row['loss']:.4f}  train bit {row['train_bit_acc']:.3f}"
        f"  eval bit {row['bit_acc']:.3f} seq {row['seq_acc']:.3f}"
        + (f" (at L: bit {row['bit_acc_at_L']:.3f} seq {row['seq_acc_at_L']:.3f})"
           if "seq_acc_at_L" in row else "")
        + f"  {row['elapsed_s']:.0f}s",
        file=sys.stderr, flush=True,
    )


def train(
    cfg: CopyConfig, progress: ProgressFn | None = print_progress,
    on_eval: ProgressFn | None = None,
) -> dict[str, Any]:
    """Train for ``cfg.total_steps`` env steps per stream (or until ``stop_at``), evaluate.

    ``progress`` (not called when ``cfg.quiet``) and ``on_eval`` (always) get each periodic
    evaluation's row: ``step`` (env steps per stream), ``episodes``, ``loss``,
    ``train_bit_acc``, the ``evaluate`` accuracies and ``elapsed_s``.

    Returns a JSON-ready dict: the config, ``bit_acc``/``seq_acc`` on fresh patterns
    (``cfg.eval_episodes`` of them, a seed never used in training or for early stopping),
    ``steps``/``episodes``/``updates`` actually trained, ``solved_at_step`` (first periodic
    eval with whole-sequence accuracy >= ``stop_at``, or None), ``seq_acc_by_length``
    (entry ``n - 1``: whole-sequence accuracy on patterns of length ``n``, for ``n`` up to
    ``L``), ``solved_up_to`` (longest ``k`` with every length ``<= k`` at >= 0.99) and
    ``wall_s``.
    """
    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    trainer = CopyTrainer(cfg)
    if cfg.quiet:
        progress = None
    total, e = cfg.total_steps, cfg.episode_len
    every = cfg.eval_every or max(cfg.chunk, math.ceil(total / 20))
    next_eval = every
    sums = {"loss": 0.0, "correct": 0.0, "count": 0.0}
    history: list[dict[str, Any]] = []
    solved_at = None
    start = time.perf_counter()
    while trainer.steps < total:
        out = trainer.update(min(cfg.chunk, total - trainer.steps))
        for k in sums:
            sums[k] += out[k]
        if trainer.steps >= next_eval or trainer.steps >= total:
            next_eval += every
            trainer.model.eval()
            acc = evaluate(trainer.model, cfg, cfg.eval_episodes, PERIODIC_EVAL_SEED + cfg.seed)
            trainer.model.train()
            n = max(sums["count"], 1.0)
            row = {"grad": cfg.grad, "pattern_length": cfg.pattern_length,
                   "step": trainer.steps, "episodes": trainer.steps / e,
                   "loss": sums["loss"] / n, "train_bit_acc": sums["correct"] / n, **acc,
                   "elapsed_s": time.perf_counter() - start}
            sums = dict.fromkeys(sums, 0.0)
            history.append(row)
            if progress is not None:
                progress(row)
            if on_eval is not None:
                on_eval(row)
            if cfg.stop_at > 0 and acc["seq_acc"] >= cfg.stop_at:
                solved_at = trainer.steps
                break
    train_s = time.perf_counter() - start
    final = evaluate(trainer.model, cfg, cfg.eval_episodes, FINAL_EVAL_SEED + cfg.seed)
    by_length = accuracy_by_length(trainer.model, cfg, max(cfg.eval_episodes // 4, 1),
                                   FINAL_EVAL_SEED + 1 + cfg.seed)
    return {
        **final,
        "seq_acc_by_length": [round(a, 4) for a in by_length],
        "solved_up_to": solved_up_to(by_length),
        "grad": cfg.grad,
        "pattern_length": cfg.pattern_length,
        "steps": trainer.steps,
        "episodes": trainer.steps / e,
        "updates": trainer.updates,
        "solved_at_step": solved_at,
        "train_s": round(train_s, 2),
        "wall_s": round(time.perf_counter() - start, 2),
        "chance_bit_acc": 1.0 / cfg.num_symbols,
        "config": cfg.to_dict(),
        "history": history,
    }


def main() -> None:
    """Console-script entry (``rtrl-copy``): the Hydra app in ``copy_app``."""
    from rtrl_rl.diagnostics.copy_app import main as app_main

    app_main()


if __name__ == "__main__":
    main()
