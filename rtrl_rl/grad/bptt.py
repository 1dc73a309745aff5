"""Truncated backprop through time: backprop within the chunk, the initial state detached."""

from __future__ import annotations

from rtrl_rl.grad.base import TemporalGrad


class BPTT(TemporalGrad):
    name = "bptt"
    description = "truncated BPTT: backprop within each rollout, no credit across rollouts"

    def unroll(self, x, state, first, stream_ids=None, advance=True):
        return self.core(x, state.detach(), first)


class OneStep(TemporalGrad):
    """Immediate gradients only: ``c_{t-1}`` is cut from the graph at every step, so no
    credit flows through the recurrence at all (the no-memory-credit baseline)."""

    name = "one_step"
    description = "one-step: immediate gradients only, no credit through the recurrence"

    def unroll(self, x, state, first, stream_ids=None, advance=True):
        return self.core(x, state.detach(), first, detach_every_step=True)
