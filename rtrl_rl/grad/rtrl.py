"""Exact RTRL for element-wise recurrent layers in its chunked form (docs/methods/rtrl.md,
"The chunked form").

For a chunk starting from the carried cell ``c_0`` and sensitivities ``S_0``:

1. Injection. The chunk starts from ``c~_0 = c_0 + sum_theta <S_0^theta, theta - sg(theta)>``,
   whose value is ``c_0`` and whose gradient w.r.t. ``theta`` is ``S_0^T lambda_0``, with
   ``lambda_0 = dL/dc_0``. One ordinary backward pass therefore yields backprop inside the
   chunk plus the untruncated credit from before it.
2. End-of-chunk update, from forward quantities alone. With ``g_t = a_t * (1 - first_t)`` and
   ``P_s = prod_{r=s+1..T} g_r``:

       S_T = P_0 * S_0 + sum_s P_s * u_s (x) x_s

   which for the ``[N, I]`` matrices is a batched matmul, computed transposed as
   ``[B, I, T] @ [B, T, M*N]``: the carried sensitivities are stored ``[B, I, M, N]``, a
   layout in which that matmul ran 25% faster on CPU than ``[B, M*N, T] @ [B, T, I]``.
   The small factors ``P_s * u_s``, ``P_0`` and the vector sensitivities come from
   ``rtrl_rl.grad.factors`` (one fused sweep: numba on the CPU, Triton on CUDA); on the
   CPU the update itself is one pass of ``rtrl_rl.grad.sensitivity_pass``'s kernel for
   chunks of up to 32 steps; on CUDA the gradient and the ``P_0`` scaling share one Triton
   pass (``rtrl_rl.grad.sensitivity_triton``) before one ``baddbmm_``.

Both steps read ``S_0`` (17 MB at B=32, I=257, N=256), and the update is memory-bound, so
the update is computed inside the injection's backward, a block of streams at a time, right
after that block of ``S_0`` was read for the gradient. If no backward reaches the injection
(evaluation, or a loss that ignores the core), the update runs when the carried state is
next needed. Either way the result is the same.

Layers are ``RTRLLayer``s and return ``RTRLTerms`` (``rtrl_rl.models.rtrl_contracts``). A
layer with ``block = 1`` real per unit returns terms whose ``a`` is a diagonal (the eLSTM's
``ELSTMTerms``); a layer with ``block = 2`` (``rtrl_rl.models.pair_cells``) returns
``PairTerms``, whose ``a`` holds 2x2 blocks.
Then ``g_t`` and ``P_s`` are per-unit 2x2 matrices, ``P_s * u_s`` a matrix-vector product,
and the sensitivities gain a trailing axis of 2 (``[B, I, M, N, 2]``): the engine below is
the same for both. The fused kernels are reached through ``rtrl_rl.grad.backends``, which
picks the kernel family (PyTorch, numba, Triton) per call. Stacked layers get per-layer RTRL:
each layer's sensitivities take its input as given, so cross-layer credit from before the
chunk is dropped (an approximation; within the chunk, backprop still reaches lower layers).
"""

from __future__ import annotations

import logging

import torch

from rtrl_rl.grad import backends
from rtrl_rl.grad.base import TemporalGrad
from rtrl_rl.models.cells import Core
from rtrl_rl.models.rtrl_contracts import RTRLLayer

log = logging.getLogger(__name__)


class _Update:
    """The end-of-chunk update of the matrix sensitivities, ``S_T = P_0 * S_0 + X^T (P u)``,
    in place on ``S_0``, a block of streams at a time so that each block is read from memory
    once. It runs inside the injection's backward right after that block was read for the
    gradient, or, if no backward reaches the injection, when the carried state is next
    needed. (Autograd's version counter then stops a second backward through the same
    injection, which would otherwise read ``S_T`` for ``S_0``.)

    x ``[T, B, I]``; pu ``[T, B, M, N(, 2)]``; p0 ``[B, N]`` (or ``[B, N, 2, 2]``);
    s_mat ``[B, I, M, N(, 2)]``. A kernel backend runs it through ``block``, ``rank_t`` and
    ``mark_updated`` (``backends.PendingUpdate``).
    """

    def __init__(self, x, pu, p0, s_mat):
        self.x, self.pu, self.p0, self.s_mat = x, pu, p0, s_mat
        self.upto = 0  # streams [0, upto) are updated (so an interrupted pass can resume)

    def block(self, lo: int, hi: int) -> None:
        """Update streams ``[lo, hi)``; blocks must come in order."""
        assert lo == self.upto, (lo, self.upto)
        with torch.no_grad():
            s = self.s_mat[lo:hi]
            p0 = self.p0[lo:hi]
            if p0.dim() == 2:
                s.mul_(p0[:, None, None, :])
            else:  # a 2x2 block per unit, written out (einsum's bmm of 2x2s is 10x slower)
                _apply_blocks(p0[:, None, None], s)
            self._matmul(lo, hi)
        self.upto = hi

    def rank_t(self, lo: int, hi: int) -> None:
        """Only ``S += X^T (P u)`` for streams ``[lo, hi)``, already scaled by ``P_0``."""
        assert lo == self.upto, (lo, self.upto)
        with torch.no_grad():
            self._matmul(lo, hi)
        self.upto = hi

    def mark_updated(self, lo: int, hi: int) -> None:
        """Streams ``[lo, hi)`` were updated whole by a kernel's own pass."""
        assert lo == self.upto, (lo, self.upto)
        self.upto = hi

    def _matmul(self, lo: int, hi: int) -> None:
        """``S += X^T (P u)`` for streams ``[lo, hi)``."""
        t_len = self.pu.shape[0]
        self.s_mat[lo:hi].view(hi - lo, self.s_mat.shape[1], -1).baddbmm_(
            self.x[:, lo:hi].permute(1, 2, 0),
            self.pu[:, lo:hi].reshape(t_len, hi - lo, -1).transpose(0, 1))

    def run(self) -> torch.Tensor:
        step = backends.stream_block(self.s_mat)
        for lo in range(self.upto, self.s_mat.shape[0], step):
            self.block(lo, min(lo + step, self.s_mat.shape[0]))
        return self.s_mat


