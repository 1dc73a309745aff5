"""An eLSTM written directly from docs/methods/rtrl.md ("The eLSTM"), sharing no code with the
package.

Used as the independent computation that the gradient modules are checked against.
"""

from __future__ import annotations

import torch


def elstm_loop(layer, x, c0, first, detach_every_step=False):
    """Plain per-step eLSTM. x ``[T, B, I]``, c0 ``[B, N]``, first ``[T, B]`` -> h ``[T, B, N]``,
    c_T. Full backprop through time unless ``detach_every_step``."""
    n_in = layer.input_size
    c = c0
    hs = []
    for t in range(x.shape[0]):
        c_prev = torch.where(first[t].unsqueeze(-1), torch.zeros_like(c), c)
        if detach_every_step:
            c_prev = c_prev.detach()
        xt = x[t]
        z = torch.tanh(xt @ layer.W_z.T + layer.w_z * c_prev + layer.b_z)
        f = torch.sigmoid(xt @ layer.W_f.T + layer.w_f * c_prev + layer.b_f)
        c = f * c_prev + (1 - f) * z
        o = torch.sigmoid(xt @ layer.W_o[:, :n_in].T + c @ layer.W_o[:, n_in:].T + layer.b_o)
        hs.append(o * c)
    return torch.stack(hs), c


def chunk_loss(h, readout, mask=None):
    """A nonlinear per-step loss so that e_t = dL/dc_t is non-trivial; h, readout ``[T, B, N]``."""
    per = (torch.sin(h) * readout).sum(-1) + 0.5 * (h**2).sum(-1)
    if mask is not None:
        per = per * mask
    return per.sum()


def random_problem(t_total, b, n_in, n, seed=0, p_first=0.1, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(t_total, b, n_in, generator=g, dtype=dtype)
    first = torch.rand(t_total, b, generator=g) < p_first
    first[0] = True
    readout = torch.randn(t_total, b, n, generator=g, dtype=dtype)
    return x, first, readout


def param_grads(module):
    return {k: p.grad.detach().clone() for k, p in module.named_parameters()}


def zero_grads(module):
    for p in module.parameters():
        p.grad = None
