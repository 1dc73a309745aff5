"""Batched policy inference on the learner's device, for env-only workers.

One process (spawned by the learner, like the env workers) serves every env group of every
worker: it waits on the workers' step pipes, takes all requests that are ready (dynamic
batching), gathers their observations from the shared-memory rollout slots, runs one
policy step over the whole batch on the device, and writes actions, the behaviour policy's
distribution parameters, the core state before entry 0 and the policy version back into the
slots (``Agent.step`` is traced where that is safe: ``rtrl_rl.models.traced``). The
per-stream core state never leaves the device. It is a process and not a thread of the
learner so that neither waits for the other's Python (the GIL): on the 2-core CPU, the
default job ran faster with a process than with a thread (measurements:
docs/performance.md).

A request ``(group, slot, t, generation)`` means: entry ``t`` of that slot holds the
group's newest observation. ``t == 0`` starts the group's streams afresh (a new or
restarted worker), so their core state is reset; ``t == 1`` is the first step of a rollout,
whose ``core_state`` is the state before entry 0, kept per stream as ``state_prev``. A
request from an earlier generation of the worker (left in the pipe by one that died) is
dropped, and the worker drops replies that are not for its generation.

Weights come from the learner's lock-free ``WeightBoard`` (never a half-written copy),
checked before every batched step. Counters ``[policy steps, observations]`` live in shared
memory for the learner's metrics.
"""

from __future__ import annotations

import copy
import os
import struct
from dataclasses import dataclass

import torch

from rtrl_rl.models.traced import traced_step
from rtrl_rl.rollout import Rollout
from rtrl_rl.runners.procs import LearnerGone, Waiter, guarded, recv_frame, send_frame
from rtrl_rl.runners.weights import WeightBoard

#: worker -> server: (group, slot, t, generation). server -> worker: (group, generation).
REQUEST = struct.Struct("<iiii")
REPLY = struct.Struct("<ii")
#: Both sides poll this long before sleeping. Unpinned, a short poll beat both not polling
#: and longer polls; with the actor side pinned to one CPU (``rtrl_rl.runners.affinity``) a
#: shorter one still won: there a poller holds the CPU the other side needs (measurements:
#: docs/performance.md).
SPIN_S = 0.0001


