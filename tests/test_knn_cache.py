"""The kNN graphs (recgoat_core.graphs.knn_graph): faiss on the CPU gives the torch path's neighbours (ties too)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from recgoat_core.graphs import knn_graph


def _pairs(edges: torch.Tensor) -> set[tuple[int, int]]:
    return set(map(tuple, edges.T.tolist()))


def _reference(x: np.ndarray, k: int, skip_first: bool) -> set[tuple[int, int]]:
    """Directed (neighbour, row) pairs by a dense similarity matrix: each valid row's k others with the largest
    cosine, equal cosines by the lower index (a stable sort)."""
    norms = np.linalg.norm(x, axis=1)
    valid = norms > 0
    if skip_first:
        valid[0] = False
    u = (x / np.maximum(norms, 1e-12)[:, None]).astype(np.float32)
    sim = u @ u.T
    sim[:, ~valid] = -np.inf
    np.fill_diagonal(sim, -np.inf)
    k = min(k, int(valid.sum()) - 1)
    return {(int(j), i) for i in np.flatnonzero(valid) for j in np.argsort(-sim[i], kind="stable")[:k]}


def _copies(n: int = 600, dim: int = 16, seed: int = 3) -> np.ndarray:
    """Random rows, each of the first third repeated up to 30 times: exact ties (bitwise-equal rows give equal
    products in any backend), and none between different rows."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, dim)).astype(np.float32)
    x[n // 3:] = x[rng.integers(1, n // 20, n - n // 3)]
    return x


def _duplicates(n: int, groups: int, dim: int, seed: int) -> np.ndarray:
    """Rows drawn from a few binary patterns (+ 0.01, as a genre one-hot): many exactly equal similarities."""
    rng = np.random.default_rng(seed)
    patterns = rng.integers(0, 2, size=(groups, dim)).astype(np.float32)
    return patterns[rng.integers(0, groups, n)] + 0.01


# ------------------------------------------------------------------------------------- faiss == torch
@pytest.mark.parametrize("symmetric", [True, False])
@pytest.mark.parametrize("data, k, chunk", [
    ("random", 10, 2048), ("random", 7, 33), ("copies", 10, 100), ("copies", 40, 2048),
    ("duplicates", 10, 2048), ("duplicates", 50, 64), ("duplicates", 40, 512),
])
def test_faiss_and_torch_give_the_same_neighbours(data, k, chunk, symmetric):
    """Tie-free data, and data where most similarities are shared by many rows (equal rows, equal patterns):
    the faiss search (which keeps any of equal results) and the torch blocks (whose topk may too) both pick,
    of equal similarities, the lower indices -- the dense reference's neighbours, self excluded."""
    if data == "random":
        x = np.random.default_rng(0).normal(size=(400, 24)).astype(np.float32)
    elif data == "copies":
        x = _copies()
    else:
        x = _duplicates(200 if k == 50 else 1200, 30, 5 if k == 50 else 8, seed=k)
    x[5] = 0  # a row without features: no edges
    by_faiss = knn_graph(x, k, chunk, symmetric=symmetric, backend="faiss")
    by_torch = knn_graph(x, k, chunk, symmetric=symmetric, backend="torch")
    assert _pairs(by_faiss) == _pairs(by_torch)
    expected = _reference(x, k, skip_first=True)
    if symmetric:
        expected |= {(i, j) for j, i in expected}
    assert _pairs(by_torch) == expected
    assert not (by_faiss[0] == by_faiss[1]).any() and 5 not in by_faiss.flatten().tolist()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
@pytest.mark.parametrize("symmetric", [True, False])
def test_the_gpu_takes_the_cpu_neighbours(symmetric):
    """torch's blocks on the GPU (topk ties in any order there) and faiss on the CPU: the same graph."""
    x = _copies()
    on_gpu = knn_graph(x, 12, 128, symmetric=symmetric, device="cuda")
    assert torch.equal(on_gpu, knn_graph(x, 12, 128, symmetric=symmetric, backend="faiss"))


def test_cpu_default_is_faiss_and_the_same_graph():
    x = _duplicates(300, 12, 6, seed=1)
    assert torch.equal(knn_graph(x, 10, skip_first=False), knn_graph(x, 10, skip_first=False, backend="torch"))
    assert _pairs(knn_graph(x, 10, skip_first=False)) == _reference(x, 10, skip_first=False) | {
        (i, j) for j, i in _reference(x, 10, skip_first=False)}
