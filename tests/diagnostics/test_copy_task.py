"""Copy-task diagnostic: it learns, it trains online across chunks, bad options fail cleanly.

The Hydra app itself (run dirs, multiruns, presets, rtrl-compare) is in test_copy_app.py."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from rtrl_rl.diagnostics.copy_app import main
from rtrl_rl.diagnostics.copy_config import CopyConfig, compose
from rtrl_rl.diagnostics.copy_task import CopyTrainer, solved_up_to, train
from rtrl_rl.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]


def _cfg(**kw) -> CopyConfig:
    base = dict(pattern_length=3, hidden_size=16, batch_size=4, steps=100, stagger=False,
                eval_episodes=64, quiet=True, clip=0.0)
    base.update(kw)
    return CopyConfig(**base)


def _grads(trainer: CopyTrainer) -> dict[str, torch.Tensor]:
    return {k: p.grad.detach().clone() for k, p in trainer.model.named_parameters()}


def _counting_shortcut(length: int) -> tuple[float, float]:
    """Per-bit and whole-sequence accuracy of the best predictor that remembers how many
    of each bit the pattern had but not their order (uniform random bits).

    Given k ones among L bits, every recall position is a one with probability k / L, so
    the best per-bit answer is the majority bit, right max(k, L - k) / L of the time; the
    best whole-sequence guess is one fixed arrangement, right 1 / C(L, k) of the time.
    """
    p = [math.comb(length, k) / 2 ** length for k in range(length + 1)]
    bit = sum(pk * max(k, length - k) / length for k, pk in enumerate(p))
    seq = sum(pk / math.comb(length, k) for k, pk in enumerate(p))
    return bit, seq


def test_counting_shortcut_by_hand():
    assert _counting_shortcut(1) == (1.0, 1.0)
    assert _counting_shortcut(2) == pytest.approx((0.75, 0.75))  # 00, 11 right; 01, 10 half
    assert _counting_shortcut(4) == pytest.approx((11 / 16, 5 / 16))


def test_rtrl_learns_short_copy_beyond_the_counting_shortcut():
    """Above what order-blind memory can reach (L = 4: 0.6875 per bit, 0.3125 whole
    sequence), not merely above chance (0.5): one-step or truncated credit gets past
    0.7 per bit on this budget, but not past the shortcut by a wide margin."""
    torch.set_num_threads(1)
    length = 4
    cfg = _cfg(pattern_length=length, hidden_size=32, batch_size=32, steps=3000, stop_at=0.0)
    out = train(cfg, progress=None)
    assert out["steps"] == 3000 and out["updates"] > 0
    bit, seq = _counting_shortcut(length)
    # the evaluation's own majority baseline agrees with the expectation (64 episodes)
    assert abs(out["majority_bit_acc"] - bit) < 0.08, out
    assert out["bit_acc"] > max(bit, out["majority_bit_acc"]) + 0.2, out
    assert out["seq_acc"] > seq + 0.3, out


@pytest.mark.parametrize("chunk_episodes", [1, 2])
def test_rtrl_equals_bptt_when_chunks_hold_whole_episodes(chunk_episodes):
    """No episode crosses a chunk boundary: nothing to carry, so both methods agree."""
    e = 2 * 3 + 1
    params = {}
    for g in ("rtrl", "bptt"):
        trainer = CopyTrainer(_cfg(grad=g, chunk=chunk_episodes * e, lr=1e-2))
        for _ in range(3):
            trainer.update()
        params[g] = dict(trainer.model.named_parameters())
    for k, p in params["rtrl"].items():
        torch.testing.assert_close(p, params["bptt"][k], rtol=1e-5, atol=1e-6)


def _summed_chunk_grads(grad: str, chunk: int, episodes: int = 2) -> dict[str, torch.Tensor]:
    """lr=0: parameters stay put, so per-chunk gradients (times the chunk's token count: the
    loss is a per-chunk mean) can be summed over ``episodes`` aligned episodes. Chunks must
    be <= E so that every chunk size draws the same patterns (the stream draws new patterns
    per call)."""
    e = 2 * 3 + 1
    trainer = CopyTrainer(_cfg(grad=grad, chunk=chunk, lr=0.0))
    total: dict[str, torch.Tensor] = {}
    while trainer.steps < episodes * e:
        out = trainer.update()
        if out["count"] > 0:  # this chunk's mean loss got its own backward
            for k, g in _grads(trainer).items():
                total[k] = total.get(k, 0) + g * out["count"]
    return total


def test_training_is_online_state_and_sensitivities_cross_chunks():
    """Updating every step (chunk=1), RTRL's per-chunk gradients add up to the full-episode
    gradient; truncated BPTT's and one-step's do not (the credit across chunks is lost)."""
    full = _summed_chunk_grads("bptt", chunk=7)  # one chunk = one whole episode
    rtrl = _summed_chunk_grads("rtrl", chunk=1)
    for k in full:
        torch.testing.assert_close(rtrl[k], full[k], rtol=1e-4, atol=1e-6)
    for truncated in ("bptt", "one_step"):
        other = _summed_chunk_grads(truncated, chunk=1)
        assert not torch.allclose(other["core.layers.0.W_z"], full["core.layers.0.W_z"],
                                  atol=1e-4)
    # uneven chunks that straddle episodes: still exact
    rtrl3 = _summed_chunk_grads("rtrl", chunk=3, episodes=3)
    full3 = _summed_chunk_grads("bptt", chunk=7, episodes=3)
    for k in full3:
        torch.testing.assert_close(rtrl3[k], full3[k], rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("arg,needle", [
    ("grad=rtlr", "grad"),
    ("patern_length=5", "pattern_length"),
    ("chunk=abc", "chunk"),
    ("chunk=0", "chunk"),
    ("lr=-1", "lr"),
    ("stagger=maybe", "stagger"),
    ("optimizer=adamw", "optimizer"),
    ("hidden_size", "hidden_size"),
    ("min_length=11", "min_length"),
    ("--bogus", "--bogus"),
    ("objective=seq_acc_at_L", "min_length"),
    ("+sweep=optuna chunk=0", "chunk"),
    ("-m grad=rtrl,bptt pattern_length=2,9 min_length=5", "min_length"),  # every job checked
    ("-m +experiment=scan min_length=7", "min_length"),
])
def test_bad_cli_value_is_one_line(arg, needle, capsys):
    with pytest.raises(SystemExit) as exc:
        main(arg.split())
    assert exc.value.code == 2
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert len(err) == 1 and needle in err[0], err


def test_cli_subprocess_error_and_json(tmp_path):
    bad = subprocess.run([sys.executable, "-m", "rtrl_rl.diagnostics.copy_task", "chunk=0"],
                         capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert bad.stderr.strip().count("\n") == 0 and "chunk" in bad.stderr
    path = tmp_path / "out.json"
    ok = subprocess.run([sys.executable, "-m", "rtrl_rl.diagnostics.copy_task",
                         "pattern_length=3", "steps=40", "eval_episodes=16", "--json", str(path),
                         f"hydra.run.dir={tmp_path / 'run'}"],
                        capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert ok.returncode == 0, ok.stderr
    line = json.loads(ok.stdout.strip().splitlines()[-1])
    assert {"bit_acc", "seq_acc", "grad", "steps"} <= set(line) and line["steps"] == 40
    saved = json.loads(path.read_text())
    assert saved["config"]["pattern_length"] == 3 and saved["history"]


def test_compose_types():
    cfg = compose(["grad=bptt", "lr=1e-3", "stagger=false", "pattern_length=7"])
    assert (cfg.grad, cfg.lr, cfg.stagger, cfg.episode_len) == ("bptt", 1e-3, False, 15)
    assert cfg.total_steps == cfg.episodes * 15
    assert compose(["steps=99"]).total_steps == 99
    assert compose([]) == CopyConfig()  # configs/copy/config.yaml = the dataclass defaults
    with pytest.raises(ConfigError, match="episodes"):
        compose(["episodes=0"])
    with pytest.raises(ConfigError, match="did you mean pattern_length"):
        compose(["+patern_length=3"])
    fb = compose(["pattern_length=20", "forget_bias='${auto_forget_bias:${pattern_length}}'"])
    assert fb.forget_bias == round(math.log(21), 3)


def test_variable_lengths_report_accuracy_at_the_longest():
    cfg = _cfg(pattern_length=4, min_length=1, steps=60)
    assert cfg.episode_len == 1 + 4 + 1  # mean of 2n + 1 over n uniform in [1, 4]
    out = train(cfg, progress=None)
    assert {"seq_acc_at_L", "bit_acc_at_L"} <= set(out)
    assert out["seq_acc_at_L"] <= out["seq_acc"] + 0.2  # length-4 patterns are the hardest
    assert "seq_acc_at_L" not in train(_cfg(steps=20), progress=None)


def test_solved_up_to():
    assert solved_up_to([1.0, 0.995, 0.98, 1.0]) == 2
    assert solved_up_to([0.5, 1.0]) == 0
    assert solved_up_to([1.0, 1.0]) == 2
    assert solved_up_to([]) == 0


def test_accuracy_by_length_covers_every_length():
    out = train(_cfg(pattern_length=4, steps=20), progress=None)
    by = out["seq_acc_by_length"]
    assert len(by) == 4 and all(0.0 <= a <= 1.0 for a in by)
    assert out["solved_up_to"] == solved_up_to(by)


@pytest.mark.parametrize("jobs", ["1", "2"])
def test_scan_script_smoke(tmp_path, jobs):
    path, png = tmp_path / "scan.json", tmp_path / "by_length.png"
    out = subprocess.run([sys.executable, "scripts/copy_scan.py", "--lengths", "2,3",
                          "--grads", "rtrl,bptt", "--chunk", "4", "--json", str(path),
                          "--plot", str(png), "--jobs", jobs, "--sweep-dir", str(tmp_path / "sw"),
                          "steps=30", "eval_episodes=16", "hidden_size=8"],
                         capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert "fails at" in out.stdout and "solved up to" in out.stdout
    assert png.stat().st_size > 1000
    saved = json.loads(path.read_text())
    assert len(saved["runs"]) == 4 and set(saved["fails_at_seq"]) == {"rtrl", "bptt"}
    assert [(r["pattern_length"], r["grad"]) for r in saved["runs"]] == [
        (2, "rtrl"), (2, "bptt"), (3, "rtrl"), (3, "bptt")]
    assert all(r["config"]["chunk"] == 4 and r["config"]["hidden_size"] == 8
               for r in saved["runs"])
    assert len(list((tmp_path / "sw").rglob("metrics.csv"))) == 4  # one run dir per run
    if jobs == "1":
        return
    again = subprocess.run([sys.executable, "scripts/copy_scan.py", "--from",
                            str(tmp_path / "sw")], capture_output=True, text=True, timeout=120,
                           cwd=ROOT)
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout.splitlines()[-1])["fails_at_seq"] == saved["fails_at_seq"]


def test_scan_script_rejects_a_bad_run_before_any_starts():
    out = subprocess.run([sys.executable, "scripts/copy_scan.py", "--lengths", "2,9",
                          "min_length=5"], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert out.returncode == 2 and "min_length" in out.stderr and "Traceback" not in out.stderr


@pytest.mark.slow
def test_rtrl_solves_what_truncated_bptt_cannot():
    """L=5 with chunk 4 < gap 6: RTRL reaches 100% whole-sequence; BPTT gets no credit."""
    torch.set_num_threads(1)
    common = dict(pattern_length=5, hidden_size=64, batch_size=32, chunk=4, steps=12000,
                  stagger=True, clip=1.0)
    rtrl = train(_cfg(grad="rtrl", **common), progress=None)
    bptt = train(_cfg(grad="bptt", **common), progress=None)
    assert rtrl["seq_acc"] == 1.0, rtrl
    assert bptt["bit_acc"] < 0.9 and bptt["seq_acc"] < 0.5, bptt
