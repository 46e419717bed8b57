"""The graphs RecGOAT propagates over, built once from the training split and frozen.

- :func:`bipartite_adjacency` -- the user–item graph D^-1/2 A D^-1/2 (optionally rating-weighted);
- :func:`rating_weights` -- "rating attention": per-user softmax of ratings, rescaled to mean 1;
- :func:`knn_graph` -- cosine top-k neighbours (item–item per modality, user–user over profiles), by faiss's exact
  search on the CPU or in torch row chunks (any device), so memory is O(n·k + chunk·n), never a dense n×n matrix.
"""

from __future__ import annotations

import logging

import numpy as np
import torch

__all__ = ["bipartite_adjacency", "normalized_adjacency", "rating_weights", "knn_graph", "top_k_lowest"]

logger = logging.getLogger(__name__)


def rating_weights(users: torch.Tensor, ratings: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    r"""Edge weights :math:`w_{ui} = |N_u|\,\mathrm{softmax}_{i\in N_u}\big((r_{ui}-\bar r_u)/t\big)`.

    Within each user the weights follow the ratings; over a user's edges they sum to the user's degree, so
    a user with equal ratings gets plain LightGCN weights (all 1). Vectorised with segment ops.
    """
    users = users.long()
    r = ratings.double()
    n = int(users.max()) + 1 if len(users) else 0
    deg = torch.zeros(n, dtype=torch.float64).index_add_(0, users, torch.ones_like(r))
    mean = torch.zeros(n, dtype=torch.float64).index_add_(0, users, r) / deg.clamp_min(1)
    logits = (r - mean[users]) / temperature
    peak = torch.full((n,), -torch.inf, dtype=torch.float64).scatter_reduce(0, users, logits, "amax")
    e = torch.exp(logits - peak[users])
    total = torch.zeros(n, dtype=torch.float64).index_add_(0, users, e)
    return (deg[users] * e / total[users]).float()


def bipartite_adjacency(
    users: torch.Tensor,
    items: torch.Tensor,
    n_users: int,
    n_items: int,
    weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """Symmetric-normalised (n_users + n_items)² sparse adjacency of the user–item interactions.

    Node ids: users 0..n_users-1, then items n_users..n_users+n_items-1. Duplicate pairs are summed.
    """
    users, items = users.long(), items.long()
    w = torch.ones(len(users)) if weights is None else weights.float()
    rows = torch.cat([users, items + n_users])
    cols = torch.cat([items + n_users, users])
    return normalized_adjacency(torch.stack([rows, cols]), n_users + n_items, torch.cat([w, w]))


def normalized_adjacency(edge_index: torch.Tensor, n: int, weights: torch.Tensor | None = None) -> torch.Tensor:
    r"""Symmetric-normalised sparse adjacency :math:`D^{-1/2} A D^{-1/2}` (COO, n×n) of the edges
    ``edge_index`` [2, E] (row, col), with :math:`D_{ii} = \sum_j A_{ij}`. Duplicate edges are summed; nodes
    without edges keep an empty row. Symmetric when the edge list is (e.g. :func:`knn_graph`'s output)."""
    vals = torch.ones(edge_index.shape[1]) if weights is None else weights.float()
    adj = torch.sparse_coo_tensor(edge_index.long(), vals, (n, n), check_invariants=True).coalesce()
    idx, val = adj.indices(), adj.values()
    deg = torch.zeros(n).index_add_(0, idx[0], val)
    inv_sqrt = torch.where(deg > 0, deg.clamp_min(1e-12).pow(-0.5), torch.zeros_like(deg))
    val = inv_sqrt[idx[0]] * val * inv_sqrt[idx[1]]
    return torch.sparse_coo_tensor(idx, val, (n, n), is_coalesced=True, check_invariants=False)


def knn_graph(
    features: torch.Tensor | np.ndarray,
    k: int,
    chunk_size: int = 2048,
    symmetric: bool = True,
    skip_first: bool = True,
    device: str | torch.device | None = None,
    show_progress: bool | None = None,
    backend: str | None = None,
    queries: torch.Tensor | None = None,
) -> torch.Tensor:
    r"""Cosine top-``k`` neighbour graph of the rows of ``features``, as ``edge_index`` [2, E] (src, dst).

    Row i's neighbours are the ``k`` other valid rows j with the largest :math:`\cos(x_i, x_j)`; of equal
    similarities, the lower indices j (not whichever ``topk`` returns). Self-neighbours are excluded; rows that
    are all zero (padding, missing features) get no edges. ``skip_first`` leaves out row 0 (RecBole's padding
    id). With ``symmetric`` the union of i→j and j→i. ``queries`` (row ids): only those rows' neighbours are
    searched (among every valid row), e.g. a sample of rows when the whole graph is not needed; default all.

    ``backend``: ``"faiss"`` (exact inner-product search, ``faiss.IndexFlatIP``, on the CPU), ``"torch"``
    (similarity blocks of ``chunk_size`` rows and ``topk``, on ``device``) or ``None``: faiss when the rows are on
    the CPU and faiss imports, else torch. Both take the same neighbours, except where two similarities differ
    only by float rounding (each backend sums in its own order: equal cosines of two different rows may come out
    one unit in the last place apart, in either direction). ``"hnsw"`` is an *approximate* search
    (:func:`_hnsw_neighbours`: faiss's HNSW graph over the unit rows, on the CPU), for catalogues where the exact
    search is too slow: most rows get their exact neighbours, some a near one instead (tests/test_knn_cache.py
    bounds its recall@k against the exact graph).
    Memory: O(chunk_size · n) for one similarity block plus O(n · k) for the result, and one unit-row copy of
    ``features`` (in float32): the faiss search reads that copy in place.
    """
    x = torch.as_tensor(np.asarray(features) if not torch.is_tensor(features) else features)
    x = x.to(device or "cpu", torch.float32)
    n = len(x)
    if k <= 0 or n <= 1:
        return torch.empty(2, 0, dtype=torch.long)
    norms = x.norm(dim=1)
    valid = norms > 0
    if skip_first:
        valid[0] = False
    rows_all = torch.nonzero(valid).flatten()
    k_eff = min(k, int(valid.sum()) - 1)
    if k_eff <= 0:
        return torch.empty(2, 0, dtype=torch.long)
    asked = rows_all
    if queries is not None:  # the valid rows among them, each once, in order
        asked = torch.unique(torch.as_tensor(queries, dtype=torch.long).to(valid.device))
        asked = asked[(asked >= 0) & (asked < n)]
        asked = asked[valid[asked]]
    if backend is None:
        backend = "faiss" if x.device.type == "cpu" and _faiss() is not None else "torch"
    if backend in ("faiss", "hnsw"):  # one unit-row copy of the valid rows, searched as it is (no index copy of it)
        x = x[rows_all].div_(norms[rows_all].clamp_min(1e-12)[:, None])
    else:
        x = x / norms.clamp_min(1e-12)[:, None]
    chunks = range(0, len(asked), chunk_size)
    progress = show_progress if show_progress is not None else len(asked) > 50_000
    if progress:  # tqdm only when a bar is shown: the core imports torch and numpy only
        from tqdm.auto import tqdm

        chunks = tqdm(chunks, desc=f"kNN graph (k={k}, n={n})", unit="chunk")
    # faiss / hnsw: the asked rows' positions among the valid rows (x holds the valid rows only)
    at = torch.searchsorted(rows_all, asked) if queries is not None else None
    if backend == "faiss":
        top = _faiss_neighbours(x, rows_all, k_eff, chunks, chunk_size, at)
    elif backend == "hnsw":
        top = _hnsw_neighbours(x, rows_all, k_eff, chunks, chunk_size, at)
    elif backend == "torch":
        top = _torch_neighbours(x, asked, valid, k_eff, chunks, chunk_size)
    else:
        raise ValueError(f"backend must be 'faiss', 'hnsw', 'torch' or None, got {backend!r}")
    del x  # (the unit rows: not held through the union below)
    src = top.flatten().cpu()
    dst = asked.cpu().repeat_interleave(k_eff)
    if symmetric:
        src, dst = torch.cat([src, dst]), torch.cat([dst, src])
    # distinct (src, dst) pairs sorted by src then dst: torch.unique(edges, dim=1)'s result, through one int64 key
    # per pair (unique over dim=1 holds ~300 bytes per edge while it sorts)
    keys = torch.unique(src * n + dst)
    return torch.stack([keys // n, keys % n])


def _faiss():
    """The faiss module, or ``None`` where it does not import (an optional accelerator of :func:`knn_graph`)."""
    try:
        import faiss
    except ImportError:
        return None
    return faiss


def top_k_lowest(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Column indices [rows, k] of each row's ``k`` largest ``scores``; of the entries equal to a row's k-th
    value, the lowest columns (``topk`` alone may return any of them)."""
    values, top = scores.topk(k, dim=1)
    kth = values[:, -1:]
    ties = scores == kth
    taken = (values == kth).sum(1)
    open_rows = torch.nonzero(ties.sum(1) > taken).flatten()  # rows whose k-th value is shared beyond the top k
    if len(open_rows):
        t = ties[open_rows]
        first = t & (t.cumsum(1, dtype=torch.int32) <= taken[open_rows, None])
        keep = (scores[open_rows] > kth[open_rows]) | first  # exactly k per row
        top[open_rows] = torch.nonzero(keep)[:, 1].view(len(open_rows), k)
    return top


def _chunk_rows(start: int, chunk_size: int, n: int, positions: np.ndarray | None) -> np.ndarray:
    """The positions in the searched rows of one chunk of the rows asked for (``positions``: their positions,
    ``None``: all ``n`` rows in order)."""
    own = np.arange(start, min(start + chunk_size, n if positions is None else len(positions)))
    return own if positions is None else positions[own]


def _exact_rows(base: np.ndarray, rows: np.ndarray, k: int) -> np.ndarray:
    """The exact top-``k`` of ``rows`` (positions in the unit rows ``base``) among the other rows, of equal
    similarities the lowest positions: one similarity block and :func:`top_k_lowest`."""
    block = torch.from_numpy(base[rows]) @ torch.from_numpy(base).T
    block[torch.arange(len(rows)), torch.from_numpy(rows)] = -torch.inf
    return top_k_lowest(block, k).numpy()


#: the HNSW graph's settings (:func:`_hnsw_neighbours`); part of the kNN cache key of an approximate graph
HNSW = {"M": 32, "ef_construction": 200, "ef_search": 128}


def _hnsw_neighbours(x: torch.Tensor, rows_all: torch.Tensor, k: int, chunks, chunk_size: int,
                     at: torch.Tensor | None = None) -> torch.Tensor:
    """As :func:`_faiss_neighbours`, by an approximate search: faiss's ``IndexHNSWFlat`` (inner product over the
    unit rows ``x``; the settings of :data:`HNSW`, ``efSearch`` at least 4 (k + 1)). The index is built with one
    thread, so that the same rows give the same graph; a row whose search returns fewer than k others gets its
    exact neighbours. The index holds its own copy of the rows (memory: one more copy than the exact search)."""
    faiss = _faiss()
    if faiss is None:
        raise ImportError("knn_graph(backend='hnsw') needs faiss (pip install faiss-cpu)")
    base = np.ascontiguousarray(x.cpu().numpy(), dtype=np.float32)
    index = faiss.IndexHNSWFlat(base.shape[1], HNSW["M"], faiss.METRIC_INNER_PRODUCT)
    index.hnsw.efConstruction = HNSW["ef_construction"]
    threads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)  # insertion order decides the graph: one thread, one order
    try:
        index.add(base)
    finally:
        faiss.omp_set_num_threads(threads)
    index.hnsw.efSearch = max(HNSW["ef_search"], 4 * (k + 1))
    want = min(k + 1, len(base))
    positions = None if at is None else at.cpu().numpy()
    tops = []
    for start in chunks:
        own = _chunk_rows(start, chunk_size, len(base), positions)
        sims, found = index.search(base[own], want)
        sims = np.where((found == own[:, None]) | (found < 0), -np.inf, sims)  # itself, or nothing found
        order = np.lexsort((found, -sims), axis=1)
        sims, found = np.take_along_axis(sims, order, axis=1), np.take_along_axis(found, order, axis=1)
        top = found[:, :k]
        short = np.flatnonzero(np.isinf(sims[:, :k]).any(1))
        if len(short):  # fewer than k others found: the exact search for those rows
            top[short] = _exact_rows(base, own[short], k)
        tops.append(top)
    return rows_all.cpu()[torch.from_numpy(np.concatenate(tops))]


def _torch_neighbours(x: torch.Tensor, rows_all: torch.Tensor, valid: torch.Tensor, k: int, chunks,
                      chunk_size: int) -> torch.Tensor:
    """[len(rows_all), k] neighbour ids of the (unit) rows ``rows_all`` among the other ``valid`` rows."""
    invalid_cols = ~valid
    tops = []
    for start in chunks:
        rows = rows_all[start : start + chunk_size]
        sim = x[rows] @ x.T
        sim[:, invalid_cols] = -torch.inf
        sim[torch.arange(len(rows)), rows] = -torch.inf
        tops.append(top_k_lowest(sim, k))
    return torch.cat(tops)


def _faiss_neighbours(x: torch.Tensor, rows_all: torch.Tensor, k: int, chunks, chunk_size: int,
                      at: torch.Tensor | None = None) -> torch.Tensor:
    """As :func:`_torch_neighbours`, by exact inner-product search (``faiss.knn``, the search of
    ``faiss.IndexFlatIP``) over ``x``: the valid rows ``rows_all``, already unit rows, in their order. ``at``:
    the positions in ``x`` of the rows whose neighbours are wanted (default every row).

    Each row asks for k + 2 results and keeps the first k others by (similarity desc, index asc). Where the
    (k+1)-th equals the k-th, rows faiss did not return may share that similarity (of equal results faiss keeps
    any, not the lowest ids): such a row is scored in full (:func:`top_k_lowest` over one similarity row)."""
    faiss = _faiss()
    if faiss is None:
        raise ImportError("knn_graph(backend='faiss') needs faiss (pip install faiss-cpu)")
    base = np.ascontiguousarray(x.cpu().numpy(), dtype=np.float32)  # (no copy: x is the valid unit rows)
    want = min(k + 2, len(base))  # all rows when fewer: then nothing is left out
    tops = []
    positions = None if at is None else at.cpu().numpy()
    for start in chunks:
        own = _chunk_rows(start, chunk_size, len(base), positions)
        # faiss.knn is IndexFlatIP's search without the index's own copy of the rows (all rows: a view of them)
        sims, found = faiss.knn(base[own] if positions is not None else base[start : start + chunk_size], base,
                                want, metric=faiss.METRIC_INNER_PRODUCT)
        sims = np.where(found == own[:, None], -np.inf, sims)  # the row itself: last
        order = np.lexsort((found, -sims), axis=1)
        sims, found = np.take_along_axis(sims, order, axis=1), np.take_along_axis(found, order, axis=1)
        top = found[:, :k]
        shared = np.flatnonzero(sims[:, k] == sims[:, k - 1]) if want < len(base) else np.empty(0, dtype=np.int64)
        if len(shared):
            top[shared] = _exact_rows(base, own[shared], k)
        tops.append(top)
    return rows_all.cpu()[torch.from_numpy(np.concatenate(tops))]
