"""``Agent.step`` traced with TorchScript, for the batched policy step.

The trace gives the same outputs with far less Python per call, and on the 2-core CPU that
Python is most of a policy step (measurements: docs/performance.md). A trace records one
path through the code, so it is used only for cores whose class says their one-step path
cannot depend on the data (``Core.traceable``), and only after it matched the
eager step on probes of other batch sizes and episode starts. It holds the agent's own
parameter tensors, so weights copied into the agent in place reach it.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable

import torch
from torch import nn

log = logging.getLogger(__name__)

Step = Callable[..., tuple[torch.Tensor, torch.Tensor]]


class _Step(nn.Module):
    def __init__(self, agent: nn.Module) -> None:
        super().__init__()
        self.agent = agent

    def forward(self, obs, reward, prev_action, first, state):
        return self.agent.step(obs, reward, prev_action, first, state)


def _probe(agent, obs_like: torch.Tensor, batch: int, seed: int) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    shape = (batch, *obs_like.shape[1:])
    if obs_like.dtype.is_floating_point:
        obs = torch.rand(shape, generator=g).to(obs_like.dtype)
    else:
        obs = torch.randint(0, 256, shape, generator=g).to(obs_like.dtype)
    dev = obs_like.device
    dtype = next(agent.parameters()).dtype
    return (obs.to(dev), torch.randn(batch, generator=g).to(dev),
            agent.dist.mode(torch.randn(batch, agent.dist.param_size, generator=g)).to(dev),
            (torch.arange(batch) % 2 == seed % 2).to(dev),
            torch.randn(batch, agent.core.state_size, generator=g).to(dev, dtype))


@torch.no_grad()
def traced_step(agent, obs_like: torch.Tensor) -> Step:
    """A traced ``agent.step`` when that is safe and checked, else ``agent.step``.
    obs_like: ``[B, ...]`` observations of the right shape, dtype and device."""
    why = None
    if not agent.core.traceable:
        why = f"core {agent.core.name} has data-dependent control flow"
    elif agent.amp != "none" or agent.compile_stem:
        why = "model.amp or model.compile_stem is on"
    if why is None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # TracerWarnings about the baked T = 1
            traced = torch.jit.trace(_Step(agent), _probe(agent, obs_like, 4, 0),
                                     check_trace=False)
        for batch, seed in ((3, 1), (7, 2)):
            probe = _probe(agent, obs_like, batch, seed)
            for got, want in zip(traced(*probe), agent.step(*probe), strict=True):
                if got.shape != want.shape or not torch.allclose(got, want, rtol=1e-5,
                                                                 atol=1e-6):
                    why = "the trace disagreed with the eager step"
        if why is None:
            return traced
    log.info("policy step: eager (%s)", why)
    return agent.step