class InferenceServer:
    def __init__(self, template, device: torch.device, slots: list[list[list[Rollout]]],
                 group_size: int, seed: int, board: WeightBoard,
                 generations: torch.Tensor | None = None,
                 stats: torch.Tensor | None = None) -> None:
        """slots ``[worker][group][slot]``: shared-memory rollouts of ``group_size``
        streams; stream ids run worker-major, then group, then stream. generations ``[W]``
        and stats ``[2]``: shared int64 tensors (the learner's), or private ones."""
        self.device, self.slots, self.group_size = device, slots, group_size
        self.groups = len(slots[0])
        self.board = board
        self.model = copy.deepcopy(template).to(device).requires_grad_(False)
        self.version = board.read_into(self.model)
        num_streams = len(slots) * self.groups * group_size
        dtype = next(template.parameters()).dtype
        self.initial = template.core.initial_state(num_streams, dtype=dtype).to(device)
        self.state, self.state_prev = self.initial.clone(), self.initial.clone()
        self.generator = torch.Generator(device=device).manual_seed(seed)
        self.generations = (generations if generations is not None
                            else torch.zeros(len(slots), dtype=torch.int64))
        self.stats = stats if stats is not None else torch.zeros(2, dtype=torch.int64)
        cuda = device.type == "cuda"
        spec = slots[0][0][0]
        self._staging = {  # pinned on CUDA, so the host-to-device copies do not block
            name: torch.empty((num_streams, *getattr(spec, name).shape[2:]),
                              dtype=getattr(spec, name).dtype, pin_memory=cuda)
            for name in ("obs", "reward", "first", "prev_action")
        }
        self._counts: dict[int, torch.Tensor] = {}
        self._ids = [[torch.arange(*self._span(w, g)) for g in range(self.groups)]
                     for w in range(len(slots))]
        self.step = traced_step(self.model, spec.obs[0].to(device))

    def _span(self, w: int, g: int) -> tuple[int, int]:
        lo = (w * self.groups + g) * self.group_size
        return lo, lo + self.group_size

    @torch.inference_mode()
    def serve(self, requests: list[tuple[int, int, int, int]]) -> None:
        """Act for ``requests`` ``(worker, group, slot, t)``, all at once; writes into the
        slots and returns when the writes are done."""
        if self.board.latest != self.version:
            self.version = self.board.read_into(self.model)
        views = [(self.slots[w][g][s], t, slice(*self._span(w, g))) for w, g, s, t in requests]
        n = len(views) * self.group_size
        if len(views) == 1 and self.device.type == "cpu":
            # one group on the CPU: its slot entry and its state rows are used in place
            r, t, idx = views[0]
            dev = {name: getattr(r, name)[t] for name in self._staging}
        else:
            host = {name: torch.cat([getattr(r, name)[t] for r, t, _ in views],
                                    out=buf[:n]) for name, buf in self._staging.items()}
            dev = {k: v.to(self.device, non_blocking=True) for k, v in host.items()}
            idx = torch.cat([self._ids[w][g] for w, g, _, _ in requests]).to(
                self.device, non_blocking=True)
        for _, t, sl in views:
            if t == 0:  # a new episode for each of these streams
                self.state[sl] = self.initial[sl]
                self.state_prev[sl] = self.initial[sl]
        state = self.state[idx]
        starts = [(r, self.state_prev[sl].clone()) for r, t, sl in views if t <= 1]
        self.state_prev[idx] = state
        params, new_state = self.step(dev["obs"], dev["reward"], dev["prev_action"],
                                      dev["first"], state)
        action = self.model.dist.sample(params, self.generator)  # as Agent.act does
        self.state[idx] = new_state
        action, params = action.cpu(), params.float().cpu()
        for k, (r, t, _) in enumerate(views):
            rows = slice(k * self.group_size, (k + 1) * self.group_size)
            r.action[t] = action[rows]
            r.dist_params[t] = params[rows]
        for r, s in starts:
            r.core_state.copy_(s)
            r.policy_version.fill_(self.version)
        self.stats.add_(self._count(n))

    def _count(self, n: int) -> torch.Tensor:
        """``[1, n]``: one policy step of n observations (built once per n)."""
        inc = self._counts.get(n)
        if inc is None:
            inc = self._counts[n] = torch.tensor([1, n], dtype=torch.int64)
        return inc

    def _take(self, ready: list, owner: dict) -> list[tuple[int, int, int, int, int]]:
        requests = []
        for conn in ready:
            w = owner.get(conn)
            if w is None:
                continue
            while conn.poll(0):
                g, slot, t, gen = REQUEST.unpack(recv_frame(conn, REQUEST.size))
                if gen == int(self.generations[w]):
                    requests.append((w, g, slot, t, gen))
        return requests

    def serve_forever(self, conns: list, control, parent: int) -> None:
        """Serve the workers' step pipes until the learner says stop or is gone."""
        owner = {c: w for w, c in enumerate(conns)}
        waiter = Waiter([*conns, control], SPIN_S)
        while True:
            ready = waiter.wait(0.5)
            if os.getppid() != parent:
                raise LearnerGone
            if control in ready:
                try:
                    if control.recv() is None:
                        raise LearnerGone
                except (EOFError, OSError):
                    raise LearnerGone from None
            requests = self._take(ready, owner)
            if not requests:
                continue
            self.serve([r[:4] for r in requests])
            for w, g, _, _, gen in requests:
                send_frame(conns[w], REPLY.pack(g, gen))


@dataclass
class InferenceHandles:
    """What the inference process gets (picklable under spawn)."""

    template: torch.nn.Module  # the agent's architecture (CPU); weights from the board
    device: str
    slots: list[list[list[Rollout]]]
    group_size: int
    seed: int
    board: WeightBoard
    generations: torch.Tensor  # [W] shared: each worker's current generation
    stats: torch.Tensor  # [2] shared: policy steps, observations
    conns: list  # the server's end of each worker's step pipe
    control: object  # duplex pipe to the learner: None = stop; errors go back over it
    threads: int = 1
    cpus: tuple[int, ...] = ()  # CPUs to pin this process to (empty: no pinning)


def inference_main(h: InferenceHandles) -> None:
    """Entry point of the inference process."""

    def body(parent: int) -> None:
        torch.set_num_threads(h.threads)
        server = InferenceServer(h.template, torch.device(h.device), h.slots, h.group_size,
                                 h.seed, h.board, h.generations, h.stats)
        server.serve_forever(h.conns, h.control, parent)

    guarded(h.control, body, h.cpus)
