"""Skipped updates: a non-finite loss or gradient leaves weights, optimizer state, LR
schedule and update count as they were; too many in a row stop the run; non-finite RTRL
sensitivities restart their streams."""

from __future__ import annotations

import copy
import math

import pytest
import torch

from rtrl_rl.algos import LEARNERS, make_learner
from rtrl_rl.algos.guard import first_nonfinite
from rtrl_rl.config import ModelConfig
from rtrl_rl.envs.base import EnvSpec
from rtrl_rl.errors import TrainingDiverged
from rtrl_rl.grad import make_grad
from rtrl_rl.models.agent import Agent
from rtrl_rl.rollout import Rollout

T, B, OBS, A = 5, 4, 3, 2


def build(algo: str = "impala", grad: str = "rtrl", **algo_kw):
    torch.manual_seed(0)
    spec = EnvSpec(obs_shape=(OBS,), obs_dtype=torch.float32, num_actions=A, num_envs=B)
    agent = Agent(spec, ModelConfig(stem="mlp", stem_hidden=[8], core="elstm", hidden_size=4),
                  reward_clip=0.0)
    ppo = {"epochs": 1, "minibatches": B} if algo == "ppo" else {}
    cfg = LEARNERS[algo].config(name=algo, optimizer="adam", lr=1e-2, **ppo, **algo_kw)
    return agent, make_learner(agent, make_grad(grad, agent.core, B), cfg, total_updates=50)


def rollout(seed: int, bad_stream: int | None = None) -> Rollout:
    gen = torch.Generator().manual_seed(seed)
    reward = torch.randn(T + 1, B, generator=gen)
    if bad_stream is not None:
        reward[2, bad_stream] = math.nan
    return Rollout(
        obs=torch.randn(T + 1, B, OBS, generator=gen), reward=reward,
        first=torch.zeros(T + 1, B, dtype=torch.bool),
        prev_action=torch.randint(A, (T + 1, B), generator=gen),
        action=torch.randint(A, (T + 1, B), generator=gen),
        dist_params=torch.randn(T + 1, B, A, generator=gen),
        core_state=torch.zeros(B, 4), stream_ids=torch.arange(B),
        policy_version=torch.zeros(B, dtype=torch.long))


def state_of(agent, learner) -> dict:
    return copy.deepcopy({"agent": agent.state_dict(), "opt": learner.optimizer.state_dict(),
                          "sched": learner.scheduler.state_dict(), "updates": learner.updates,
                          "lr": learner.scheduler.get_last_lr()})


def assert_same(a, b) -> None:
    if isinstance(a, torch.Tensor):
        assert torch.equal(a, b)
    elif isinstance(a, dict):
        assert a.keys() == b.keys()
        for k in a:
            assert_same(a[k], b[k])
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b)
        for x, y in zip(a, b, strict=True):
            assert_same(x, y)
    else:
        assert a == b


@pytest.mark.parametrize("algo", ["impala", "ppo"])
@pytest.mark.parametrize("grad", ["rtrl", "bptt"])
def test_a_nonfinite_update_changes_nothing_and_is_counted(algo, grad, caplog):
    agent, learner = build(algo, grad)
    learner.update(rollout(0))  # the optimizer has moments to keep
    before = state_of(agent, learner)
    metrics = learner.update(rollout(1, bad_stream=1))
    assert_same(before, state_of(agent, learner))
    assert metrics["skipped_updates"] == 1 and learner.skips.in_row == 1
    assert "update 2 skipped" in caplog.text and "is not finite" in caplog.text
    metrics = learner.update(rollout(2))
    assert learner.updates == 2 and learner.skips.in_row == 0
    assert metrics["skipped_updates"] == 1
    assert learner.state_dict()["skipped_updates"] == 1


def test_ppo_returns_to_the_start_when_a_later_minibatch_fails():
    agent, learner = build("ppo")
    learner.update(rollout(0))
    before = state_of(agent, learner)
    torch.manual_seed(5)
    last = int(torch.randperm(B)[-1])  # the minibatch (one stream) the epoch takes last
    torch.manual_seed(5)
    learner.update(rollout(1, bad_stream=last))
    assert_same(before, state_of(agent, learner))


def test_too_many_skips_in_a_row_stop_with_one_line():
    agent, learner = build(max_skipped_updates=3)
    learner.update(rollout(0, bad_stream=0))
    learner.update(rollout(1, bad_stream=0))
    with pytest.raises(TrainingDiverged) as e:
        learner.update(rollout(2, bad_stream=0))
    assert str(e.value).startswith("3 updates in a row skipped for non-finite values (last: "
                                   "loss term 'loss/")
    assert "\n" not in str(e.value)


def test_nonfinite_sensitivities_restart_only_their_streams():
    agent, learner = build(grad="rtrl")
    learner.update(rollout(0))
    learner.grad._sync()
    learner.grad._s_vec[0][2, 0, 1] = math.inf
    good = [s[[0, 1, 3]].clone() for s in learner.grad.state_dict().values()]
    learner.update(rollout(1))  # its gradient reads stream 2's sensitivity: skipped
    assert learner.updates == 1 and learner.stream_resets == 1
    after = learner.grad.state_dict()
    assert all(bool(torch.isfinite(s).all()) for s in after.values())
    # the advance over the chunk: the other streams carry on from where they were
    assert all(not torch.equal(g, s[[0, 1, 3]]) for g, s in zip(good, after.values(), strict=True))
    learner.update(rollout(2))
    assert learner.updates == 2


def test_first_nonfinite_names_a_loss_term_then_a_gradient():
    lin = torch.nn.Linear(2, 2)
    lin.weight.grad = torch.tensor([[1.0, math.inf], [0.0, math.nan]])
    lin.bias.grad = torch.zeros(2)
    named = list(lin.named_parameters())
    assert first_nonfinite({"loss/a": torch.tensor(1.0), "loss/b": torch.tensor(math.nan)},
                           named) == "loss term 'loss/b' = nan"
    assert first_nonfinite({"loss/a": 1.0}, named) == (
        "the gradient of weight (2 of 4 entries not finite)")
    lin.weight.grad.zero_()
    assert first_nonfinite({}, named) == "the gradient (another rank's part of it)"


def test_a_nonfinite_loss_with_finite_gradients_is_skipped():
    agent, learner = build()
    params = [p for p in agent.parameters()]
    loss = sum(p.sum() for p in params) * 0.0 + math.inf  # gradient 0, loss inf
    before = state_of(agent, learner)
    _, stepped = learner.step(loss)
    assert not stepped
    assert_same(before, state_of(agent, learner))


def test_ranks_decide_together():
    """``combine_grads`` stands for the all-reduce over ranks: a rank whose loss is not
    finite sends a non-finite gradient, and a rank that receives one skips too."""
    agent, learner = build()
    sent = []

    def record(params):
        sent.append(all(bool(torch.isfinite(p.grad).all()) for p in params
                        if p.grad is not None))

    learner.combine_grads = record
    params = list(agent.parameters())
    _, stepped = learner.step(sum(p.sum() for p in params) * 0.0 + math.nan)
    assert sent == [False] and not stepped

    def from_another_rank(params):
        params[-1].grad.view(-1)[0] = math.inf

    learner.combine_grads = from_another_rank
    before = state_of(agent, learner)
    _, stepped = learner.step(sum(p.sum() for p in params))
    assert not stepped
    assert_same(before, state_of(agent, learner))
