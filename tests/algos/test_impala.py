"""ImpalaLearner.update against an independent float64 computation of the IMPALA/V-trace step.

The reference builds the core input by hand, unrolls a copy of the agent over all ``T + 1``
entries with plain autograd, computes V-trace with the n-step sum of its definition in
Python floats, and applies the grad-norm clip and RMSProp's first step by hand.
"""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F

from rtrl_rl.algos.impala import ImpalaConfig, ImpalaLearner
from rtrl_rl.config import ModelConfig
from rtrl_rl.envs.base import EnvSpec
from rtrl_rl.grad import make_grad
from rtrl_rl.models.agent import Agent
from rtrl_rl.rollout import Rollout

F64 = torch.float64
T, B, OBS, A = 6, 2, 5, 3
# Episode starts: stream 0 at entry 3, stream 1 at entries 0 and 5.
FIRST = [[0, 1], [0, 0], [0, 0], [1, 0], [0, 0], [0, 1], [0, 0]]
# reward[t] came with obs[t]; entry 0's reward must not be trained on, and |r| > 1 is clipped.
REWARD = [[5.0, -4.0], [0.5, -2.0], [0.0, 1.0], [3.0, 0.25], [-0.75, 0.0], [0.0, -1.5],
          [2.0, 0.5]]
ACTION = [[0, 2], [1, 1], [2, 0], [1, 2], [0, 0], [2, 1], [1, 0]]


def _algo(**kw: object) -> ImpalaConfig:
    base = dict(optimizer="rmsprop", lr=0.05, lr_decay="linear", rms_alpha=0.99, rms_eps=0.01,
                max_grad_norm=0.05, entropy_cost=0.01, baseline_cost=0.5, discount=0.9,
                reward_clip=1.0, clip_rho=1.3, clip_pg_rho=0.8, vtrace_lambda=0.95,
                loss_reduction="sum")
    base.update(kw)
    return ImpalaConfig(**base)


def _agent() -> Agent:
    torch.manual_seed(0)
    spec = EnvSpec(obs_shape=(OBS,), obs_dtype=torch.float32, num_actions=A, num_envs=B)
    model = ModelConfig(stem="mlp", stem_hidden=[8], core="elstm", hidden_size=4,
                        prev_reward=True, prev_action=True)
    agent = Agent(spec, model, reward_clip=1.0).double()
    with torch.no_grad():  # a non-trivial policy and value (the head starts near uniform)
        agent.head.policy.weight.normal_(0.0, 1.0)
        agent.head.value.bias.fill_(0.3)
    return agent


def _rollout() -> Rollout:
    gen = torch.Generator().manual_seed(1)
    action = torch.tensor(ACTION)
    prev_action = torch.cat([torch.tensor([[1, 0]]), action[:-1]])
    return Rollout(
        obs=torch.randn(T + 1, B, OBS, generator=gen, dtype=F64),
        reward=torch.tensor(REWARD, dtype=F64),
        first=torch.tensor(FIRST, dtype=torch.bool),
        prev_action=prev_action,
        action=action,
        # behaviour logits far from the agent's: importance weights well away from 1
        dist_params=2.0 * torch.randn(T + 1, B, A, generator=gen, dtype=F64),
        core_state=0.5 * torch.randn(B, 4, generator=gen, dtype=F64),
        stream_ids=torch.arange(B),
        policy_version=torch.zeros(B, dtype=torch.long),
    )


def _log_softmax(row: list[float]) -> list[float]:
    m = max(row)
    lse = m + math.log(sum(math.exp(v - m) for v in row))
    return [v - lse for v in row]


def _reference_vtrace(ro: Rollout, target: torch.Tensor, values: list[list[float]],
                      cfg: ImpalaConfig) -> tuple[list[list[float]], list[list[float]], list]:
    """Per stream, the n-step V-trace sums of the definition; Python floats throughout.

    ``values`` is ``[T + 1][B]`` (entry ``T``: the bootstrap). Returns ``vs``,
    ``pg_advantages`` (both ``[T][B]``) and the unclipped ``rho`` ``[T][B]``.
    """
    first, reward = ro.first.tolist(), ro.reward.tolist()
    actions, behaviour, target = ro.action.tolist(), ro.dist_params.tolist(), target.tolist()
    rho = [[0.0] * B for _ in range(T)]
    gamma = [[0.0] * B for _ in range(T)]
    r = [[0.0] * B for _ in range(T)]
    for t in range(T):
        for b in range(B):
            a = actions[t][b]
            rho[t][b] = math.exp(_log_softmax(target[t][b])[a] - _log_softmax(behaviour[t][b])[a])
            gamma[t][b] = 0.0 if first[t + 1][b] else cfg.discount
            r[t][b] = max(-1.0, min(1.0, reward[t + 1][b]))
    vs = [[0.0] * B for _ in range(T + 1)]
    adv = [[0.0] * B for _ in range(T)]
    for b in range(B):
        vs[T][b] = values[T][b]
        for s in range(T):
            total, trace = values[s][b], 1.0
            for t in range(s, T):
                delta = min(cfg.clip_rho, rho[t][b]) * (
                    r[t][b] + gamma[t][b] * values[t + 1][b] - values[t][b])
                total += trace * delta
                trace *= gamma[t][b] * cfg.vtrace_lambda * min(1.0, rho[t][b])
            vs[s][b] = total
        for s in range(T):
            adv[s][b] = min(cfg.clip_pg_rho, rho[s][b]) * (
                r[s][b] + gamma[s][b] * vs[s + 1][b] - values[s][b])
    return vs[:T], adv, rho


