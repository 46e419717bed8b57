"""Graphs and propagation layers against dense reference implementations."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from recgoat_core.graphs import bipartite_adjacency, knn_graph, normalized_adjacency, rating_weights
from recgoat_core.layers import GAT, GATConv, lightgcn_propagate, segment_softmax, symmetric_spmm


def _dense_knn(x: np.ndarray, k: int) -> set[tuple[int, int]]:
    x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    sim = x @ x.T
    np.fill_diagonal(sim, -np.inf)
    sim[:, 0] = -np.inf  # padding row
    edges = set()
    for i in range(1, len(x)):
        for j in np.argsort(-sim[i], kind="stable")[:k]:
            edges |= {(int(j), i), (i, int(j))}
    return edges


@pytest.mark.parametrize("chunk", [1, 7, 4096])
def test_knn_graph_matches_dense_and_is_chunk_independent(chunk):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 9)).astype(np.float32)
    edges = knn_graph(x, 5, chunk_size=chunk)
    got = set(map(tuple, edges.T.tolist()))
    assert got == _dense_knn(x, 5)
    assert not any(i == j for i, j in got) and not any(0 in e for e in got)
    assert got == {(j, i) for i, j in got}  # symmetric


def test_knn_graph_skips_zero_rows_and_handles_tiny_inputs():
    x = np.eye(6, dtype=np.float32)
    x[3] = 0  # a missing feature row
    edges = knn_graph(x, 2)
    assert 3 not in edges.flatten().tolist()
    assert knn_graph(np.ones((1, 4)), 3).shape == (2, 0)
    assert knn_graph(np.ones((3, 4)), 0).shape == (2, 0)


def test_bipartite_adjacency_is_symmetric_normalised():
    users = torch.tensor([0, 0, 1, 2, 2, 2])
    items = torch.tensor([1, 2, 2, 0, 1, 3])
    adj = bipartite_adjacency(users, items, 3, 4).to_dense()
    a = torch.zeros(7, 7)
    a[users, items + 3] = 1
    a[items + 3, users] = 1
    deg = a.sum(1)
    inv = torch.where(deg > 0, deg.pow(-0.5), torch.zeros_like(deg))
    torch.testing.assert_close(adj, inv[:, None] * a * inv[None, :])
    torch.testing.assert_close(adj, adj.T)


def test_rating_weights_follow_ratings_and_sum_to_degree():
    users = torch.tensor([0, 0, 0, 1, 1])
    ratings = torch.tensor([5.0, 3.0, 1.0, 4.0, 4.0])
    w = rating_weights(users, ratings)
    assert w[0] > w[1] > w[2]
    torch.testing.assert_close(w[:3].sum(), torch.tensor(3.0))
    torch.testing.assert_close(w[3:], torch.ones(2))  # equal ratings: plain LightGCN weights


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 30), st.integers(1, 4), st.integers(0, 10_000))
def test_segment_softmax_equals_dense_softmax(n_edges, heads, seed):
    g = torch.Generator().manual_seed(seed)
    index = torch.randint(0, 5, (n_edges,), generator=g)
    scores = torch.randn(n_edges, heads, generator=g, dtype=torch.float64) * 50
    out = segment_softmax(scores, index, 5)
    for s in index.unique():
        mask = index == s
        torch.testing.assert_close(out[mask], torch.softmax(scores[mask], 0))


def _dense_gat(layer: GATConv, x: torch.Tensor, edges: torch.Tensor) -> torch.Tensor:
    n = len(x)
    adj = torch.eye(n, dtype=torch.bool)
    adj[edges[1], edges[0]] = True  # adj[i, j]: j sends to i
    h = layer.lin(x).view(n, layer.heads, layer.head_dim)
    s_src = (h * layer.att_src).sum(-1)
    s_dst = (h * layer.att_dst).sum(-1)
    e = torch.nn.functional.leaky_relu(s_dst[:, None, :] + s_src[None, :, :], layer.negative_slope)
    e = e.masked_fill(~adj[..., None], -torch.inf)
    alpha = torch.softmax(e, dim=1)  # [i, j, h]
    out = torch.einsum("ijh,jhc->ihc", alpha, h).reshape(n, -1) + layer.bias
    return out + x


def test_gat_matches_dense_attention_and_gradients_flow():
    torch.manual_seed(0)
    x = torch.randn(12, 16, requires_grad=True)
    edges = knn_graph(x.detach(), 3, skip_first=False)
    layer = GATConv(16, heads=4, dropout=0.0).eval()
    out = layer(x, edges)
    torch.testing.assert_close(out, _dense_gat(layer, x, edges), atol=1e-5, rtol=1e-5)
    out.pow(2).sum().backward()
    assert torch.isfinite(x.grad).all() and layer.att_src.grad.abs().sum() > 0


def test_gat_is_permutation_equivariant():
    torch.manual_seed(1)
    x = torch.randn(10, 8)
    edges = knn_graph(x, 3, skip_first=False)
    gat = GAT(8, n_layers=2, heads=2, dropout=0.0).eval()
    perm = torch.randperm(10)
    inverse = torch.empty_like(perm)
    inverse[perm] = torch.arange(10)
    out = gat(x, edges)
    out_perm = gat(x[perm], inverse[edges])
    torch.testing.assert_close(out_perm, out[perm], atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError):
        GATConv(10, heads=3)


def test_symmetric_spmm_and_lightgcn_propagation():
    users = torch.randint(0, 20, (100,))
    items = torch.randint(0, 30, (100,))
    adj = bipartite_adjacency(users, items, 20, 30)
    dense = adj.to_dense()
    x = torch.randn(50, 4, dtype=torch.float32, requires_grad=True)
    y = symmetric_spmm(adj.to_sparse_csr(), x)
    torch.testing.assert_close(y, dense @ x)
    (y * torch.arange(4.0)).sum().backward()
    torch.testing.assert_close(x.grad, dense.T @ torch.arange(4.0).expand(50, 4))
    out = lightgcn_propagate(adj.to_sparse_csr(), x.detach(), 2)
    torch.testing.assert_close(out, (x + dense @ x + dense @ dense @ x).detach() / 3, atol=1e-6, rtol=1e-5)


def test_attention_gradcheck_and_symmetry_required():
    from recgoat_core.layers import AttentionGraph, _GraphAttention

    torch.manual_seed(0)
    edges = knn_graph(torch.randn(9, 4), 2, skip_first=False)
    graph = AttentionGraph(edges, 9, heads=2)
    p = torch.randn(2 * 9, dtype=torch.float64, requires_grad=True)  # head-major [H·N]
    q = torch.randn(2 * 9, dtype=torch.float64, requires_grad=True)
    x = torch.randn(2 * 9, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b, h: _GraphAttention.apply(a, b, h, None, graph, 0.2), (p, q, x))
    with pytest.raises(ValueError, match="symmetric"):
        AttentionGraph(torch.tensor([[0], [1]]), 3, heads=1)


def test_normalized_adjacency_is_d_half_a_d_half():
    edges = torch.tensor([[0, 1, 1, 2], [1, 0, 2, 1]])
    dense = normalized_adjacency(edges, 4).to_dense()
    a = torch.zeros(4, 4)
    a[edges[0], edges[1]] = 1.0
    d = a.sum(1)
    inv = torch.where(d > 0, d.pow(-0.5), torch.zeros_like(d))
    torch.testing.assert_close(dense, inv[:, None] * a * inv[None, :])
