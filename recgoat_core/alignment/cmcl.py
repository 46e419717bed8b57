r"""Cross-modal contrastive learning (CMCL): the instance-level alignment of RecGOAT.

For a batch of B items, a modality view :math:`z^m_i` and the unified view :math:`z_i` (both L2-normalised),

.. math::
    \mathcal L_{\mathrm{CMCL}} = \frac1B\sum_{i=1}^B -\log
        \frac{\exp(z^m_i\cdot z_i/\tau)}{\sum_{j=1}^B \exp(z^m_i\cdot z_j/\tau)} \;\ge 0,

which is *minimised* (the authors' code minimises ``1 - InfoNCE``, i.e. maximises it: a sign error we do not
copy). Identical views of B distinct unit vectors that are mutually orthogonal give
:math:`\log(1 + (B-1)e^{-1/\tau})`; all-identical vectors give :math:`\log B`.

Lemma 3.3 of the paper claims :math:`\mathbb E_i\|z^m_i - z_i\| \le \sqrt{2\tau\mathcal L + 2\tau\log B}`. Its proof
turns an *upper* bound on :math:`\mathcal L_i` into an upper bound on the distance, which does not follow, and
the claim is false (``tests/test_alignment_properties.py`` keeps a counterexample). What does hold, by Jensen on
the log-sum-exp, is :func:`alignment_bound`:

.. math::
    \mathbb E_i\|z^m_i - z_i\|^2 \le 2\tau(\mathcal L - \log B) + 2\,(1 - \bar z^{m}\cdot \bar z),

with :math:`\bar z^m, \bar z` the batch means: a small loss forces alignment only together with spread-out
(uniform) embeddings.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["info_nce", "CMCLoss", "alignment_bound"]


def info_nce(view: torch.Tensor, target: torch.Tensor, temperature: float = 0.2) -> torch.Tensor:
    """Mean InfoNCE of ``view[i]`` against ``target[i]`` with the other rows of ``target`` as negatives.

    Both [B, d]; rows are L2-normalised here. Computed in float32 at least (stable for half inputs).
    An empty batch (B = 0) gives a zero loss still connected to the inputs, so ``backward()`` works.
    """
    if view.shape != target.shape or view.ndim != 2:
        raise ValueError(f"view and target must both be [B, d], got {tuple(view.shape)} and {tuple(target.shape)}")
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    dtype = torch.promote_types(view.dtype, torch.float32)
    v = F.normalize(view.to(dtype), dim=-1)
    t = F.normalize(target.to(dtype), dim=-1)
    if len(v) and 2.0 / temperature <= FUSED_LIMIT.get(dtype, 0.0):
        return _BoundedInfoNCE.apply(v, t, 1.0 / temperature)
    logits = v @ t.T / temperature
    if len(v) == 0:  # cross_entropy's mean over no rows is 0/0 = NaN
        return logits.sum()
    return F.cross_entropy(logits, torch.arange(len(v), device=v.device))


#: largest logit range 2/τ for :class:`_BoundedInfoNCE` per dtype: ``exp(-2/τ)`` stays a normal number, so no
#: row of the kernel sums to zero (float32's smallest normal is e^-87.3)
FUSED_LIMIT = {torch.float32: 80.0, torch.float64: 700.0}


class _BoundedInfoNCE(torch.autograd.Function):
    r"""InfoNCE of unit rows ``v``, ``t`` [B, d] with the log-sum-exp shifted by its bound instead of the row max.

    With :math:`s = 1/\tau` every logit :math:`s\,v_i\cdot t_j` lies in :math:`[-s, s]`, so
    :math:`\mathrm{LSE}_i = s + \log\sum_j e^{s(v_i\cdot t_j - 1)}` needs no max pass, and the kernel
    :math:`E = e^{s(VT^\top - 1)}` is the softmax up to its row sums :math:`r`. The gradient of
    :math:`\mathcal L = \frac1B\sum_i (\mathrm{LSE}_i - s\,v_i\cdot t_i)` is
    :math:`G = \frac{s}{B}(\mathrm{diag}(r)^{-1}E - I)`, :math:`\partial_V = G\,T`, :math:`\partial_T = G^\top V`,
    computed as :math:`\frac sB(\mathrm{diag}(r)^{-1}(ET) - T)` and :math:`\frac sB(E^\top(\mathrm{diag}(r)^{-1}V) - V)`:
    one B × B exponential and three matrix products in all, and no other B × B pass, where ``cross_entropy`` over
    the logits makes a max, a log-softmax and its backward (half a CMCL step's time on CPU). Equal to it to rounding
    (``tests/test_alignment_properties.py``); used while :math:`2s` is within :data:`FUSED_LIMIT`.
    """

    @staticmethod
    def forward(ctx, v: torch.Tensor, t: torch.Tensor, s: float) -> torch.Tensor:
        kernel = torch.mm(v, t.T)
        diagonal = kernel.diagonal().sum()
        kernel.sub_(1.0).mul_(s).exp_()
        rows = kernel.sum(1)
        ctx.save_for_backward(v, t, kernel, rows)
        ctx.s = s
        return (rows.log().sum() + s * (len(v) - diagonal)) / len(v)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        v, t, kernel, rows = ctx.saved_tensors
        c = grad * ctx.s / len(v)
        inv = rows.reciprocal()[:, None]
        # G T = c (diag(1/r) E T - T) and Gᵀ V = c (Eᵀ diag(1/r) V - V): no B x B temporary, E left as saved
        grad_v = (torch.mm(kernel, t) * inv - t) * c if ctx.needs_input_grad[0] else None
        grad_t = (torch.mm((v * inv).T, kernel).T - v) * c if ctx.needs_input_grad[1] else None
        return grad_v, grad_t, None


class CMCLoss(nn.Module):
    r""":func:`info_nce` as a module: temperature τ and an optional bound ``max_items`` on the batch.

    With ``max_items = M`` and a batch of B > M items, the loss is InfoNCE over a uniformly random subset
    :math:`S` of M rows (the same rows of ``view`` and ``target``, so pairs stay together):

    .. math::
        \mathcal L_S = \frac1M\sum_{i\in S} -\log
            \frac{\exp(z^m_i\cdot z_i/\tau)}{\sum_{j\in S}\exp(z^m_i\cdot z_j/\tau)},

    O(M²) instead of O(B²) per modality. It is not an unbiased estimate of the full-batch loss: with fewer
    negatives it is typically lower (by :math:`\log(B/M)` when all logits are equal); only the rows in S get
    gradients. The subset is drawn with ``torch.randperm`` on the inputs' device (reproducible under
    ``torch.manual_seed``). ``None`` (default), or B ≤ M, is exactly :func:`info_nce`.
    """

    def __init__(self, temperature: float = 0.2, max_items: int | None = None) -> None:
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        if max_items is not None and max_items < 1:
            raise ValueError(f"max_items must be None or >= 1, got {max_items}")
        self.temperature, self.max_items = temperature, max_items

    def forward(self, view: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if self.max_items is not None and len(view) > self.max_items and view.shape == target.shape:
            keep = torch.randperm(len(view), device=view.device)[: self.max_items]
            view, target = view.index_select(0, keep), target.index_select(0, keep)
        return info_nce(view, target, self.temperature)

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}, max_items={self.max_items}"


def alignment_bound(view: torch.Tensor, target: torch.Tensor, temperature: float) -> torch.Tensor:
    r"""The valid upper bound on :math:`\mathbb E_i\|z^m_i-z_i\|^2` (see the module docstring), for checking."""
    v = F.normalize(view.double(), dim=-1)
    t = F.normalize(target.double(), dim=-1)
    loss = info_nce(v, t, temperature)
    return 2 * temperature * (loss - math.log(len(v))) + 2 * (1 - v.mean(0) @ t.mean(0))
