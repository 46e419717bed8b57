"""The graphs RecGOAT propagates over, built once from the training split and frozen.

- :func:`bipartite_adjacency` -- the user–item graph D^-1/2 A D^-1/2 (optionally rating-weighted);
- :func:`rating_weights` -- "rating attention": per-user softmax of ratings, rescaled to mean 1;
- :func:`knn_graph` -- cosine top-k neighbours (item–item per modality, user–user over profiles), computed
  in row chunks so memory is O(n·k + chunk·n), never a dense n×n matrix.
"""

from __future__ import annotations

import logging

import numpy as np
import torch

__all__ = ["bipartite_adjacency", "normalized_adjacency", "rating_weights", "knn_graph"]

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
) -> torch.Tensor:
    """Cosine top-``k`` neighbour graph of the rows of ``features``, as ``edge_index`` [2, E] (src, dst).

    Self-neighbours are excluded; rows that are all zero (padding, missing features) get no edges.
    ``skip_first`` leaves out row 0 (RecBole's padding id). With ``symmetric`` the union of i→j and j→i.
    Memory: O(chunk_size · n) for one similarity block plus O(n · k) for the result.
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
    x = x / norms.clamp_min(1e-12)[:, None]
    rows_all = torch.nonzero(valid).flatten()
    k_eff = min(k, int(valid.sum()) - 1)
    if k_eff <= 0:
        return torch.empty(2, 0, dtype=torch.long)
    invalid_cols = ~valid
    srcs, dsts = [], []
    chunks = range(0, len(rows_all), chunk_size)
    progress = show_progress if show_progress is not None else len(rows_all) > 50_000
    if progress:  # tqdm only when a bar is shown: the core imports torch and numpy only
        from tqdm.auto import tqdm

        chunks = tqdm(chunks, desc=f"kNN graph (k={k}, n={n})", unit="chunk")
    for start in chunks:
        rows = rows_all[start : start + chunk_size]
        sim = x[rows] @ x.T
        sim[:, invalid_cols] = -torch.inf
        sim[torch.arange(len(rows)), rows] = -torch.inf
        top = sim.topk(k_eff, dim=1).indices
        srcs.append(top.flatten())
        dsts.append(rows.repeat_interleave(k_eff))
    src = torch.cat(srcs).cpu()
    dst = torch.cat(dsts).cpu()
    if symmetric:
        src, dst = torch.cat([src, dst]), torch.cat([dst, src])
    edges = torch.unique(torch.stack([src, dst]), dim=1)
    return edges
