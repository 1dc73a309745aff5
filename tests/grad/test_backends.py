"""The RTRL contracts the cells declare, and the one place that picks a kernel backend."""

from __future__ import annotations

import pytest
import torch

from rtrl_rl.grad import backends, factors, make_grad, sensitivity_pass
from rtrl_rl.models.cells import ElementwiseTerms
from rtrl_rl.models.registry import make_core, rtrl_cores
from rtrl_rl.models.rtrl_contracts import ELSTMSweepTerms, RTRLLayer, RTRLTerms
from tests.grad.test_factors import random_elstm_terms, random_pair_terms

BLOCKS = {"elstm": 1, "rtu": 2, "lru": 2}


@pytest.mark.parametrize("kind", list(BLOCKS))
def test_layers_declare_the_contract_their_terms_keep(kind):
    core = make_core(kind, 3, 4)
    layer = core.layers[0]
    assert isinstance(layer, RTRLLayer) and layer.block == BLOCKS[kind]
    assert list(layer.recurrent_params()) == [*layer.matrix_names, *layer.vector_names]
    assert layer.state_size == layer.block * layer.hidden_size
    x, first = torch.randn(2, 5, 3), torch.zeros(2, 5, dtype=torch.bool)
    _, _, terms = layer.unroll(x, torch.zeros(5, layer.state_size), first, with_terms=True)
    assert isinstance(terms, RTRLTerms) and terms.block == layer.block
    assert terms.keys() == (list(layer.matrix_names), list(layer.vector_names))
    assert isinstance(terms, ELSTMSweepTerms) == (terms.sweep == "elstm")
    assert terms.like.shape[:2] == (2, 5)


def test_every_rtrl_core_has_contract_layers():
    for kind in rtrl_cores():
        assert all(isinstance(layer, RTRLLayer) for layer in make_core(kind, 3, 4).layers)


def test_rtrl_refuses_a_layer_without_the_contract():
    core = make_core("elstm", 3, 4)

    class Plain(torch.nn.Module):  # an element-wise layer that declares nothing
        input_size, hidden_size, state_size = 3, 4, 4

    core.layers[0] = Plain()
    with pytest.raises(TypeError, match="RTRLLayer"):
        make_grad("rtrl", core, 2)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_auto_choice_on_the_cpu(dtype):
    terms, _, s_vec = random_elstm_terms(dtype)
    plain = ElementwiseTerms(a=terms.a, matrix=terms.matrix, vector=terms.vector)
    pairs, _, pair_vec = random_pair_terms()
    fused = backends.NUMBA if factors.numba_sweeps() else backends.TORCH
    assert backends.factor_backend(terms, s_vec) is fused
    assert backends.factor_backend(pairs, pair_vec) is fused
    assert backends.factor_backend(plain, s_vec) is backends.TORCH  # no fused sweep
    assert backends.factor_backend(terms, s_vec.float() if dtype == torch.float64
                                   else s_vec.double()) is backends.TORCH  # mixed dtypes
    assert backends.factor_backend(terms, s_vec, "torch") is backends.TORCH
    s_mat = torch.zeros(2, 3, 2, 4, dtype=dtype)
    fused = backends.NUMBA if sensitivity_pass.usable(s_mat) else backends.TORCH
    assert backends.pass_backend(s_mat) is fused
    assert backends.pass_backend(s_mat.transpose(1, 2)) is backends.TORCH
    assert backends.pass_backend(s_mat.to(torch.bfloat16)) is backends.TORCH


def test_every_backend_keeps_the_common_interface():
    members = ("name", "device", "refusal", "chunk_factors", "takes_sensitivities",
               "backward", "warm_up")
    for name, backend in backends.BACKENDS.items():
        assert backend.name == name and all(hasattr(backend, m) for m in members)
