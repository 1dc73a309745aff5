"""The actor's rollouts, through the sync runner: core states, tiling, and re-unrolling.

A rollout's ``core_state`` must be the core state before its entry 0, consecutive rollouts
must share an entry, and unrolling the core over a rollout from ``core_state`` (as the
learner does, with any gradient method) must reproduce the logits the actor acted with.
Delayed recall with delays 1..3 makes episodes end inside rollouts, at different steps in
different streams.
"""

from __future__ import annotations

import io

import pytest
import torch

from rtrl_rl.config import ModelConfig
from rtrl_rl.envs import make_env
from rtrl_rl.grad import make_grad
from rtrl_rl.models.agent import Agent
from rtrl_rl.rollout import Rollout
from rtrl_rl.runners.runner_config import RunnerConfig
from rtrl_rl.runners.sync import SyncRunner

B, UNROLL, ROLLOUTS = 3, 5, 6
ENV = {"family": "delayed_recall", "num_cues": 3, "delay": 1, "delay_max": 3}
ENTRY_FIELDS = ("obs", "reward", "first", "prev_action", "action", "dist_params")


def _agent() -> Agent:
    torch.manual_seed(0)
    spec = make_env(ENV, B, seed=0).spec
    model = ModelConfig(stem="mlp", stem_hidden=[16], core="elstm", hidden_size=8,
                        prev_reward=True, prev_action=True)
    agent = Agent(spec, model)
    with torch.no_grad():  # logits of order 1, so that a wrong state shows
        agent.head.policy.weight.normal_(0.0, 1.0)
    return agent


@pytest.fixture(scope="module")
def collected() -> tuple[Agent, list[Rollout]]:
    agent = _agent()
    runner = SyncRunner(ENV, RunnerConfig(num_envs=B, unroll=UNROLL), agent,
                        torch.device("cpu"), seed=5)
    rollouts = [runner.next_rollout(0)[0] for _ in range(ROLLOUTS)]
    runner.close()
    return agent, rollouts


def _timeline(rollouts: list[Rollout]) -> dict[str, torch.Tensor]:
    """Every entry once, in time order: rollout k's entries 0..T-1, then the last entry T."""
    return {f: torch.cat([getattr(r, f)[:-1] for r in rollouts]
                         + [getattr(rollouts[-1], f)[-1:]]) for f in ENTRY_FIELDS}


def test_episodes_start_inside_rollouts(collected):
    """The fixture is not degenerate: resets fall mid-rollout, and entry 0 of some later
    rollouts continues an episode."""
    _, rollouts = collected
    assert all(r.first[0].all() for r in rollouts[:1])
    assert any(r.first[1:-1].any() for r in rollouts)
    assert any(not r.first[0].all() for r in rollouts[1:])


def test_successive_rollouts_share_an_entry(collected):
    _, rollouts = collected
    for k, (a, b) in enumerate(zip(rollouts[:-1], rollouts[1:], strict=True)):
        for f in ENTRY_FIELDS:
            assert torch.equal(getattr(a, f)[-1], getattr(b, f)[0]), (k, f)
        assert a.unroll == b.unroll == UNROLL


def test_prev_action_is_the_action_before(collected):
    _, rollouts = collected
    line = _timeline(rollouts)
    assert torch.equal(line["prev_action"][1:], line["action"][:-1])
    assert not line["prev_action"][0].any()


def test_core_state_is_the_state_before_entry_zero(collected):
    """A step-by-step reference pass of the core over the whole timeline, from zeros."""
    agent, rollouts = collected
    line = _timeline(rollouts)
    with torch.no_grad():
        x = agent.core_input(line["obs"], line["reward"], line["prev_action"], line["first"])
        state = agent.core.initial_state(B)
        before = []
        for t in range(x.shape[0]):
            before.append(state)
            _, state = agent.core(x[t:t + 1], state, line["first"][t:t + 1])
    for k, r in enumerate(rollouts):
        torch.testing.assert_close(r.core_state, before[k * UNROLL], rtol=0, atol=1e-6,
                                   msg=f"rollout {k}")
    assert not torch.equal(before[UNROLL], before[UNROLL + 1])


@pytest.mark.parametrize("method", ["core", "rtrl", "bptt", "one_step"])
def test_reunrolling_from_core_state_reproduces_the_actor_logits(collected, method: str):
    """The learner's view of each rollout, chunk after chunk, as in training."""
    agent, rollouts = collected
    grad = None if method == "core" else make_grad(method, agent.core, B)
    for k, r in enumerate(rollouts):
        x = agent.core_input(r.obs, r.reward, r.prev_action, r.first)
        if grad is None:
            with torch.no_grad():
                h, state = agent.core(x[:-1], r.core_state, r.first[:-1])
        else:
            h, state = grad.unroll(x[:-1], r.core_state, r.first[:-1], r.stream_ids)
        logits, _ = agent.heads(h)
        torch.testing.assert_close(logits.detach(), r.dist_params[:-1], rtol=0, atol=1e-6,
                                   msg=f"rollout {k}")
        if k + 1 < len(rollouts):  # the chunk ends where the next one starts
            torch.testing.assert_close(state.detach(), rollouts[k + 1].core_state, rtol=0,
                                       atol=1e-6, msg=f"rollout {k}")


def test_a_saved_actor_state_with_the_old_field_name_resumes():
    """A checkpoint from before ``Rollout.logits`` became ``dist_params`` holds entry 0's
    distribution parameters under ``logits``: a runner loaded from it has them, and goes on
    exactly as the runner that saved it."""
    agent, cpu, cfg = _agent(), torch.device("cpu"), RunnerConfig(num_envs=B, unroll=UNROLL)
    runner = SyncRunner(ENV, cfg, agent, cpu, seed=5)
    runner.next_rollout(0)
    data = io.BytesIO()
    torch.save(runner.state_dict(), data)
    data.seek(0)
    state = torch.load(data, weights_only=True)
    entry0 = state["actor"]["entry0"]
    entry0["logits"] = entry0.pop("dist_params")
    resumed = SyncRunner(ENV, cfg, agent, cpu, seed=6)
    assert resumed.load_state_dict(state)
    assert torch.equal(resumed.actor.buf["dist_params"][0], entry0["logits"])
    assert entry0["logits"].abs().sum() > 0
    torch.manual_seed(1)
    want = runner.next_rollout(0)[0]
    torch.manual_seed(1)
    got = resumed.next_rollout(0)[0]
    runner.close()
    resumed.close()
    for f in (*ENTRY_FIELDS, "core_state"):
        assert torch.equal(getattr(got, f), getattr(want, f)), f
