"""V-trace against hand arithmetic, an independent sum-form reference, and its limits."""

from __future__ import annotations

import math

import pytest
import torch

from rtrl_rl.algos.vtrace import VTraceReturns, from_logits, log_rhos_from_logits, vtrace

F64 = torch.float64


def _col(*xs: float) -> torch.Tensor:
    """[T] python floats -> [T, 1] float64 (B = 1)."""
    return torch.tensor(xs, dtype=F64).unsqueeze(1)


def reference_vtrace(
    log_rhos, discounts, rewards, values, bootstrap_value, rho_bar, pg_rho_bar, lambda_
):
    """The definition in its sum form, on python floats, one stream at a time.

    v_s = V_s + sum_{t=s}^{T-1} (prod_{i=s}^{t-1} g_i c_i) rho_bar_t (r_t + g_t V_{t+1} - V_t)
    A_s = min(pg_rho_bar, rho_s) (r_s + g_s v_{s+1} - V_s), with V_T = v_T = bootstrap.
    """

    def clip(x, m):
        return x if m is None else min(m, x)

    T, B = len(values), len(values[0])
    vs = [[0.0] * B for _ in range(T)]
    adv = [[0.0] * B for _ in range(T)]
    for b in range(B):
        rho = [math.exp(log_rhos[t][b]) for t in range(T)]
        v = [values[t][b] for t in range(T)] + [bootstrap_value[b]]
        g = [discounts[t][b] for t in range(T)]
        r = [rewards[t][b] for t in range(T)]
        for s in range(T):
            total = v[s]
            for t in range(s, T):
                weight = 1.0
                for i in range(s, t):
                    weight *= g[i] * lambda_ * min(1.0, rho[i])
                total += weight * clip(rho[t], rho_bar) * (r[t] + g[t] * v[t + 1] - v[t])
            vs[s][b] = total
        for s in range(T):
            v_next = vs[s + 1][b] if s + 1 < T else bootstrap_value[b]
            adv[s][b] = clip(rho[s], pg_rho_bar) * (r[s] + g[s] * v_next - v[s])
    return vs, adv


def _random_inputs(T: int, B: int, seed: int):
    gen = torch.Generator().manual_seed(seed)
    log_rhos = torch.randn(T, B, generator=gen, dtype=F64)  # rhos spread around 1
    # Mostly 0.99, with some episode boundaries (discount 0).
    discounts = 0.99 * (torch.rand(T, B, generator=gen, dtype=F64) > 0.2).to(F64)
    rewards = torch.randn(T, B, generator=gen, dtype=F64)
    values = torch.randn(T, B, generator=gen, dtype=F64)
    bootstrap = torch.randn(B, generator=gen, dtype=F64)
    return log_rhos, discounts, rewards, values, bootstrap


