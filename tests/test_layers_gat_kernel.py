"""The fast GAT kernel against the previous implementation, kept here verbatim as the exact reference.

``ReferenceGraph`` / ``ReferenceGATConv`` are the node-major CSR + per-edge softmax GAT that
``recgoat_core.layers`` shipped before the fused head-major kernel (``benchmarks/bench_gat.py`` times both).
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from recgoat_core.graphs import knn_graph
from recgoat_core.layers import GAT, AttentionGraph, GATConv, segment_softmax


# ---------------------------------------------------------------------------------------------- the reference
class ReferenceGraph(nn.Module):
    """The previous ``AttentionGraph``: node-major block matrix, values permuted from edge order."""

    def __init__(self, edge_index: torch.Tensor, n_nodes: int, heads: int) -> None:
        super().__init__()
        loops = torch.arange(n_nodes)
        src = torch.cat([edge_index[0].cpu().long(), loops])
        dst = torch.cat([edge_index[1].cpu().long(), loops])
        key = torch.unique(dst * n_nodes + src, sorted=True)
        src, dst = key % n_nodes, key // n_nodes
        rev = torch.searchsorted(key, src * n_nodes + dst)
        n_edges = len(src)
        deg = torch.bincount(dst, minlength=n_nodes)
        start = torch.zeros(n_nodes + 1, dtype=torch.long)
        start[1:] = torch.cumsum(deg, 0)
        h = torch.arange(heads)
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
        size = self.n_nodes * self.heads
        return torch.sparse_csr_tensor(self.crow, self.col, alpha.reshape(-1)[self.perm], (size, size),
                                       check_invariants=False)


class _ReferenceAggregate(torch.autograd.Function):
    @staticmethod
    def forward(ctx, alpha, x, graph):  # type: ignore[override]
        ctx.save_for_backward(alpha, x)
        ctx.graph = graph
        n, heads, dim = x.shape
        return (graph.block_matrix(alpha) @ x.reshape(n * heads, dim)).view(n, heads, dim)

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        alpha, x = ctx.saved_tensors
        graph = ctx.graph
        n, heads, dim = x.shape
        grad = grad.contiguous().reshape(n * heads, dim)
        grad_x = (graph.block_matrix(alpha[graph.rev]) @ grad).view(n, heads, dim)
        pattern = graph.block_matrix(alpha.new_zeros(alpha.shape))
        sampled = torch.sparse.sampled_addmm(pattern, grad, x.reshape(n * heads, dim).T, beta=0.0).values()
        grad_alpha = torch.empty_like(sampled)
        grad_alpha[graph.perm] = sampled
        return grad_alpha.view_as(alpha), grad_x, None


class ReferenceGATConv(GATConv):
    """The previous ``GATConv.forward`` (same parameters as :class:`GATConv`)."""

    def forward(self, x: torch.Tensor, graph) -> torch.Tensor:  # type: ignore[override]
        n = len(x)
        h = self.lin(x).view(n, self.heads, self.head_dim)
        score = (h * self.att_src).sum(-1).index_select(0, graph.src) + (h * self.att_dst).sum(-1).index_select(0, graph.dst)
        alpha = segment_softmax(F.leaky_relu(score, self.negative_slope), graph.dst, n)
        if self.training and self.dropout > 0:
            keep = torch.rand(len(alpha), 1, device=alpha.device) >= self.dropout
            alpha = alpha * keep / (1.0 - self.dropout)
        out = _ReferenceAggregate.apply(alpha, h, graph).reshape(n, self.dim) + self.bias
        return out + x if self.residual else out


# ---------------------------------------------------------------------------------------------- helpers
def _random_graph(n: int, k: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return knn_graph(torch.randn(n, 6, generator=g), k, skip_first=False)


def _pair(dim: int, heads: int, dtype: torch.dtype, seed: int, residual: bool = True, scale: float = 1.0):
    torch.manual_seed(seed)
    new = GATConv(dim, heads, dropout=0.0, residual=residual).to(dtype)
    with torch.no_grad():
        new.att_src.mul_(scale)
        new.att_dst.mul_(scale)
        new.bias.normal_()
    ref = ReferenceGATConv(dim, heads, dropout=0.0, residual=residual).to(dtype)
    ref.load_state_dict(new.state_dict())
    return new, ref


def _outputs_and_grads(layer: nn.Module, x: torch.Tensor, graph: nn.Module, weight: torch.Tensor):
    layer.zero_grad()
    x = x.clone().requires_grad_(True)
    out = layer(x, graph)
    (out * weight).sum().backward()
    return [out.detach(), x.grad] + [p.grad.clone() for p in layer.parameters()]


# ---------------------------------------------------------------------------------------------- tests
@pytest.mark.parametrize("n,k,heads,dim,dtype,scale,seed", [
    (40, 3, 4, 16, torch.float64, 1.0, 0),
    (57, 5, 8, 64, torch.float32, 1.0, 1),
    (30, 2, 2, 8, torch.float64, 40.0, 2),    # source scores spread > the bound's limit: exact segment max
    (25, 4, 1, 4, torch.float32, 200.0, 3),   # large scores in float32: exact path, stable
    (33, 1, 4, 8, torch.float64, 1.0, 4),
])
@pytest.mark.parametrize("exact_max", [False, True])
def test_gat_matches_reference_outputs_and_gradients(n, k, heads, dim, dtype, scale, seed, exact_max, monkeypatch):
    if exact_max:  # no bound allowed: always the per-target segment max (the GPU path)
        monkeypatch.setattr("recgoat_core.layers._BOUND_SPREAD", {})
    edges = _random_graph(n, k, seed)
    new, ref = _pair(dim, heads, dtype, seed, residual=seed % 2 == 0, scale=scale)
    new.eval(), ref.eval()
    x = torch.randn(n, dim, dtype=dtype)
    weight = torch.randn(n, dim, dtype=dtype)
    got = _outputs_and_grads(new, x, AttentionGraph(edges, n, heads), weight)
    want = _outputs_and_grads(ref, x, ReferenceGraph(edges, n, heads), weight)
    tol = dict(atol=1e-10, rtol=1e-9) if dtype == torch.float64 else dict(atol=1e-4, rtol=1e-4)
    for a, b in zip(got, want):
        assert torch.isfinite(a).all()
        torch.testing.assert_close(a, b, **tol)


def test_gat_dropout_uses_the_reference_mask_and_keeps_the_expectation():
    edges = _random_graph(30, 3, 5)
    new, ref = _pair(16, 4, torch.float64, 5)
    new.dropout = ref.dropout = 0.3
    new.train(), ref.train()
    x = torch.randn(30, 16, dtype=torch.float64)
    torch.manual_seed(7)
    a = new(x, AttentionGraph(edges, 30, 4))
    torch.manual_seed(7)
    b = ref(x, ReferenceGraph(edges, 30, 4))
    torch.testing.assert_close(a, b)  # same RNG draws, same edge order: the same mask
    graph = AttentionGraph(edges, 30, 4)
    mean = torch.stack([new(x, graph) for _ in range(400)]).mean(0)
    new.eval()
    assert mean.shape == (30, 16)
    torch.testing.assert_close(mean, new(x, graph), atol=0.1, rtol=0.1)  # inverted dropout: unbiased


def test_fused_attention_gradcheck():
    from recgoat_core.layers import _GraphAttention

    edges = _random_graph(9, 2, 0)
    graph = AttentionGraph(edges, 9, heads=2)
    p = torch.randn(2 * 9, dtype=torch.float64, requires_grad=True)  # head-major [H·N]
    q = torch.randn(2 * 9, dtype=torch.float64, requires_grad=True)
    x = torch.randn(2 * 9, 3, dtype=torch.float64, requires_grad=True)
    keep = (torch.rand(graph.n_edges, dtype=torch.float64) > 0.3).double() / 0.7
    for mask in (None, keep):
        assert torch.autograd.gradcheck(lambda a, b, c: _GraphAttention.apply(a, b, c, mask, graph, 0.2), (p, q, x))
    big = (p.detach() * 100).requires_grad_(True)  # spread beyond the bound: the segment-max path
    assert torch.autograd.gradcheck(lambda a, b, c: _GraphAttention.apply(a, b, c, None, graph, 0.2), (big, q, x))


def test_attention_graph_buffers_follow_copies_and_stay_out_of_the_state_dict():
    edges = _random_graph(20, 3, 1)
    gat = GAT(8, n_layers=2, heads=2, dropout=0.0).eval()
    graph = AttentionGraph(edges, 20, 2)
    assert graph.crow.dtype == graph.col.dtype == torch.int32
    assert not graph.state_dict()
    clone = copy.deepcopy(graph).to(torch.device("cpu"))
    x = torch.randn(20, 8)
    torch.testing.assert_close(gat(x, clone), gat(x, graph))
    torch.testing.assert_close(gat(x, graph), gat(x, edges))  # an edge_index is prepared on the call
