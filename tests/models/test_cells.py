"""Cores against plain reference loops."""

from __future__ import annotations

import pytest
import torch

from rtrl_rl.errors import ConfigError
from rtrl_rl.models.cells import ELSTM
from rtrl_rl.models.registry import make_core
from tests.grad.elstm_reference import elstm_loop, random_problem


def test_elstm_forward_matches_equations():
    x, first, _ = random_problem(12, 3, 5, 4, seed=0, p_first=0.2)
    core = ELSTM(5, 4).double()
    c0 = torch.randn(3, 4, dtype=torch.float64)
    h, c_t = core(x, c0, first)
    h_ref, c_ref = elstm_loop(core.layers[0], x, c0, first)
    assert torch.allclose(h, h_ref, atol=1e-14) and torch.allclose(c_t, c_ref, atol=1e-14)


def test_stacked_elstm_state_layout():
    core = ELSTM(5, 4, layers=3)
    x = torch.randn(7, 2, 5)
    h, s = core(x, core.initial_state(2), torch.zeros(7, 2, dtype=torch.bool))
    assert h.shape == (7, 2, 4) and s.shape == (2, 12)


def test_forget_bias_init():
    core = make_core("elstm", 5, 4, forget_bias=2.5)
    assert torch.all(core.layers[0].b_f == 2.5) and torch.all(core.layers[0].b_z == 0)


def test_episode_start_zeroes_state():
    """With first[0] set, the carried state has no effect at all."""
    for kind in ("elstm", "lstm"):
        core = make_core(kind, 5, 4, layers=2).double()
        x = torch.randn(6, 2, 5, dtype=torch.float64)
        first = torch.zeros(6, 2, dtype=torch.bool)
        first[0] = True
        a, _ = core(x, torch.randn(2, core.state_size, dtype=torch.float64), first)
        b, _ = core(x, core.initial_state(2, dtype=torch.float64), first)
        assert torch.allclose(a, b), kind


def test_lstm_reset_inside_chunk_equals_separate_runs():
    core = make_core("lstm", 5, 4, layers=2).double()
    x = torch.randn(10, 2, 5, dtype=torch.float64)
    s0 = torch.randn(2, core.state_size, dtype=torch.float64)
    first = torch.zeros(10, 2, dtype=torch.bool)
    first[4] = True
    h, s = core(x, s0, first)
    h1, _ = core(x[:4], s0, first[:4])
    h2, s2 = core(x[4:], core.initial_state(2, dtype=torch.float64), first[4:])
    assert torch.allclose(h, torch.cat([h1, h2]), atol=1e-12)
    assert torch.allclose(s, s2, atol=1e-12)


def test_lstm_state_pack_roundtrip_matches_torch_lstm():
    core = make_core("lstm", 5, 4, layers=2).double()
    x = torch.randn(3, 2, 5, dtype=torch.float64)
    h0, c0 = torch.randn(2, 2, 4, dtype=torch.float64), torch.randn(2, 2, 4, dtype=torch.float64)
    state = core._pack(h0, c0)
    out, s = core(x, state, torch.zeros(3, 2, dtype=torch.bool))
    ref, (hn, cn) = core.lstm(x, (h0, c0))
    assert torch.allclose(out, ref) and torch.allclose(s, core._pack(hn, cn))


def test_unknown_core_and_bad_sizes():
    with pytest.raises(ConfigError, match="elstm"):
        make_core("elstn", 5, 4)
    with pytest.raises(ConfigError, match="hidden_size"):
        make_core("elstm", 5, 0)