def test_hand_computed_three_steps():
    # T = 3, B = 1, gamma_t = 0.9 everywhere, rho = (2, 0.5, 1), lambda = 1, clips 1:
    #   rho_bar = (1, 0.5, 1), c = (1, 0.5, 1)
    #   values V = (0.5, 1.0, 2.0), bootstrap V_3 = 1.0, rewards r = (1, 2, 0)
    # deltas, delta_t = rho_bar_t (r_t + 0.9 V_{t+1} - V_t):
    #   delta_2 = 1.0 * (0 + 0.9*1.0 - 2.0) = -1.1
    #   delta_1 = 0.5 * (2 + 0.9*2.0 - 1.0) = 0.5 * 2.8 = 1.4
    #   delta_0 = 1.0 * (1 + 0.9*1.0 - 0.5) = 1.4
    # targets, v_s - V_s = delta_s + 0.9 c_s (v_{s+1} - V_{s+1}):
    #   v_2 = 2.0 - 1.1 = 0.9
    #   v_1 = 1.0 + 1.4 + 0.9*0.5*(-1.1) = 2.4 - 0.495 = 1.905
    #   v_0 = 0.5 + 1.4 + 0.9*1.0*(1.905 - 1.0) = 1.9 + 0.8145 = 2.7145
    # advantages, A_s = min(1, rho_s) (r_s + 0.9 v_{s+1} - V_s), v_3 = V_3:
    #   A_2 = 1.0 * (0 + 0.9*1.0 - 2.0) = -1.1
    #   A_1 = 0.5 * (2 + 0.9*0.9 - 1.0) = 0.5 * 1.81 = 0.905
    #   A_0 = 1.0 * (1 + 0.9*1.905 - 0.5) = 0.5 + 1.7145 = 2.2145
    out = vtrace(
        log_rhos=_col(math.log(2.0), math.log(0.5), 0.0),
        discounts=_col(0.9, 0.9, 0.9),
        rewards=_col(1.0, 2.0, 0.0),
        values=_col(0.5, 1.0, 2.0),
        bootstrap_value=torch.tensor([1.0], dtype=F64),
    )
    assert isinstance(out, VTraceReturns)
    torch.testing.assert_close(out.vs, _col(2.7145, 1.905, 0.9), rtol=0, atol=1e-12)
    torch.testing.assert_close(out.pg_advantages, _col(2.2145, 0.905, -1.1), rtol=0, atol=1e-12)


def test_hand_computed_lambda_half():
    # T = 2, B = 1, gamma = 0.5, rho = (1, 1), lambda = 0.5 -> c = (0.5, 0.5)
    #   V = (0, 0), bootstrap 4, r = (1, 1)
    #   delta_1 = 1 + 0.5*4 - 0 = 3,  delta_0 = 1 + 0.5*0 - 0 = 1
    #   v_1 = 0 + 3 = 3
    #   v_0 = 0 + 1 + 0.5*0.5*3 = 1.75      (lambda = 1 would give 1 + 0.5*3 = 2.5)
    #   A_1 = 1 + 0.5*4 - 0 = 3,  A_0 = 1 + 0.5*3 - 0 = 2.5
    out = vtrace(
        log_rhos=_col(0.0, 0.0),
        discounts=_col(0.5, 0.5),
        rewards=_col(1.0, 1.0),
        values=_col(0.0, 0.0),
        bootstrap_value=torch.tensor([4.0], dtype=F64),
        lambda_=0.5,
    )
    torch.testing.assert_close(out.vs, _col(1.75, 3.0), rtol=0, atol=1e-12)
    torch.testing.assert_close(out.pg_advantages, _col(2.5, 3.0), rtol=0, atol=1e-12)


