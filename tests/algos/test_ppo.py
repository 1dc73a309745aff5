"""PPOLearner.update against an independent float64 computation, and where the carried
RTRL sensitivities advance: once per rollout, from the parameters the update started from.

The reference recomputes every minibatch's loss by hand (core input built from the raw
rollout, log-softmax, GAE by its n-step definition in Python floats, the clipped objective
written out) with the parameters the learner has when it takes that step.
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from rtrl_rl.algos import make_learner
from rtrl_rl.algos.ppo import PPOConfig, PPOLearner
from rtrl_rl.config import TrainConfig
from rtrl_rl.errors import ConfigError
from rtrl_rl.grad import make_grad
from rtrl_rl.rollout import Rollout
from rtrl_rl.runners.runner_config import RunnerConfig
from tests.algos.test_impala import F64, T, _agent, _rollout

B4 = 4


def _ppo(**kw: object) -> PPOConfig:
    base = dict(name="ppo", optimizer="adam", lr=0.01, lr_decay="none", max_grad_norm=100.0,
                entropy_cost=0.01, baseline_cost=0.5, discount=0.9, reward_clip=1.0,
                loss_reduction="mean", epochs=2, minibatches=2, clip_eps=0.2,
                value_clip_eps=0.3, gae_lambda=0.8, normalize_advantages=True)
    base.update(kw)
    return PPOConfig(**base)


def _wide(ro: Rollout) -> Rollout:
    """Four streams: the two of ``_rollout`` and the same two with other observations."""
    gen = torch.Generator().manual_seed(3)
    out = {}
    for name in ("obs", "reward", "first", "prev_action", "action", "dist_params"):
        v = getattr(ro, name)
        other = v + 0.5 * torch.randn(v.shape, generator=gen, dtype=F64) if name in (
            "obs", "dist_params") else v
        out[name] = torch.cat([v, other], 1)
    out["core_state"] = torch.cat([ro.core_state, -ro.core_state], 0)
    out["stream_ids"] = torch.arange(B4)
    out["policy_version"] = torch.zeros(B4, dtype=torch.long)
    return Rollout(**out)


def _reference_gae(ro: Rollout, values: list[list[float]], cfg: PPOConfig):
    """A_t = sum_k (gamma lambda)^k delta_{t+k}, cut at episode ends; Python floats."""
    first, reward = ro.first.tolist(), ro.reward.tolist()
    adv = [[0.0] * B4 for _ in range(T)]
    for b in range(B4):
        for s in range(T):
            total, weight = 0.0, 1.0
            for t in range(s, T):
                gamma = 0.0 if first[t + 1][b] else cfg.discount
                r = max(-1.0, min(1.0, reward[t + 1][b]))
                total += weight * (r + gamma * values[t + 1][b] - values[t][b])
                weight *= gamma * cfg.gae_lambda
                if gamma == 0.0:
                    break
            adv[s][b] = total
    return torch.tensor(adv, dtype=F64)


def _outputs(agent, ro: Rollout):
    """Logits and values ``[T + 1, b]`` of a plain autograd unroll over every entry."""
    a = ro.obs.shape[1]
    keep = (~ro.first).to(F64)
    onehot = torch.zeros(T + 1, a, 3, dtype=F64)
    for t in range(T + 1):
        for b in range(a):
            if not ro.first[t, b]:
                onehot[t, b, int(ro.prev_action[t, b])] = 1.0
    x = torch.cat([agent.stem(ro.obs), (ro.reward.clamp(-1, 1) * keep).unsqueeze(-1),
                   onehot], -1)
    h, _ = agent.core(x, ro.core_state, ro.first)
    return agent.heads(h)


def _reference_loss(agent, ro: Rollout, idx, old, cfg: PPOConfig) -> torch.Tensor:
    logits, values = _outputs(agent, Rollout.select(ro, idx))
    logp = F.log_softmax(logits[:T], -1)
    act = ro.action[:T, idx]
    logp_a = logp.gather(-1, act[..., None]).squeeze(-1)
    old_logp = F.log_softmax(ro.dist_params[:T, idx], -1).gather(-1, act[..., None]).squeeze(-1)
    adv = old["adv"][:, idx]
    adv = (adv - adv.mean()) / (adv.std(unbiased=False) + 1e-8)
    ratio = (logp_a - old_logp).exp()
    pg = -torch.minimum(ratio * adv, ratio.clamp(0.8, 1.2) * adv).mean()
    v, v_old, ret = values[:T], old["values"][:, idx], old["returns"][:, idx]
    v_clip = v_old + (v - v_old).clamp(-0.3, 0.3)
    vloss = (0.5 * torch.maximum((v - ret) ** 2, (v_clip - ret) ** 2)).mean()
    neg_ent = (logp.exp() * logp).sum(-1).mean()
    return pg + cfg.baseline_cost * vloss + cfg.entropy_cost * neg_ent


def test_every_minibatch_loss_matches_the_hand_computation():
    torch.manual_seed(0)
    agent, ro, cfg = _agent(), _wide(_rollout()), _ppo()
    with torch.no_grad():
        logits0, values0 = _outputs(agent, ro)
    adv = _reference_gae(ro, values0.tolist(), cfg)
    old = {"values": values0[:T], "adv": adv, "returns": adv + values0[:T]}
    learner = make_learner(agent, make_grad("bptt", agent.core, B4), cfg, 10)
    assert isinstance(learner, PPOLearner)
    seen, picked = [], []
    select, step = ro.select, learner.step

    def spy_select(idx):
        picked.append(idx.clone())
        return select(idx)

    def spy_step(loss):
        ref = _reference_loss(copy.deepcopy(agent), ro, picked[-1], old, cfg)
        seen.append((loss.item(), ref.item()))
        return step(loss)

    ro.select, learner.step = spy_select, spy_step
    metrics = learner.update(ro)
    assert len(seen) == cfg.epochs * cfg.minibatches
    for got, want in seen:
        assert got == pytest.approx(want, rel=1e-10, abs=1e-12)
    assert len({tuple(sorted(i.tolist())) for i in picked[:2]}) == 2  # disjoint halves
    assert sorted(torch.cat(picked[:2]).tolist()) == list(range(B4))
    assert seen[0][0] != seen[2][0]  # the parameters moved between epochs
    assert float(metrics["clip_frac"]) >= 0 and learner.updates == 1


def _rtrl_learner(cfg):
    torch.manual_seed(0)
    agent = _agent()
    grad = make_grad("rtrl", agent.core, B4)
    learner = make_learner(agent, grad, cfg, 10)
    ro = _wide(_rollout())
    # non-zero carried sensitivities: one IMPALA-free warm chunk through the same module
    h, _ = grad.unroll(torch.randn(T, B4, agent.core.layers[0].input_size, dtype=F64),
                       ro.core_state, ro.first[:-1])
    h.sum().backward()
    agent.zero_grad()
    return agent, grad, learner, ro


def test_epochs_read_the_sensitivities_from_before_the_chunk_which_advance_once():
    agent, grad, learner, ro = _rtrl_learner(_ppo(epochs=3))
    s0 = {k: v.clone() for k, v in grad.state_dict().items()}
    acting = copy.deepcopy(agent)
    reads, unroll = [], grad.unroll

    def spy(*args, advance=True, **kw):
        reads.append((advance, {k: v.clone() for k, v in grad.state_dict().items()}))
        return unroll(*args, advance=advance, **kw)

    grad.unroll = spy
    learner.update(ro)
    grad.unroll = unroll
    assert [a for a, _ in reads].count(True) == 1 and reads[-1][0] is True
    for _, state in reads:  # every pass, the advancing one included, starts from S_0
        for k, v in state.items():
            assert torch.equal(v, s0[k]), k

    # the advanced state is one chunk from S_0 with the parameters that acted
    ref = make_grad("rtrl", acting.core, B4)
    ref.load_state_dict(s0)
    x = acting.core_input(ro.obs, ro.reward, ro.prev_action, ro.first)
    with torch.no_grad():
        ref.unroll(x[:-1], ro.core_state, ro.first[:-1])
    moved = make_grad("rtrl", agent.core, B4)  # the same from the updated parameters
    moved.load_state_dict(s0)
    with torch.no_grad():
        moved.unroll(agent.core_input(ro.obs, ro.reward, ro.prev_action, ro.first)[:-1],
                     ro.core_state, ro.first[:-1])
    got, want, other = grad.state_dict(), ref.state_dict(), moved.state_dict()
    for k in want:
        torch.testing.assert_close(got[k], want[k], rtol=1e-12, atol=1e-12)
    assert any((got[k] - other[k]).abs().max() > 1e-6 for k in want)
    for p, q in zip(agent.parameters(), acting.parameters(), strict=True):
        assert p.shape == q.shape  # the learner's parameters were put back after advancing
    assert any(not torch.equal(p, q) for p, q in zip(agent.parameters(),
                                                      acting.parameters(), strict=True))


def test_minibatches_must_divide_the_streams():
    with pytest.raises(ConfigError, match="algo.minibatches"):
        TrainConfig(algo=_ppo(minibatches=3), runner=RunnerConfig(num_envs=32))
