"""Step-by-step (textbook) RTRL for eLSTM layers: the reference for tests and benchmarks.

Written from the equations of docs/methods/rtrl.md (the eLSTM, exact RTRL) alone,
sharing no code with the chunked form: at every step the sensitivities follow the recursion

    S_t = a_t * S_{t-1} + (immediate derivative of c_t)

and each step's cell starts from ``sg(c_{t-1}) + <S_{t-1}, theta - sg(theta)>``, so autograd
delivers ``sum_t e_t S_t`` to the recurrent parameters. It costs ``O(B N I)`` extra work and
memory *per step*, which is what the chunked form avoids.

Inputs to the layer get immediate gradients only (no backprop through time at all), unlike
the chunked form, whose stem gradients include backprop within the chunk.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from rtrl_rl.grad.base import TemporalGrad
from rtrl_rl.models.cells import ELSTM, Core

_MATS = ("W_z", "W_f")
_VECS = ("w_z", "w_f", "b_z", "b_f")


def _step(layer, x_t, c_prev_value, first_t, s):
    """One eLSTM step from the explicit equations; updates the sensitivity dict ``s``.

    x_t ``[B, I]``, c_prev_value ``[B, N]`` (detached); returns ``h_t, c_t, new s``.
    """
    keep = (~first_t).to(x_t.dtype).unsqueeze(-1)
    s = {k: v * (keep.unsqueeze(-1) if v.dim() == 3 else keep) for k, v in s.items()}
    c_prev = c_prev_value * keep
    inj = sum(
        torch.einsum("bni,ni->bn", s[k], getattr(layer, k) - getattr(layer, k).detach())
        for k in _MATS
    ) + sum(s[k] * (getattr(layer, k) - getattr(layer, k).detach()) for k in _VECS)
    c_in = c_prev + inj
    n_in = layer.input_size
    z = torch.tanh(F.linear(x_t, layer.W_z, layer.b_z) + layer.w_z * c_in)
    f = torch.sigmoid(F.linear(x_t, layer.W_f, layer.b_f) + layer.w_f * c_in)
    c = f * c_in + (1 - f) * z
    o = torch.sigmoid(
        F.linear(x_t, layer.W_o[:, :n_in], layer.b_o) + F.linear(c, layer.W_o[:, n_in:])
    )
    with torch.no_grad():
        zd, fd, xd = z.detach(), f.detach(), x_t.detach()
        zeta = (1 - fd) * (1 - zd**2)
        phi = (c_prev - zd) * fd * (1 - fd)
        a = fd + layer.w_z.detach() * zeta + layer.w_f.detach() * phi
        new = {
            "W_z": a.unsqueeze(-1) * s["W_z"] + zeta.unsqueeze(-1) * xd.unsqueeze(1),
            "W_f": a.unsqueeze(-1) * s["W_f"] + phi.unsqueeze(-1) * xd.unsqueeze(1),
            "w_z": a * s["w_z"] + zeta * c_prev,
            "w_f": a * s["w_f"] + phi * c_prev,
            "b_z": a * s["b_z"] + zeta,
            "b_f": a * s["b_f"] + phi,
        }
    return o * c, c, new


class RTRLReference(TemporalGrad):
    """Step-by-step RTRL (per-layer for stacks), eLSTM only."""

    name = "rtrl_reference"
    description = "step-by-step RTRL reference (slow; for tests and benchmarks)"
    requirement = "the eLSTM core (the step-by-step reference has no other)"

    @classmethod
    def supports(cls, core: type[Core]) -> bool:
        return issubclass(core, ELSTM)

    def __init__(self, core: Core, num_streams: int) -> None:
        super().__init__(core, num_streams)
        self._s: list[dict[str, torch.Tensor]] = []

    def _ensure(self, like: torch.Tensor) -> None:
        if self._s:
            return
        for layer in self.core.layers:
            n, i = layer.hidden_size, layer.input_size
            d = {k: like.new_zeros(self.num_streams, n, i) for k in _MATS}
            d.update({k: like.new_zeros(self.num_streams, n) for k in _VECS})
            self._s.append(d)

    def unroll(self, x, state, first, stream_ids=None, advance=True):
        ids = self._ids(stream_ids, x.shape[1], x.device)
        self._ensure(x)
        s = [{k: (v if ids is None else v[ids]) for k, v in d.items()} for d in self._s]
        cells = [c.detach() for c in self.core.split_state(state)]
        outs = []
        for t in range(x.shape[0]):
            inp = x[t]
            for k, layer in enumerate(self.core.layers):
                inp, c, s[k] = _step(layer, inp, cells[k], first[t], s[k])
                cells[k] = c.detach()
            outs.append(inp)
        for k, d in enumerate(s if advance else []):
            for name, v in d.items():
                self._s[k][name] = v if ids is None else self._s[k][name].index_copy(0, ids, v)
        return torch.stack(outs), torch.cat(cells, -1)

    def sensitivities(self) -> list[dict[str, torch.Tensor]]:
        return [dict(d) for d in self._s]

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {f"layer{k}.{n}": v for k, d in enumerate(self._s) for n, v in d.items()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self._s = []
        for k in range(len(self.core.layers)):
            self._s.append({n: state[f"layer{k}.{n}"].clone() for n in _MATS + _VECS})