@pytest.mark.parametrize(
    "rho_bar, pg_rho_bar, lambda_",
    [(1.0, 1.0, 1.0), (2.0, 0.5, 1.0), (None, None, 1.0), (1.0, 1.0, 0.7), (0.8, None, 0.0)],
)
@pytest.mark.parametrize("seed", [0, 1])
def test_matches_sum_form_reference(rho_bar, pg_rho_bar, lambda_, seed):
    T, B = 7, 5
    inputs = _random_inputs(T, B, seed)
    out = vtrace(
        *inputs, clip_rho_threshold=rho_bar, clip_pg_rho_threshold=pg_rho_bar, lambda_=lambda_
    )
    ref_vs, ref_adv = reference_vtrace(
        *(x.tolist() for x in inputs), rho_bar=rho_bar, pg_rho_bar=pg_rho_bar, lambda_=lambda_
    )
    torch.testing.assert_close(out.vs, torch.tensor(ref_vs, dtype=F64), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(
        out.pg_advantages, torch.tensor(ref_adv, dtype=F64), rtol=1e-12, atol=1e-12
    )


def test_on_policy_equals_n_step_returns():
    T, B = 6, 4
    _, discounts, rewards, values, bootstrap = _random_inputs(T, B, seed=3)
    out = vtrace(torch.zeros(T, B, dtype=F64), discounts, rewards, values, bootstrap)
    # n-step bootstrapped return G_s = r_s + g_s G_{s+1}, G_T = V_T, written as a forward sum.
    expected = torch.zeros(T, B, dtype=F64)
    for s in range(T):
        ret, weight = torch.zeros(B, dtype=F64), torch.ones(B, dtype=F64)
        for t in range(s, T):
            ret = ret + weight * rewards[t]
            weight = weight * discounts[t]
        expected[s] = ret + weight * bootstrap
    torch.testing.assert_close(out.vs, expected, rtol=1e-12, atol=1e-12)
    # On-policy advantages are the one-step TD errors to the next return.
    g_tp1 = torch.cat([expected[1:], bootstrap[None]])
    torch.testing.assert_close(
        out.pg_advantages, rewards + discounts * g_tp1 - values, rtol=1e-12, atol=1e-12
    )


def test_zero_discount_cuts_bootstrapping():
    T, B = 5, 3
    log_rhos, _, rewards, values, bootstrap = _random_inputs(T, B, seed=4)
    discounts = torch.full((T, B), 0.99, dtype=F64)
    discounts[2] = 0.0  # x_3 starts a new episode: nothing at t >= 3 reaches t <= 2
    out_a = vtrace(log_rhos, discounts, rewards, values, bootstrap)
    values_b, rewards_b = values.clone(), rewards.clone()
    values_b[3:] += 100.0
    rewards_b[3:] -= 50.0
    out_b = vtrace(log_rhos, discounts, rewards_b, values_b, bootstrap + 1000.0)
    torch.testing.assert_close(out_a.vs[:3], out_b.vs[:3], rtol=0, atol=0)
    torch.testing.assert_close(out_a.pg_advantages[:3], out_b.pg_advantages[:3], rtol=0, atol=0)
    # At the boundary step the target is just the clipped one-step reward correction.
    rho_bar = log_rhos[2].exp().clamp(max=1.0)
    torch.testing.assert_close(out_a.vs[2], values[2] + rho_bar * (rewards[2] - values[2]))


def test_all_zero_discounts_give_one_step_targets():
    T, B = 4, 2
    log_rhos, _, rewards, values, bootstrap = _random_inputs(T, B, seed=5)
    out = vtrace(log_rhos, torch.zeros(T, B, dtype=F64), rewards, values, bootstrap)
    rho_bar = log_rhos.exp().clamp(max=1.0)
    torch.testing.assert_close(out.vs, values + rho_bar * (rewards - values))
    torch.testing.assert_close(out.pg_advantages, rho_bar * (rewards - values))


def test_clipping_thresholds_matter():
    T, B = 4, 2
    _, discounts, rewards, values, bootstrap = _random_inputs(T, B, seed=6)
    log_rhos = torch.full((T, B), math.log(3.0), dtype=F64)  # every rho = 3 > 1
    clipped = vtrace(log_rhos, discounts, rewards, values, bootstrap)
    unclipped = vtrace(
        log_rhos,
        discounts,
        rewards,
        values,
        bootstrap,
        clip_rho_threshold=None,
        clip_pg_rho_threshold=None,
    )
    assert not torch.allclose(clipped.vs, unclipped.vs)
    assert not torch.allclose(clipped.pg_advantages, unclipped.pg_advantages)
    # Clipped at 1 with every rho >= 1 is exactly the on-policy target.
    on_policy = vtrace(torch.zeros(T, B, dtype=F64), discounts, rewards, values, bootstrap)
    torch.testing.assert_close(clipped.vs, on_policy.vs)
    torch.testing.assert_close(clipped.pg_advantages, on_policy.pg_advantages)
    # The pg threshold touches only the advantages, and scales them linearly here.
    pg_only = vtrace(log_rhos, discounts, rewards, values, bootstrap, clip_pg_rho_threshold=2.0)
    torch.testing.assert_close(pg_only.vs, clipped.vs, rtol=0, atol=0)
    torch.testing.assert_close(pg_only.pg_advantages, 2.0 * clipped.pg_advantages)


def test_small_rhos_unaffected_by_thresholds():
    T, B = 5, 3
    log_rhos, discounts, rewards, values, bootstrap = _random_inputs(T, B, seed=7)
    log_rhos = -log_rhos.abs()  # every rho <= 1
    a = vtrace(log_rhos, discounts, rewards, values, bootstrap)
    b = vtrace(
        log_rhos,
        discounts,
        rewards,
        values,
        bootstrap,
        clip_rho_threshold=None,
        clip_pg_rho_threshold=None,
    )
    torch.testing.assert_close(a.vs, b.vs, rtol=0, atol=0)
    torch.testing.assert_close(a.pg_advantages, b.pg_advantages, rtol=0, atol=0)


def test_outputs_are_constants_and_keep_dtype():
    T, B = 3, 2
    inputs = [x.float().requires_grad_() for x in _random_inputs(T, B, seed=8)]
    out = vtrace(*inputs)
    for x in out:
        assert x.shape == (T, B)
        assert x.dtype == torch.float32
        assert not x.requires_grad and x.grad_fn is None


def test_streams_are_independent_and_extra_batch_dims_work():
    T, B = 5, 6
    inputs = _random_inputs(T, B, seed=9)
    full = vtrace(*inputs)
    single = vtrace(*(x[..., 2:3] for x in inputs))
    torch.testing.assert_close(full.vs[:, 2:3], single.vs, rtol=0, atol=0)
    reshaped = vtrace(*(x.reshape(*x.shape[:-1], 2, 3) for x in inputs))
    torch.testing.assert_close(reshaped.vs.reshape(T, B), full.vs, rtol=0, atol=0)


def test_shape_errors():
    log_rhos, discounts, rewards, values, bootstrap = _random_inputs(3, 2, seed=10)
    with pytest.raises(ValueError, match="rewards"):
        vtrace(log_rhos, discounts, rewards[:2], values, bootstrap)
    with pytest.raises(ValueError, match="bootstrap_value"):
        vtrace(log_rhos, discounts, rewards, values, bootstrap[None])


def test_from_logits_matches_vtrace():
    T, B, A = 4, 3, 5
    gen = torch.Generator().manual_seed(11)
    behaviour = torch.randn(T, B, A, generator=gen, dtype=F64)
    target = torch.randn(T, B, A, generator=gen, dtype=F64, requires_grad=True)
    actions = torch.randint(A, (T, B), generator=gen)
    _, discounts, rewards, values, bootstrap = _random_inputs(T, B, seed=11)

    log_rhos = log_rhos_from_logits(behaviour, target, actions)
    expected_log_rhos = (
        torch.log_softmax(target, -1).gather(-1, actions[..., None])
        - torch.log_softmax(behaviour, -1).gather(-1, actions[..., None])
    ).squeeze(-1)
    torch.testing.assert_close(log_rhos, expected_log_rhos.detach())
    assert not log_rhos.requires_grad

    out = from_logits(behaviour, target, actions, discounts, rewards, values, bootstrap)
    direct = vtrace(log_rhos, discounts, rewards, values, bootstrap)
    torch.testing.assert_close(out.vs, direct.vs, rtol=0, atol=0)
    torch.testing.assert_close(out.pg_advantages, direct.pg_advantages, rtol=0, atol=0)


def test_from_logits_same_policy_is_on_policy():
    T, B, A = 3, 2, 4
    logits = torch.randn(T, B, A, dtype=F64)
    actions = torch.randint(A, (T, B))
    # Shifting logits by a per-step constant leaves the policy unchanged.
    shifted = logits + torch.randn(T, B, 1, dtype=F64)
    torch.testing.assert_close(
        log_rhos_from_logits(logits, shifted, actions), torch.zeros(T, B, dtype=F64)
    )
    with pytest.raises(ValueError, match="differ"):
        log_rhos_from_logits(logits, logits[..., :2], actions)
