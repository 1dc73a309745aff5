"""Exact RTRL for element-wise recurrent layers in its chunked form (DESIGN.md section 3).

For a chunk starting from the carried cell ``c_0`` and sensitivities ``S_0``:

1. Injection. The chunk starts from ``c~_0 = c_0 + sum_theta <S_0^theta, theta - sg(theta)>``,
   whose value is ``c_0`` and whose gradient w.r.t. ``theta`` is ``S_0^T lambda_0``, with
   ``lambda_0 = dL/dc_0``. One ordinary backward pass therefore yields backprop inside the
   chunk plus the untruncated credit from before it.
2. End-of-chunk update, from forward quantities alone. With ``g_t = a_t * (1 - first_t)`` and
   ``P_s = prod_{r=s+1..T} g_r``:

       S_T = P_0 * S_0 + sum_s P_s * u_s (x) x_s

   which for the ``[N, I]`` matrices is one batched matmul ``[B, M*N, T] @ [B, T, I]``.

Layers must expose ``unroll(x, c0, first, with_terms=True)`` returning ``ElementwiseTerms``
(see ``rtrl_rl.models.cells``) and ``recurrent_params()``. Stacked layers get per-layer RTRL:
each layer's sensitivities take its input as given, so cross-layer credit from before the
chunk is dropped (an approximation; within the chunk, backprop still reaches lower layers).
"""

from __future__ import annotations

import logging

import torch

from rtrl_rl.errors import ConfigError
from rtrl_rl.grad.base import TemporalGrad
from rtrl_rl.models.cells import Core, ElementwiseTerms

log = logging.getLogger(__name__)

ELEMENTWISE_CORES = "elstm (any number of layers) and none (feed-forward)"


class _Injection(torch.autograd.Function):
    """Returns zeros ``[B, N]``; its backward sends ``S^T g`` to the parameters.

    This is ``<S, theta - sg(theta)>`` without computing a product whose value is known to
    be zero. Inputs: mats ``[M, N, I]``, vecs ``[V, N]``, s_mat ``[B, M, N, I]``,
    s_vec ``[B, V, N]``.
    """

    @staticmethod
    def forward(ctx, mats, vecs, s_mat, s_vec):  # type: ignore[override]
        ctx.save_for_backward(s_mat, s_vec)
        return s_vec.new_zeros(s_vec.shape[0], s_vec.shape[2])

    @staticmethod
    def backward(ctx, g):  # type: ignore[override]
        s_mat, s_vec = ctx.saved_tensors
        b, m, n, i = s_mat.shape
        # sum_b g[b, n] * S[b, m, n, i]: one bmm over n.
        g_mat = torch.bmm(
            g.t().unsqueeze(1), s_mat.permute(2, 0, 1, 3).reshape(n, b, m * i)
        )  # [N, 1, M*I]
        g_mat = g_mat.view(n, m, i).transpose(0, 1)
        g_vec = torch.einsum("bn,bvn->vn", g, s_vec)
        return g_mat, g_vec, None, None


def reverse_cumprod(g: torch.Tensor) -> torch.Tensor:
    """``out[j] = prod_{r >= j} g[r]`` along dim 0 (no division, so zeros are fine)."""
    return torch.flip(torch.cumprod(torch.flip(g, (0,)), 0), (0,))