def _apply_blocks(p: torch.Tensor, s: torch.Tensor) -> None:
    """``s[..., k] <- sum_l p[..., k, l] s[..., l]`` in place; p ``[..., 2, 2]``, s
    ``[..., 2]``. The in-place twin of ``factors._matvec2``: copying that one's result back
    made a whole LRU update slower (measurements: docs/performance.md)."""
    s0, s1 = s[..., 0], s[..., 1]
    new0 = torch.addcmul(s0 * p[..., 0, 0], s1, p[..., 0, 1])
    s1.mul_(p[..., 1, 1]).addcmul_(s0, p[..., 1, 0])
    s0.copy_(new0)


class _Injection(torch.autograd.Function):
    """Returns zeros ``[B, N * K]``; its backward sends ``S^T g`` to the parameters.

    This is ``<S, theta - sg(theta)>`` without computing a product whose value is known to
    be zero. Inputs: s_mat ``[B, I, M, N(, K)]``, s_vec ``[B, V, N(, K)]`` (the trailing
    axis for K = 2 reals per unit), a list that will hold the
    chunk's pending ``_Update`` (empty for chunks whose update runs at once), then the M
    ``[N, I]`` matrices and the V ``[N]`` vectors themselves (passed separately: no
    stacking copies).
    """

    @staticmethod
    def forward(ctx, s_mat, s_vec, update, *params):  # type: ignore[override]
        ctx.save_for_backward(s_mat, s_vec)
        ctx.update = update  # a list, filled with the pending _Update after the unroll
        return s_vec.new_zeros(s_vec.shape[0], s_vec[0, 0].numel())

    @staticmethod
    def backward(ctx, g):  # type: ignore[override]
        s_mat, s_vec = ctx.saved_tensors
        update = ctx.update[0] if ctx.update and ctx.update[0].upto == 0 else None
        # acc [I, M, N(, K)] = sum_b g[b, n] * S[b, i, j, n], with the pending update in
        # the same read of S, by the kernel backend that takes S (KernelBackend.backward).
        g = g.view(s_vec.shape[0], *s_vec.shape[2:])  # [B, N(, K)]
        with torch.no_grad():
            acc = backends.pass_backend(s_mat).backward(s_mat, g, update)
        g_vec = (s_vec * g[:, None]).sum(0)
        if g.dim() == 3:  # sum over the K reals of each unit
            acc, g_vec = acc.sum(-1), g_vec.sum(-1)
        g_mat = [acc[:, j].t() for j in range(acc.shape[1])]  # [N, I] views
        return (None, None, None, *g_mat, *g_vec.unbind(0))


