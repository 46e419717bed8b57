"""Propagation layers: LightGCN over a normalised sparse adjacency, and GAT on torch's own scatter ops."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["symmetric_spmm", "lightgcn_propagate", "segment_softmax", "GATConv", "GAT"]


class _SymmetricSpMM(torch.autograd.Function):
    """``adj @ x`` for a *symmetric* sparse ``adj``: the gradient is ``adj @ grad`` (no transpose needed)."""

    @staticmethod
    def forward(ctx, adj: torch.Tensor, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        ctx.adj = adj
        return adj @ x

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[None, torch.Tensor]:  # type: ignore[override]
        return None, ctx.adj @ grad


def symmetric_spmm(adj: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Sparse (CSR or COO) symmetric ``adj`` times dense ``x``, differentiable in ``x``.

    With CSR this is about 10x faster on CPU than ``torch.sparse.mm`` on COO, forward plus backward
    (``benchmarks/bench_speed.py``), because the backward reuses ``adj`` instead of transposing it.
    """
    return _SymmetricSpMM.apply(adj, x)


def lightgcn_propagate(adj: torch.Tensor, ego: torch.Tensor, n_layers: int) -> torch.Tensor:
    r""":math:`E^{(l+1)} = \hat A E^{(l)}`; returns :math:`\frac{1}{L+1}\sum_{l=0}^{L} E^{(l)}` (``adj`` symmetric)."""
    out = ego
    total = ego
    for _ in range(n_layers):
        out = symmetric_spmm(adj, out)
        total = total + out
    return total / (n_layers + 1)


def segment_softmax(scores: torch.Tensor, index: torch.Tensor, n_segments: int) -> torch.Tensor:
    """Softmax of ``scores`` [E, H] within the groups given by ``index`` [E] (max-shifted, stable)."""
    heads = scores.shape[1]
    idx = index[:, None].expand(-1, heads)
    # softmax is shift-invariant, so the max needs no gradient (and amax's backward is costly)
    peak = scores.detach().new_full((n_segments, heads), -torch.inf).scatter_reduce(
        0, idx, scores.detach(), "amax", include_self=True
    )
    e = torch.exp(scores - peak.index_select(0, index))
    total = scores.new_zeros(n_segments, heads).index_add_(0, index, e)
    return e / total.index_select(0, index).clamp_min(torch.finfo(scores.dtype).tiny)


class GATConv(nn.Module):
    r"""Multi-head graph attention (Veličković et al. 2018) with self-loops.

    .. math::
        x'_i = \big\Vert_{h=1}^{H} \sum_{j \in N(i)\cup\{i\}} \alpha^h_{ij} W^h x_j,\qquad
        \alpha^h_{ij} = \mathrm{softmax}_j\big(\mathrm{LeakyReLU}(a_h^{\top}[W^h x_i \Vert W^h x_j])\big),

    with attention dropout; ``residual`` adds :math:`x_i` to the output. ``edge_index`` [2, E] holds
    (source j, target i) pairs *without* self-loops (they are added here).
    """

    def __init__(self, dim: int, heads: int = 8, dropout: float = 0.1, negative_slope: float = 0.2,
                 residual: bool = True) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim ({dim}) must be divisible by heads ({heads})")
        self.dim, self.heads, self.head_dim = dim, heads, dim // heads
        self.lin = nn.Linear(dim, dim, bias=False)
        self.att_src = nn.Parameter(torch.empty(heads, self.head_dim))
        self.att_dst = nn.Parameter(torch.empty(heads, self.head_dim))
        self.bias = nn.Parameter(torch.zeros(dim))
        self.dropout, self.negative_slope, self.residual = dropout, negative_slope, residual
        nn.init.xavier_uniform_(self.lin.weight)
        nn.init.xavier_uniform_(self.att_src)
        nn.init.xavier_uniform_(self.att_dst)

    def forward(self, x: torch.Tensor, edge_index: torch.Tensor) -> torch.Tensor:
        n = len(x)
        loops = torch.arange(n, device=x.device)
        src = torch.cat([edge_index[0], loops])
        dst = torch.cat([edge_index[1], loops])
        h = self.lin(x).view(n, self.heads, self.head_dim)
        # index_select, not h[src]: its backward is index_add_, far faster on CPU than index_put_
        score = (h * self.att_src).sum(-1).index_select(0, src) + (h * self.att_dst).sum(-1).index_select(0, dst)
        alpha = segment_softmax(F.leaky_relu(score, self.negative_slope), dst, n)
        alpha = F.dropout(alpha, self.dropout, self.training)
        messages = alpha[..., None] * h.index_select(0, src)  # [E, H, C]
        out = h.new_zeros(n, self.heads, self.head_dim).index_add_(0, dst, messages)
        out = out.reshape(n, self.dim) + self.bias
        return out + x if self.residual else out


class GAT(nn.Module):
    """A stack of :class:`GATConv` layers with ELU between them."""

    def __init__(self, dim: int, n_layers: int = 1, heads: int = 8, dropout: float = 0.1,
                 residual: bool = True) -> None:
        super().__init__()
        self.layers = nn.ModuleList(GATConv(dim, heads, dropout, residual=residual) for _ in range(n_layers))

    def forward(self, x: torch.Tensor, edge_index: torch.Tensor) -> torch.Tensor:
        for i, layer in enumerate(self.layers):
            x = layer(x, edge_index)
            if i < len(self.layers) - 1:
                x = F.elu(x)
        return x
