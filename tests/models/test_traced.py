"""The traced policy step: the eager step's outputs, fresh weights, and no trace where the
path depends on the data."""

from __future__ import annotations

import pytest
import torch

from rtrl_rl.config import ModelConfig
from rtrl_rl.envs.base import EnvSpec
from rtrl_rl.models.agent import Agent
from rtrl_rl.models.registry import CORES
from rtrl_rl.models.traced import _probe, traced_step


def _agent(core: str = "elstm", stem: str = "mlp", **kw) -> Agent:
    torch.manual_seed(0)
    image = stem != "mlp"
    spec = EnvSpec(obs_shape=(3, 36, 36) if image else (5,),
                   obs_dtype=torch.uint8 if image else torch.float32, num_actions=4,
                   num_envs=2)
    model = ModelConfig(stem=stem, stem_hidden=[8], stem_out=16, core=core, hidden_size=8,
                        prev_action=True, **kw)
    return Agent(spec, model)


def _like(agent: Agent) -> torch.Tensor:
    shape = (2, *agent.stem.in_shape) if hasattr(agent.stem, "in_shape") else (2, 5)
    return torch.zeros(shape, dtype=torch.uint8 if len(shape) == 4 else torch.float32)


@pytest.mark.parametrize("core,stem", [*((n, "mlp") for n, c in CORES.items() if c.traceable),
                                       ("elstm", "nature")])
def test_trace_matches_the_eager_step(core, stem):
    agent = _agent(core, stem)
    step = traced_step(agent, _like(agent))
    assert isinstance(step, torch.jit.ScriptModule)
    for batch, seed in ((1, 5), (6, 6), (11, 7)):
        probe = _probe(agent, _like(agent), batch, seed)
        with torch.no_grad():
            for got, want in zip(step(*probe), agent.step(*probe), strict=True):
                torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-6)


def test_trace_follows_weights_copied_in_place():
    agent = _agent()
    step = traced_step(agent, _like(agent))
    probe = _probe(agent, _like(agent), 4, 3)
    with torch.no_grad():
        before = step(*probe)[0].clone()
        for p in agent.parameters():
            p.add_(0.1)
        after, want = step(*probe)[0], agent.step(*probe)[0]
    assert not torch.allclose(before, after)
    torch.testing.assert_close(after, want, rtol=1e-6, atol=1e-6)


def test_no_trace_where_the_path_could_differ(monkeypatch):
    agent = _agent(amp="bf16")
    assert traced_step(agent, _like(agent)) == agent.step
    agent = _agent()
    monkeypatch.setattr(type(agent.core), "traceable", False)
    assert traced_step(agent, _like(agent)) == agent.step
