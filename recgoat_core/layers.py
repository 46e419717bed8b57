"""Propagation layers: LightGCN over a normalised sparse adjacency, and GAT on torch's own scatter ops."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["symmetric_spmm", "lightgcn_propagate", "segment_softmax", "AttentionGraph", "GATConv", "GAT"]


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

    The backward reuses ``adj`` (symmetric: the gradient is ``adj @ grad``) instead of transposing it, which
    makes CSR faster on CPU than ``torch.sparse.mm`` on COO; no benchmark in this repository measures the
    factor (``benchmarks/bench_speed.py`` measures whole epochs).
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


class AttentionGraph(nn.Module):
    """A *symmetric* graph prepared for :class:`GATConv`: self-loops added, edges sorted by target, and the
    CSR layout of a block-diagonal (node, head) × (node, head) matrix, so that multi-head aggregation is one
    sparse-dense product.

    Everything is a dense index buffer: it follows ``.to(device)`` and survives ``deepcopy``.
    """

    def __init__(self, edge_index: torch.Tensor, n_nodes: int, heads: int) -> None:
        super().__init__()
        loops = torch.arange(n_nodes)
        src = torch.cat([edge_index[0].cpu().long(), loops])
        dst = torch.cat([edge_index[1].cpu().long(), loops])
        key = torch.unique(dst * n_nodes + src, sorted=True)  # sorted by target, duplicates dropped
        src, dst = key % n_nodes, key // n_nodes
        rev = torch.searchsorted(key, src * n_nodes + dst)
        if (rev >= len(key)).any() or not torch.equal(key[rev.clamp_max(len(key) - 1)], src * n_nodes + dst):
            raise ValueError("AttentionGraph needs a symmetric graph (every j->i edge with its i->j twin)")
        n_edges = len(src)
        deg = torch.bincount(dst, minlength=n_nodes)
        start = torch.zeros(n_nodes + 1, dtype=torch.long)
        start[1:] = torch.cumsum(deg, 0)
        h = torch.arange(heads)
        # value (edge e, head h) sits at row (dst_e, h) of the big matrix, after the row's earlier edges
        pos = start[dst][:, None] * heads + h[None, :] * deg[dst][:, None] + (torch.arange(n_edges) - start[dst])[:, None]
        perm = torch.empty(n_edges * heads, dtype=torch.long)
        perm[pos.flatten()] = torch.arange(n_edges * heads)
        col = torch.empty(n_edges * heads, dtype=torch.long)
        col[pos.flatten()] = (src[:, None] * heads + h[None, :]).flatten()
        crow = torch.zeros(n_nodes * heads + 1, dtype=torch.long)
        crow[1:] = torch.cumsum(deg.repeat_interleave(heads), 0)
        self.n_nodes, self.heads, self.n_edges = n_nodes, heads, n_edges
        for name, value in (("src", src), ("dst", dst), ("rev", rev), ("perm", perm), ("crow", crow), ("col", col)):
            self.register_buffer(name, value, persistent=False)

    def block_matrix(self, alpha: torch.Tensor) -> torch.Tensor:
        """The (node·head)² CSR matrix holding ``alpha`` [E, H]."""
        size = self.n_nodes * self.heads
        return torch.sparse_csr_tensor(self.crow, self.col, alpha.reshape(-1)[self.perm], (size, size),
                                       check_invariants=False)

    def extra_repr(self) -> str:
        return f"nodes={self.n_nodes}, edges={self.n_edges} (with self-loops), heads={self.heads}"


class _AttentionAggregate(torch.autograd.Function):
    """``out[i, h] = Σ_j alpha[(j→i), h] · x[j, h]`` by one CSR product; backward by CSR and SDDMM."""

    @staticmethod
    def forward(ctx, alpha: torch.Tensor, x: torch.Tensor, graph: AttentionGraph) -> torch.Tensor:  # type: ignore[override]
        ctx.save_for_backward(alpha, x)
        ctx.graph = graph
        n, heads, dim = x.shape
        return (graph.block_matrix(alpha) @ x.reshape(n * heads, dim)).view(n, heads, dim)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # type: ignore[override]
        alpha, x = ctx.saved_tensors
        graph: AttentionGraph = ctx.graph
        n, heads, dim = x.shape
        grad = grad.contiguous().reshape(n * heads, dim)
        # the graph is symmetric: the transpose has the same layout, with each edge's twin's weight
        grad_x = (graph.block_matrix(alpha[graph.rev]) @ grad).view(n, heads, dim)
        pattern = graph.block_matrix(alpha.new_zeros(alpha.shape))
        sampled = torch.sparse.sampled_addmm(pattern, grad, x.reshape(n * heads, dim).T, beta=0.0).values()
        grad_alpha = torch.empty_like(sampled)
        grad_alpha[graph.perm] = sampled
        return grad_alpha.view_as(alpha), grad_x, None


class GATConv(nn.Module):
    r"""Multi-head graph attention (Veličković et al. 2018) with self-loops.

    .. math::
        x'_i = \big\Vert_{h=1}^{H} \sum_{j \in N(i)\cup\{i\}} \alpha^h_{ij} W^h x_j,\qquad
        \alpha^h_{ij} = \mathrm{softmax}_j\big(\mathrm{LeakyReLU}(a_h^{\top}[W^h x_i \Vert W^h x_j])\big),

    with attention dropout (one mask per edge, shared by its heads); ``residual`` adds :math:`x_i` to the output. The graph is an
    :class:`AttentionGraph` (or a symmetric ``edge_index`` [2, E] of (source j, target i) pairs without
    self-loops, prepared on each call). Aggregation is one CSR product per layer, about 3x faster than
    gather/scatter on CPU (``benchmarks/bench_speed.py``).
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

    def forward(self, x: torch.Tensor, graph: AttentionGraph | torch.Tensor) -> torch.Tensor:
        n = len(x)
        if not isinstance(graph, AttentionGraph):
            graph = AttentionGraph(graph, n, self.heads).to(x.device)
        if graph.heads != self.heads or graph.n_nodes != n:
            raise ValueError(f"graph prepared for {graph.n_nodes} nodes x {graph.heads} heads, got {n} x {self.heads}")
        h = self.lin(x).view(n, self.heads, self.head_dim)
        score = (h * self.att_src).sum(-1).index_select(0, graph.src) + (h * self.att_dst).sum(-1).index_select(0, graph.dst)
        alpha = segment_softmax(F.leaky_relu(score, self.negative_slope), graph.dst, n)
        if self.training and self.dropout > 0:
            # one mask per edge, shared by the heads: 1/H of the random draws (the RNG dominates on CPU)
            keep = torch.rand(len(alpha), 1, device=alpha.device) >= self.dropout
            alpha = alpha * keep / (1.0 - self.dropout)
        out = _AttentionAggregate.apply(alpha, h, graph).reshape(n, self.dim) + self.bias
        return out + x if self.residual else out


class GAT(nn.Module):
    """A stack of :class:`GATConv` layers with ELU between them."""

    def __init__(self, dim: int, n_layers: int = 1, heads: int = 8, dropout: float = 0.1,
                 residual: bool = True) -> None:
        super().__init__()
        self.layers = nn.ModuleList(GATConv(dim, heads, dropout, residual=residual) for _ in range(n_layers))

    def forward(self, x: torch.Tensor, graph: AttentionGraph | torch.Tensor) -> torch.Tensor:
        if not isinstance(graph, AttentionGraph) and self.layers:
            graph = AttentionGraph(graph, len(x), self.layers[0].heads).to(x.device)
        for i, layer in enumerate(self.layers):
            x = layer(x, graph)
            if i < len(self.layers) - 1:
                x = F.elu(x)
        return x
