"""Propagation layers: LightGCN over a normalised sparse adjacency, and multi-head GAT as one fused CSR kernel."""

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
    # softmax is shift-invariant, so the max needs no gradient (and amax's backward is costly)
    peak = scores.detach().new_full((n_segments, heads), -torch.inf).scatter_reduce(
        0, index[:, None].expand(-1, heads), scores.detach(), "amax", include_self=True
    )
    e = torch.exp(scores - peak.index_select(0, index))
    total = scores.new_zeros(n_segments, heads).index_add_(0, index, e)
    return e / total.index_select(0, index).clamp_min(torch.finfo(scores.dtype).tiny)


class AttentionGraph(nn.Module):
    r"""A *symmetric* graph prepared for :class:`GATConv`: self-loops added, edges sorted by target, and the
    CSR layout of the head-major block-diagonal matrix :math:`A \in \mathbb R^{HN\times HN}`,
    :math:`A_{(h,i),(h,j)} = \alpha^h_{ij}`, whose values in CSR order are exactly an [H, E] array of per-edge
    weights (edges sorted by target), so multi-head aggregation is one sparse-dense product with no permutation.

    Buffers (non-persistent, following ``.to(device)`` and ``deepcopy``): ``src``/``dst``/``rev`` [E] (``rev``:
    each edge's twin), ``crow``/``col`` (int32, stored once: the CSR kernels want int32 and would otherwise
    convert int64 on every call), ``row`` [H·E] (the block row of each value) and ``twin`` [H·E] (the value
    index of each value's twin, which gives :math:`A^\top` the same layout as :math:`A`).
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
        if heads * max(n_nodes, n_edges) >= 2**31:
            raise ValueError(f"graph too large for int32 CSR indices: {n_nodes} nodes, {n_edges} edges x {heads} heads")
        deg = torch.bincount(dst, minlength=n_nodes)
        h = torch.arange(heads)[:, None]
        crow = torch.zeros(heads * n_nodes + 1, dtype=torch.long)
        crow[1:] = torch.cumsum(deg.repeat(heads), 0)
        self.n_nodes, self.heads, self.n_edges = n_nodes, heads, n_edges
        buffers = {
            "src": src, "dst": dst, "rev": rev, "crow": crow.int(), "col": (h * n_nodes + src).flatten().int(),
            "row": (h * n_nodes + dst).flatten(), "twin": (h * n_edges + rev).flatten(),
        }
        for name, value in buffers.items():
            self.register_buffer(name, value, persistent=False)

    def block_matrix(self, values: torch.Tensor) -> torch.Tensor:
        """The (head·node)² CSR matrix holding ``values`` [H, E] (or flat [H·E])."""
        size = self.n_nodes * self.heads
        return torch.sparse_csr_tensor(self.crow, self.col, values.reshape(-1), (size, size),
                                       check_invariants=False)

    def segment_sum(self, values: torch.Tensor) -> torch.Tensor:
        """Sum of ``values`` [H·E] over each (head, target) row: [H·N] (one sparse matrix-vector product)."""
        return torch.mv(self.block_matrix(values), values.new_ones(self.n_nodes * self.heads))

    def extra_repr(self) -> str:
        return f"nodes={self.n_nodes}, edges={self.n_edges} (with self-loops), heads={self.heads}"


# below this spread of the scores a per-head constant replaces the per-target max (see _GraphAttention)
_BOUND_SPREAD = {torch.float64: 300.0, torch.float32: 30.0}


class _GraphAttention(torch.autograd.Function):
    r"""Fused multi-head attention aggregation over an :class:`AttentionGraph`, in head-major layout.

    Per head, with :math:`s_{ij} = \mathrm{LeakyReLU}(p_j + q_i)`, a shift :math:`m_i`,
    :math:`e_{ij} = \exp(s_{ij} - m_i)`, :math:`Z_i = \sum_j e_{ij}` and the dropout factor :math:`k_{ij}`,

    .. math::
        \mathrm{out}_i = \frac{1}{Z_i}\sum_j e_{ij} k_{ij} x_j \quad(= \textstyle\sum_j \alpha_{ij} k_{ij} x_j),

    normalised once per node. Backward, with :math:`g'_i = g_i / Z_i` and :math:`c_i = g'_i\cdot\mathrm{out}_i`:
    :math:`\partial s_{ij} = e_{ij}\,(k_{ij}\,g'_i\cdot x_j - c_i)` (one SDDMM), :math:`\partial x = A^\top g'`
    (the twin edges' weights), and :math:`\partial p, \partial q` by sparse matrix-vector sums.
    Softmax is shift-invariant, so :math:`m` only keeps ``exp`` in range: on CPU, when
    :math:`\mathrm{spread}(p) + \mathrm{spread}(q)` of a head is below ``_BOUND_SPREAD`` (checked), it is the
    constant :math:`\mathrm{LeakyReLU}(\max p + \max q) \ge s_{ij}`, which keeps every row's self-loop term above
    :math:`e^{-\text{spread}}` (LeakyReLU is 1-Lipschitz), so only rounding differs from the exact per-target
    max used otherwise (and on GPUs, where the segment max is cheap and the check would be a host sync).

    Inputs ``p``, ``q`` [H·N] and ``x`` [H·N, D] are head-major; ``keep`` [E] or ``None``; returns [H·N, D].
    """

    @staticmethod
    def forward(ctx, p: torch.Tensor, q: torch.Tensor, x: torch.Tensor, keep: torch.Tensor | None,  # type: ignore[override]
                graph: AttentionGraph, slope: float) -> torch.Tensor:
        heads = graph.heads
        raw = p.index_select(0, graph.col) + q.index_select(0, graph.row)
        score = F.leaky_relu(raw, slope)
        p2, q2 = p.view(heads, -1), q.view(heads, -1)
        top = p2.amax(1) + q2.amax(1)
        if x.device.type == "cpu" and float((top - p2.amin(1) - q2.amin(1)).max()) < _BOUND_SPREAD.get(p.dtype, 0.0):
            e = (score.view(heads, -1) - F.leaky_relu(top, slope)[:, None]).exp_().view(-1)
        else:
            shift = torch.segment_reduce(score, "max", offsets=graph.crow.long(), axis=0)
            e = (score - shift.index_select(0, graph.row)).exp_()
        total = graph.segment_sum(e).clamp_min(torch.finfo(e.dtype).tiny)
        w = e if keep is None else (e.view(heads, -1) * keep).view(-1)
        out = (graph.block_matrix(w) @ x).div_(total[:, None])
        ctx.save_for_backward(e, w, keep, raw, total, x, out)
        ctx.graph, ctx.slope = graph, slope
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # type: ignore[override]
        e, w, keep, raw, total, x, out = ctx.saved_tensors
        graph: AttentionGraph = ctx.graph
        g = grad / total[:, None]
        c = (g * out).sum(1)
        sampled = torch.sparse.sampled_addmm(graph.block_matrix(w), g, x.T, beta=0.0).values()
        if keep is not None:
            sampled = (sampled.view(graph.heads, -1) * keep).view(-1)
        grad_score = (sampled - c.index_select(0, graph.row)).mul_(e)
        grad_raw = torch.ops.aten.leaky_relu_backward(grad_score, raw, ctx.slope, False)
        grad_q = graph.segment_sum(grad_raw)
        grad_p = graph.segment_sum(grad_raw.index_select(0, graph.twin))
        grad_x = graph.block_matrix(w.index_select(0, graph.twin)) @ g
        return grad_p, grad_q, grad_x, None, None, None


class GATConv(nn.Module):
    r"""Multi-head graph attention (Veličković et al. 2018) with self-loops.

    .. math::
        x'_i = \big\Vert_{h=1}^{H} \sum_{j \in N(i)\cup\{i\}} \alpha^h_{ij} W^h x_j,\qquad
        \alpha^h_{ij} = \mathrm{softmax}_j\big(\mathrm{LeakyReLU}(a_h^{\top}[W^h x_i \Vert W^h x_j])\big),

    with attention dropout (one mask per edge, shared by its heads); ``residual`` adds :math:`x_i` to the output. The graph is an
    :class:`AttentionGraph` (or a symmetric ``edge_index`` [2, E] of (source j, target i) pairs without
    self-loops, prepared on each call). Attention and aggregation are one fused autograd function
    (:class:`_GraphAttention`: index_select gathers, CSR segment sums, normalisation once per node, one CSR
    product each way and one SDDMM); ``benchmarks/bench_gat.py`` times it against the previous kernel.
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
        heads, d = self.heads, self.head_dim
        keep = None
        if self.training and self.dropout > 0:
            # one mask per edge, shared by the heads: 1/H of the random draws (the RNG dominates on CPU)
            keep = (torch.rand(graph.n_edges, 1, device=x.device) >= self.dropout).view(-1).to(x.dtype)
            keep = keep / (1.0 - self.dropout)
        weight = self.lin.weight.view(heads, d, self.dim)  # W^h, head-major: h = W^h x without a transpose
        h = torch.matmul(x, weight.transpose(1, 2)).view(heads * n, d)
        # a_h^T [W^h x_i || W^h x_j] = q_i + p_j, with the attention vectors folded into W (a [dim, 2H] product)
        fold = torch.cat([(weight * self.att_src[:, :, None]).sum(1), (weight * self.att_dst[:, :, None]).sum(1)])
        pq = (x @ fold.T).T.reshape(2, heads * n)
        out = _GraphAttention.apply(pq[0], pq[1], h, keep, graph, self.negative_slope)
        out = out.view(heads, n, d).transpose(0, 1).reshape(n, self.dim) + self.bias
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