class RTRL(TemporalGrad):
    """Exact (for one layer) untruncated RTRL, at about the cost of truncated BPTT."""

    name = "rtrl"
    requirement = "an element-wise recurrent core"

    @classmethod
    def supports(cls, core: type[Core]) -> bool:
        return core.elementwise

    def __init__(self, core: Core, num_streams: int) -> None:
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
        bad = [type(layer).__name__ for layer in self.layers
               if not isinstance(layer, RTRLLayer) or layer.block not in (1, 2)]
        if bad:
            raise TypeError(f"grad=rtrl needs RTRLLayer layers of block 1 or 2, not {bad}")
        param = next(core.parameters(), None)
        if param is not None:
            backends.warm_up(param.device, param.dtype)  # JIT loads here, not in update 1
        # Per layer, the update of the matrix sensitivities of the last chunk, until it ran.
        self._pending: dict[int, _Update] = {}

    def _sync(self) -> None:
        """Finish pending updates (normally done by the backward already)."""
        for update in self._pending.values():
            update.run()  # in place on self._s_mat[k]
        self._pending.clear()

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
            m, v = len(layer.matrix_names), len(layer.vector_names)
            n, i = layer.hidden_size, layer.input_size
            k = (layer.block,) if layer.block > 1 else ()  # block 1: no trailing axis
            self._s_mat.append(like.new_zeros(self.num_streams, i, m, n, *k))
            self._s_vec.append(like.new_zeros(self.num_streams, v, n, *k))

    def unroll(self, x, state, first, stream_ids=None, advance=True):
        if not self.layers:
            return self.core(x, state, first)
        ids = self._ids(stream_ids, x.shape[1], x.device)
        self._sync()
        self._ensure(x)
        out, finals = x, []
        layers_states = zip(self.layers, self.core.split_state(state), strict=True)
        for k, (layer, c0) in enumerate(layers_states):
            params = layer.recurrent_params()
            mats, vecs = list(layer.matrix_names), list(layer.vector_names)
            s_mat = self._s_mat[k] if ids is None else self._s_mat[k][ids]
            s_vec = self._s_vec[k] if ids is None else self._s_vec[k][ids]
            # The update is built after the unroll but read by the injection's backward:
            # hand the injection a holder that is filled in once the update exists.
            holder: list[_Update] = []
            inject = _Injection.apply(
                s_mat, s_vec, holder, *(params[p] for p in mats), *(params[p] for p in vecs))
            h, c_t, terms = layer.unroll(out, c0.detach() + inject, first, with_terms=advance)
            if not advance:  # gradient only: no update is built, the carried S stays S_0
                out = h
                finals.append(c_t)
                continue
            assert terms is not None and terms.keys() == (mats, vecs)
            pu, p0, new_vec = backends.chunk_factors(terms, first, s_vec)
            if ids is None:
                update = _Update(out.detach(), pu, p0, s_mat)
                holder.append(update)
                self._pending[k] = update
                self._s_vec[k] = new_vec
            else:  # s_mat is a gathered copy, which this chunk's backward still reads
                new_mat = _Update(out.detach(), pu, p0, s_mat.clone()).run()
                self._s_mat[k] = self._s_mat[k].index_copy(0, ids, new_mat)
                self._s_vec[k] = self._s_vec[k].index_copy(0, ids, new_vec)
            out = h
            finals.append(c_t)
        return out, torch.cat(finals, -1)

    def sensitivities(self) -> list[dict[str, torch.Tensor]]:
        """Per layer: name -> a copy of the carried sensitivity (``[S, N, I]`` or ``[S, N]``;
        ``[S, N, I, 2]`` or ``[S, N, 2]`` for pair layers); copies, because the buffers are
        updated in place by later chunks."""
        self._sync()
        result = []
        for k, layer in enumerate(self.layers):
            mats, vecs = layer.matrix_names, layer.vector_names
            d = ({p: self._s_mat[k][:, :, j].transpose(1, 2).contiguous()
                  for j, p in enumerate(mats)} if self._s_mat else {})
            if self._s_vec:
                d.update({p: self._s_vec[k][:, j].clone() for j, p in enumerate(vecs)})
            result.append(d)
        return result

    def state_dict(self) -> dict[str, torch.Tensor]:
        self._sync()
        out = {}
        for k in range(len(self._s_mat)):
            out[f"layer{k}.s_mat"] = self._s_mat[k].clone()  # updated in place later
            out[f"layer{k}.s_vec"] = self._s_vec[k].clone()
        return out

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self._sync()
        n = len(self.layers)
        expected = {f"layer{k}.{s}" for k in range(n) for s in ("s_mat", "s_vec")}
        if state and set(state) != expected:
            raise ValueError(
                f"RTRL state has keys {sorted(state)}, expected {sorted(expected)}"
            )
        self._s_mat = [state[f"layer{k}.s_mat"].clone() for k in range(n)] if state else []
        self._s_vec = [state[f"layer{k}.s_vec"].clone() for k in range(n)] if state else []

    def nonfinite_streams(self) -> torch.Tensor:
        """Streams with a non-finite sensitivity, e.g. after a long episode whose Jacobian
        exceeds one; a non-finite sensitivity makes the next gradient non-finite, so the
        learner finds them when it skips that update."""
        self._sync()
        bad = torch.zeros(self.num_streams, dtype=torch.bool)
        for s in self._s_mat + self._s_vec:
            bad |= ~torch.isfinite(s.flatten(1)).all(1).cpu()
        return bad.nonzero().flatten()

    def reset_streams(self, stream_ids: torch.Tensor) -> None:
        self._sync()
        for s in self._s_mat + self._s_vec:
            s[stream_ids] = 0.0
