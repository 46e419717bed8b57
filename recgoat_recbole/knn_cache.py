"""The kNN graphs of the models (item–item per modality, user–user over profiles, the alignment gate's), built
once per feature contents and reused by every later run and tune point: the one kNN builder of the adapter.

:func:`knn_edges` is :func:`recgoat_core.graphs.knn_graph` through a cache file
``<feature_cache_dir>/<dataset>/knn-<hash>.npz``. ``hash`` covers a format version, the sha256 of the feature
matrix exactly as the model holds it (float32 bytes, after ``feature_norm``, rows in RecBole id order), its shape,
``k`` and every option that changes the graph (``symmetric``, ``skip_first``, the query rows, the approximate
search ``knn_search: hnsw`` with its settings). The exact backend, the device and
``knn_chunk_size`` are not in it: they take the same neighbours (up to float rounding: ``knn_graph``'s
docstring), so a graph built on a GPU is read back on the CPU and the reverse. Each build and each reuse is one
INFO line::

    item kNN graph (text, k=10): reused from recgoat_cache/ml-100k/knn-<hash>.npz
    item kNN graph (text, k=10): built in <seconds> s, cached at recgoat_cache/ml-100k/knn-<hash>.npz

The file is an ``.npz`` (written through a temporary file and renamed into place) of ``edges`` int64 [2, E],
``key`` (the full cache key) and ``mac``, an HMAC-SHA256 of both under this user's key
(:mod:`recgoat_recbole.signing`). It is read with ``allow_pickle=False``, its members checked before they are
read (:func:`recgoat_core.feature_files.read_npz_members`) and used only when the MAC verifies, the key is this
graph's and every edge is a valid pair of distinct rows; any other file (damaged, edited, planted, another
user's) is one warning line, and the graph is built again and the file replaced. A cache that cannot be written
(read-only folder, full disk, unusable signing key) is a warning; the run goes on with the graph it built.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
import zipfile
import zlib
from typing import Any

import numpy as np
import torch

from recgoat_core.feature_files import FeatureFileError, atomic_write, read_npz_members
from recgoat_core.graphs import HNSW, knn_graph
from recgoat_recbole.config_check import config_value

__all__ = ["FORMAT", "knn_edges", "cached_knn_graph", "graph_key", "cache_folder"]

logger = logging.getLogger(__name__)

#: the cache format; part of every key, so a file of another format is never found
FORMAT = "recgoat-knn-1"
_MEMBERS = {
    "edges": ("iu", "edges must be integers, got dtype {}"),
    "key": ("U", "key must be a string, got dtype {}"),
    "mac": ("U", "mac must be a string, got dtype {}"),
}
_READ_ERRORS = (FeatureFileError, ValueError, OSError, EOFError, KeyError, zipfile.BadZipFile, zlib.error)


def cache_folder(config: Any) -> str:
    """Where a run's kNN graphs are cached: ``<feature_cache_dir>/<dataset>`` (the feature caches' folder)."""
    return os.path.join(config["feature_cache_dir"] or "recgoat_cache", str(config["dataset"]))


def knn_edges(config: Any, features: torch.Tensor, k: int, kind: str, name: str, symmetric: bool = True,
              skip_first: bool = True, device: str | torch.device | None = None,
              queries: torch.Tensor | None = None) -> torch.Tensor:
    """``knn_graph(features, k, config["knn_chunk_size"], symmetric, skip_first, device, queries=queries)``
    through the cache of the run's :func:`cache_folder`; ``kind`` / ``name`` label its log line (``item`` /
    ``text``). ``knn_search: hnsw`` in the config: the approximate search (``backend="hnsw"``)."""
    search = config_value(config, "knn_search") or "exact"
    label = f"{kind} kNN graph ({name}, k={k}{'' if symmetric else ', directed'}" \
            f"{'' if queries is None else f', {len(queries)} query rows'}{', approximate: hnsw' if search == 'hnsw' else ''})"
    return cached_knn_graph(features, k, cache_folder(config), label,
                            chunk_size=config["knn_chunk_size"] or 2048, symmetric=symmetric,
                            skip_first=skip_first, device=device, queries=queries, approximate=search == "hnsw")


def graph_key(features: torch.Tensor, k: int, symmetric: bool, skip_first: bool,
              queries: torch.Tensor | None = None, approximate: bool = False) -> str:
    """The cache key of a graph: format, sha256 of the float32 matrix bytes, shape, ``k`` and the options (with
    ``queries``, the sha256 of their int64 bytes; the key of a whole graph has no such part)."""
    x = np.ascontiguousarray(torch.as_tensor(features).detach().cpu().numpy(), dtype=np.float32)
    digest = hashlib.sha256(memoryview(x).cast("B")).hexdigest()
    key = (f"{FORMAT}|features=sha256:{digest}|shape={x.shape[0]}x{x.shape[1] if x.ndim > 1 else 0}|k={k}"
           f"|symmetric={bool(symmetric)}|skip_first={bool(skip_first)}")
    if approximate:  # another graph than the exact one: its own key, with the HNSW settings
        key += "|search=hnsw(" + ",".join(f"{name}={value}" for name, value in sorted(HNSW.items())) + ")"
    if queries is not None:
        q = np.ascontiguousarray(torch.as_tensor(queries).detach().cpu().numpy(), dtype="<i8")
        key += f"|queries=sha256:{hashlib.sha256(memoryview(q).cast('B')).hexdigest()}"
    return key


def cached_knn_graph(features: torch.Tensor | np.ndarray, k: int, folder: str, label: str, chunk_size: int = 2048,
                     symmetric: bool = True, skip_first: bool = True,
                     device: str | torch.device | None = None, queries: torch.Tensor | None = None,
                     approximate: bool = False) -> torch.Tensor:
    """:func:`knn_graph` of ``features``, read from ``folder`` when a valid cache file of the same key is there,
    else built and written there (the module docstring); ``label`` starts the log lines."""
    x = torch.as_tensor(np.asarray(features) if not torch.is_tensor(features) else features, dtype=torch.float32)
    backend = "hnsw" if approximate else None
    if k <= 0 or len(x) <= 1:  # no edges: nothing to cache
        return knn_graph(x, k, chunk_size, symmetric=symmetric, skip_first=skip_first, device=device,
                         queries=queries, backend=backend)
    key = graph_key(x, k, symmetric, skip_first, queries, approximate)
    path = os.path.join(folder, f"knn-{hashlib.sha256(key.encode()).hexdigest()[:32]}.npz")
    if os.path.lexists(path):
        edges = _read(path, key, len(x), label)
        if edges is not None:
            logger.info(f"{label}: reused from {path}")
            return edges
    start = time.perf_counter()
    edges = knn_graph(x, k, chunk_size, symmetric=symmetric, skip_first=skip_first, device=device,
                      queries=queries, backend=backend)
    took = time.perf_counter() - start
    try:
        _write(path, key, edges)
    except (OSError, ValueError) as exc:  # a cache that cannot be written (full disk, KeyFileError) is no error
        logger.warning(f"{label}: built in {took:.1f} s, not cached ({type(exc).__name__}: {exc})")
        return edges
    logger.info(f"{label}: built in {took:.1f} s, cached at {path}")
    return edges


def _payload(key: str, edges: np.ndarray) -> bytes:
    """What the MAC covers: the key, the shape and the little-endian int64 edge bytes."""
    return f"{key}\n{edges.shape[0]}x{edges.shape[1]}\n".encode() + edges.astype("<i8").tobytes()


def _write(path: str, key: str, edges: torch.Tensor) -> None:
    from recgoat_recbole.signing import sign

    e = np.ascontiguousarray(edges.cpu().numpy().astype("<i8"))
    arrays = {"edges": e, "key": np.asarray(key), "mac": np.asarray(sign(_payload(key, e)))}
    atomic_write(path, lambda f: np.savez(f, **arrays), suffix=".tmp.npz")


def _read(path: str, key: str, n: int, label: str) -> torch.Tensor | None:
    """The edges in the cache file ``path``, or ``None`` (with one warning) when it is not a valid file of
    ``key`` over ``n`` rows signed by this user."""
    from recgoat_recbole.signing import KeyFileError, verify

    try:
        if not os.path.isfile(path) or os.path.islink(path):
            raise FeatureFileError(f"{path} is not a regular file")
        arrays = read_npz_members(path, _MEMBERS, required=tuple(_MEMBERS), what="kNN graph cache")
        edges, stored_key, mac = arrays["edges"], arrays["key"], arrays["mac"]
        if stored_key.shape != () or mac.shape != ():
            raise FeatureFileError("key and mac must be single strings")
        if edges.ndim != 2 or edges.shape[0] != 2 or edges.dtype != np.dtype("<i8"):
            raise FeatureFileError(f"edges must be int64 [2, E], got {edges.dtype} {edges.shape}")
        if str(stored_key) != key:
            raise FeatureFileError("it holds another graph (its key differs)")
        if not verify(_payload(key, edges), str(mac)):
            raise FeatureFileError("its signature does not verify (not written by this user's runs, or edited)")
        if edges.size and (edges.min() < 0 or edges.max() >= n or (edges[0] == edges[1]).any()):
            raise FeatureFileError(f"edges outside rows 0..{n - 1} or self-loops")
    except KeyFileError as exc:
        logger.warning(f"{label}: cache {path} not read ({exc})")
        return None
    except _READ_ERRORS as exc:
        reason = str(exc).replace(f"{path}: ", "")
        logger.warning(f"{label}: cache {path} rejected ({' '.join(reason.split())}); building the graph again")
        return None
    return torch.from_numpy(np.array(edges, dtype=np.int64))
