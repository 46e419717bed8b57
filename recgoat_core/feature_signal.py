r"""Does a modality carry collaborative signal? The co-occurrence lift of its feature neighbours.

For the items with training interactions, let :math:`N_k(i)` be the k nearest neighbours of item i by cosine
similarity of the modality's features, and :math:`\mathrm{co}(i, j)` whether some training user interacted
with both i and j. Then

.. math::
    \mathrm{lift} = \frac{P\big(\mathrm{co}(i, j) \mid j \in N_k(i)\big)}{P\big(\mathrm{co}(i, j) \mid j \text{ uniform}\big)},

estimated on (at most) ``max_pairs`` kNN edges and as many uniformly drawn pairs. When the whole graph has at most
``max_pairs`` directed edges (items × k), the edges are those of the symmetric graph (a random ``max_pairs`` of
them when there are more); beyond that, the neighbours of ``max_pairs // k`` items drawn at random (their directed
edges), so that the kNN search covers those items only instead of all of them (at the Electronics shape, 5,000
query items of 63,001: the search is what costs). A lift near 1 means the
features' neighbourhoods say nothing about who consumes what. Only the training split is read, so the
statistic can choose model settings without touching validation or test.
"""

from __future__ import annotations

from typing import Callable

import torch

from recgoat_core.graphs import knn_graph

__all__ = ["cooccurrence_lift", "shares_user"]


def shares_user(keys: torch.Tensor, start: torch.Tensor, n_users: int, a: torch.Tensor,
                b: torch.Tensor) -> torch.Tensor:
    """Whether items ``a[p]`` and ``b[p]`` have a common user, for each pair p.

    ``keys`` are the sorted distinct ``item * n_users + user`` of the interactions, ``start[i]`` the first
    position of item i in ``keys`` (``start[n_items]`` = ``len(keys)``).
    """
    deg = start[a + 1] - start[a]
    total = int(deg.sum())
    if total == 0:
        return torch.zeros(len(a), dtype=torch.bool)
    pair = torch.repeat_interleave(torch.arange(len(a)), deg)
    offset = torch.arange(total) - torch.repeat_interleave(torch.cumsum(deg, 0) - deg, deg)
    users = keys[torch.repeat_interleave(start[a], deg) + offset] % n_users
    query = b[pair] * n_users + users
    pos = torch.searchsorted(keys, query).clamp_max(len(keys) - 1)
    hits = (keys[pos] == query).to(torch.float64)
    return torch.zeros(len(a), dtype=torch.float64).index_add_(0, pair, hits) > 0


def cooccurrence_lift(features: torch.Tensor, users: torch.Tensor, items: torch.Tensor, k: int = 10,
                      max_pairs: int = 50_000, chunk_size: int = 2048, seed: int = 0,
                      knn: Callable[[torch.Tensor, int, int], torch.Tensor] | None = None) -> float:
    """The lift of the module docstring for ``features`` [n_items, d] (row = item id) and the training
    interactions ``(users, items)``; ``nan`` when there are fewer than two items with interactions.
    ``knn(x, k, chunk_size, queries=None, symmetric=True)`` builds the neighbour graph of the items with
    interactions (:func:`knn_graph`'s contract over all its rows, e.g. a cached one; default :func:`knn_graph`
    with ``skip_first=False``); ``queries`` / ``symmetric`` are passed when only some rows' neighbours are
    searched (the module docstring)."""
    users, items = users.long().cpu(), items.long().cpu()
    n_items, n_users = len(features), int(users.max()) + 1 if len(users) else 1
    keys = torch.unique(items * n_users + users)  # sorted
    start = torch.searchsorted(keys, torch.arange(n_items + 1) * n_users)
    warm = torch.nonzero(start[1:] > start[:-1]).flatten()
    if len(warm) < 2:
        return float("nan")
    generator = torch.Generator().manual_seed(seed)
    if knn is None:  # every row is an item (row 0 too: the padding row is not among the items with interactions)
        def knn(x: torch.Tensor, k: int, chunk_size: int, queries: torch.Tensor | None = None,
                symmetric: bool = True) -> torch.Tensor:
            return knn_graph(x, k, chunk_size, skip_first=False, queries=queries, symmetric=symmetric)
    x = torch.as_tensor(features, dtype=torch.float32)
    first, last = int(warm[0]), int(warm[-1])
    # the warm rows: a view where they are one run of rows (usually 1..n-1, all but the padding), else a copy
    x = x[first : last + 1] if last - first + 1 == len(warm) else x[warm]
    k = min(k, len(warm) - 1)
    if len(warm) * k <= max_pairs:  # the whole graph
        edges = knn(x, k, chunk_size)
        if edges.shape[1] > max_pairs:
            edges = edges[:, torch.randperm(edges.shape[1], generator=generator)[:max_pairs]]
    else:  # the neighbours of a random max_pairs // k of the items
        queries = torch.randperm(len(warm), generator=generator)[: max(1, max_pairs // k)].sort().values
        edges = knn(x, k, chunk_size, queries=queries, symmetric=False)
    a, b = warm[edges[0]], warm[edges[1]]
    ra = warm[torch.randint(len(warm), (len(a),), generator=generator)]
    rb = warm[torch.randint(len(warm), (len(a),), generator=generator)]
    near = shares_user(keys, start, n_users, a, b).double().mean()
    rand = shares_user(keys, start, n_users, ra, rb).double().mean()
    return float(near / rand.clamp_min(1.0 / len(a)))