def propagate_sensitivities(
    terms: ElementwiseTerms,
    x: torch.Tensor,
    first: torch.Tensor,
    s_mat: torch.Tensor,
    s_vec: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Carry sensitivities from the chunk's start to its end (no autograd).

    terms: from the layer, ``[T, B, N]`` each; x: layer input ``[T, B, I]``; first ``[T, B]``;
    s_mat ``[B, M, N, I]`` and s_vec ``[B, V, N]`` at the chunk's start, in the order of
    ``terms.matrix`` / ``terms.vector``. Returns the same two at the chunk's end.
    """
    with torch.no_grad():
        t_len, b, n = terms.a.shape
        m, i = s_mat.shape[1], s_mat.shape[3]
        g = terms.a * (~first).to(terms.a.dtype).unsqueeze(-1)
        rev = reverse_cumprod(g)
        p0 = rev[0]  # [B, N]
        p = torch.cat([rev[1:], torch.ones_like(rev[:1])], 0)  # [T, B, N]
        u = torch.stack([p * v for v in terms.matrix.values()], 2)  # [T, B, M, N]
        u = u.reshape(t_len, b, m * n).permute(1, 2, 0)  # [B, M*N, T]
        decayed = (s_mat * p0[:, None, :, None]).reshape(b, m * n, i)
        new_mat = torch.baddbmm(decayed, u, x.detach().transpose(0, 1)).view(b, m, n, i)
        vec_terms = torch.stack(list(terms.vector.values()), 2)  # [T, B, V, N]
        new_vec = s_vec * p0[:, None, :] + (p.unsqueeze(2) * vec_terms).sum(0)
    return new_mat, new_vec


class RTRL(TemporalGrad):
    """Exact (for one layer) untruncated RTRL, at about the cost of truncated BPTT."""

    name = "rtrl"

    def __init__(self, core: Core, num_streams: int) -> None:
        if not core.elementwise:
            raise ConfigError(
                f"grad=rtrl needs an element-wise recurrent core, not '{core.name}'; "
                f"cores that support it: {ELEMENTWISE_CORES}"
            )
        super().__init__(core, num_streams)
        self.layers = list(core.layers)
        self.approximate = len(self.layers) > 1
        if self.approximate:
            self.description = (
                f"per-layer RTRL over {len(self.layers)} stacked layers: APPROXIMATE "
                "(cross-layer sensitivities are not carried)"
            )
            log.warning("grad=rtrl: %s", self.description)
        else:
            self.description = "exact untruncated RTRL (chunked form)"
        self._s_mat: list[torch.Tensor] = []
        self._s_vec: list[torch.Tensor] = []

    def _layout(self, layer) -> tuple[list[str], list[str]]:
        params = layer.recurrent_params()
        mats = [k for k, v in params.items() if v.dim() == 2]
        vecs = [k for k, v in params.items() if v.dim() == 1]
        return mats, vecs

    def _ensure(self, like: torch.Tensor) -> None:
        if self._s_mat and self._s_mat[0].device == like.device and (
            self._s_mat[0].dtype == like.dtype
        ):
            return
        if self._s_mat:  # moved device/dtype: keep values
            self._s_mat = [s.to(like) for s in self._s_mat]
            self._s_vec = [s.to(like) for s in self._s_vec]
            return
        for layer in self.layers:
            mats, vecs = self._layout(layer)
            n, i = layer.hidden_size, layer.input_size
            self._s_mat.append(like.new_zeros(self.num_streams, len(mats), n, i))
            self._s_vec.append(like.new_zeros(self.num_streams, len(vecs), n))

    def unroll(self, x, state, first, stream_ids=None):
        if not self.layers:
            return self.core(x, state, first)
        ids = self._ids(stream_ids, x.shape[1])
        self._ensure(x)
        out, finals = x, []
        layers_states = zip(self.layers, self.core.split_state(state), strict=True)
        for k, (layer, c0) in enumerate(layers_states):
            mats, vecs = self._layout(layer)
            params = layer.recurrent_params()
            s_mat = self._s_mat[k] if ids is None else self._s_mat[k][ids]
            s_vec = self._s_vec[k] if ids is None else self._s_vec[k][ids]
            inject = _Injection.apply(
                torch.stack([params[p] for p in mats]),
                torch.stack([params[p] for p in vecs]),
                s_mat,
                s_vec,
            )
            h, c_t, terms = layer.unroll(out, c0.detach() + inject, first, with_terms=True)
            assert terms is not None and list(terms.matrix) == mats and list(terms.vector) == vecs
            new_mat, new_vec = propagate_sensitivities(terms, out, first, s_mat, s_vec)
            if ids is None:
                self._s_mat[k], self._s_vec[k] = new_mat, new_vec
            else:
                self._s_mat[k] = self._s_mat[k].index_copy(0, ids, new_mat)
                self._s_vec[k] = self._s_vec[k].index_copy(0, ids, new_vec)
            out = h
            finals.append(c_t)
        return out, torch.cat(finals, -1)

    def sensitivities(self) -> list[dict[str, torch.Tensor]]:
        """Per layer: name -> carried sensitivity (``[S, N, I]`` or ``[S, N]``)."""
        result = []
        for k, layer in enumerate(self.layers):
            mats, vecs = self._layout(layer)
            d = {p: self._s_mat[k][:, j] for j, p in enumerate(mats)} if self._s_mat else {}
            if self._s_vec:
                d.update({p: self._s_vec[k][:, j] for j, p in enumerate(vecs)})
            result.append(d)
        return result

    def state_dict(self) -> dict[str, torch.Tensor]:
        out = {}
        for k in range(len(self._s_mat)):
            out[f"layer{k}.s_mat"] = self._s_mat[k]
            out[f"layer{k}.s_vec"] = self._s_vec[k]
        return out

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        n = len(self.layers)
        expected = {f"layer{k}.{s}" for k in range(n) for s in ("s_mat", "s_vec")}
        if state and set(state) != expected:
            raise ValueError(
                f"RTRL state has keys {sorted(state)}, expected {sorted(expected)}"
            )
        self._s_mat = [state[f"layer{k}.s_mat"].clone() for k in range(n)] if state else []
        self._s_vec = [state[f"layer{k}.s_vec"].clone() for k in range(n)] if state else []

    def reset_streams(self, stream_ids: torch.Tensor) -> None:
        for s in self._s_mat + self._s_vec:
            s[stream_ids] = 0.0