def _reference(agent: Agent, ro: Rollout, cfg: ImpalaConfig) -> dict:
    """The loss, its terms, rho and the unclipped gradients of an independent computation."""
    ref = copy.deepcopy(agent)
    keep = (~ro.first).to(F64)
    reward_in = ro.reward.clamp(-1.0, 1.0) * keep
    onehot = torch.zeros(T + 1, B, A, dtype=F64)
    for t in range(T + 1):
        for b in range(B):
            if not FIRST[t][b]:
                onehot[t, b, int(ro.prev_action[t, b])] = 1.0
    x = torch.cat([ref.stem(ro.obs), reward_in.unsqueeze(-1), onehot], -1)
    h, _ = ref.core(x, ro.core_state, ro.first)  # all T + 1 entries, full backprop
    logits_all, values_all = ref.heads(h)
    logits, values = logits_all[:T], values_all[:T]
    vs, adv, rho = _reference_vtrace(ro, logits.detach(), values_all.detach().tolist(), cfg)
    vs_t, adv_t = torch.tensor(vs, dtype=F64), torch.tensor(adv, dtype=F64)
    logp = F.log_softmax(logits, -1)
    logp_a = logp.gather(-1, ro.action[:T, :, None]).squeeze(-1)
    pg = -(adv_t * logp_a).sum()
    baseline = (0.5 * (vs_t - values) ** 2).sum()
    neg_entropy = (logp.exp() * logp).sum()
    total = pg + cfg.baseline_cost * baseline + cfg.entropy_cost * neg_entropy
    total.backward()
    grads = {k: p.grad.detach().clone() for k, p in ref.named_parameters()}
    return {"total": total.item(), "pg": pg.item(), "baseline": baseline.item(),
            "neg_entropy": neg_entropy.item(), "rho": rho, "grads": grads}


def _update(grad_name: str, cfg: ImpalaConfig, total_updates: int = 10):
    agent = _agent()
    before = {k: p.detach().clone() for k, p in agent.named_parameters()}
    ro = _rollout()
    ref = _reference(agent, ro, cfg)
    learner = ImpalaLearner(agent, make_grad(grad_name, agent.core, B), cfg, total_updates)
    metrics = learner.update(ro)
    return agent, before, ref, metrics


def test_rollout_exercises_every_branch():
    """The fixture's importance weights straddle 1 and both clip thresholds."""
    cfg = _algo()
    rho = [v for row in _reference(_agent(), _rollout(), cfg)["rho"] for v in row]
    assert min(rho) < cfg.clip_pg_rho and max(rho) > cfg.clip_rho


@pytest.mark.parametrize("grad_name", ["bptt", "rtrl"])
def test_update_matches_independent_loss_and_gradients(grad_name: str):
    """Loss terms, rho, the unclipped grad norm and the clipped gradients."""
    cfg = _algo()
    agent, _, ref, m = _update(grad_name, cfg)
    assert m["loss/total"] == pytest.approx(ref["total"], rel=1e-10, abs=1e-12)
    assert m["loss/policy_gradient"] == pytest.approx(ref["pg"], rel=1e-10, abs=1e-12)
    assert m["loss/baseline"] == pytest.approx(ref["baseline"], rel=1e-10, abs=1e-12)
    assert m["loss/entropy"] == pytest.approx(ref["neg_entropy"], rel=1e-10, abs=1e-12)
    rho = [v for row in ref["rho"] for v in row]
    assert m["rho_mean"] == pytest.approx(sum(rho) / len(rho), rel=1e-10)
    norm = math.sqrt(sum(float((g ** 2).sum()) for g in ref["grads"].values()))
    assert m["grad_norm"] == pytest.approx(norm, rel=1e-9)
    assert norm > 5 * cfg.max_grad_norm  # the clip binds
    coef = cfg.max_grad_norm / (norm + 1e-6)
    clipped_norm = 0.0
    for k, p in agent.named_parameters():
        torch.testing.assert_close(p.grad, coef * ref["grads"][k], rtol=1e-8, atol=1e-12,
                                   msg=k)
        clipped_norm += float((p.grad ** 2).sum())
    assert math.sqrt(clipped_norm) == pytest.approx(cfg.max_grad_norm, rel=1e-6)


def test_update_takes_rmsprop_first_step_with_clipped_gradients():
    """p' = p - lr * g / (sqrt((1 - alpha) g^2) + eps) with g the clipped gradient; the
    scheduler then reports the linearly decayed lr."""
    cfg = _algo()
    agent, before, ref, m = _update("bptt", cfg, total_updates=10)
    coef = min(1.0, cfg.max_grad_norm / (m["grad_norm"] + 1e-6))
    for k, p in agent.named_parameters():
        g = coef * ref["grads"][k]
        step = cfg.lr * g / (torch.sqrt((1 - cfg.rms_alpha) * g * g) + cfg.rms_eps)
        torch.testing.assert_close(p.detach(), before[k] - step, rtol=1e-9, atol=1e-12, msg=k)
    assert m["lr"] == pytest.approx(cfg.lr * (1 - 1 / 10))


def test_loose_clip_leaves_gradients_untouched():
    cfg = _algo(max_grad_norm=1e6)
    agent, _, ref, _ = _update("bptt", cfg)
    for k, p in agent.named_parameters():
        torch.testing.assert_close(p.grad, ref["grads"][k], rtol=1e-8, atol=1e-12, msg=k)
