"""The feature-file format, and the alignment of its rows to RecBole's internal ids *by token*.

Two layouts are read:

- ``.npy`` -- MMRec's convention: a float [n, dim] array whose row r is the item (or user) with token ``r``
  (``"0"``, ``"1"``, ...). A sidecar text file ``<file>.ids`` (one token per line) overrides that convention.
- ``.npz`` -- what ``recgoat features`` writes: ``features`` float [n, dim], ``ids`` the n tokens (strings),
  and optionally ``mask`` (bool [n], False where a row is a fallback, e.g. an unreadable image).

Rows are never matched by position to RecBole ids: RecBole remaps tokens to ids in order of appearance and
drops filtered users/items, so :func:`align_rows` looks every id's token up in the file.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Sequence

import numpy as np

__all__ = ["FeatureFile", "FeatureFileError", "read_features", "write_features", "align_rows",
           "file_fingerprint"]

logger = logging.getLogger(__name__)


class FeatureFileError(ValueError):
    """A feature file that cannot be used; the message names the file and the problem."""


@dataclass
class FeatureFile:
    path: str
    tokens: np.ndarray  # [n] str
    features: np.ndarray  # [n, dim] float32
    mask: np.ndarray | None = None  # [n] bool


def read_features(path: str | os.PathLike) -> FeatureFile:
    """Read and validate a ``.npy`` / ``.npz`` feature file (see the module docstring)."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FeatureFileError(f"feature file not found: {path}")
    mask = None
    try:
        if path.endswith(".npz"):
            with np.load(path, allow_pickle=False) as data:
                missing = {"ids", "features"} - set(data.files)
                if missing:
                    raise FeatureFileError(f"{path}: .npz feature file lacks {sorted(missing)} (has {data.files})")
                features, tokens = data["features"], data["ids"].astype(str)
                mask = data["mask"].astype(bool) if "mask" in data.files else None
        else:
            features = np.load(path, allow_pickle=False)
            sidecar = path + ".ids"
            if os.path.isfile(sidecar):
                with open(sidecar, encoding="utf-8") as f:
                    tokens = np.array([line.rstrip("\n") for line in f if line.strip()], dtype=str)
            else:
                tokens = np.arange(len(features)).astype(str) if features.ndim >= 1 else np.array([], dtype=str)
    except (ValueError, OSError) as exc:
        if isinstance(exc, FeatureFileError):
            raise
        raise FeatureFileError(f"{path}: cannot read as a numpy feature file ({exc})") from exc
    if features.ndim != 2:
        raise FeatureFileError(f"{path}: features must be a 2-d [rows, dim] array, got shape {features.shape}")
    if not (np.issubdtype(features.dtype, np.floating) or np.issubdtype(features.dtype, np.integer)):
        raise FeatureFileError(f"{path}: features must be numeric, got dtype {features.dtype}")
    if len(tokens) != len(features):
        raise FeatureFileError(f"{path}: {len(features)} feature rows but {len(tokens)} tokens")
    if mask is not None and len(mask) != len(features):
        raise FeatureFileError(f"{path}: {len(features)} feature rows but a mask of {len(mask)}")
    features = features.astype(np.float32, copy=False)
    bad = ~np.isfinite(features).all(axis=1)
    if bad.any():
        raise FeatureFileError(
            f"{path}: {int(bad.sum())} rows contain NaN or Inf (first: token {tokens[np.argmax(bad)]!r})"
        )
    unique, counts = np.unique(tokens, return_counts=True)
    if (counts > 1).any():
        raise FeatureFileError(
            f"{path}: duplicate tokens, e.g. {unique[counts > 1][:5].tolist()} ({int((counts > 1).sum())} in all)"
        )
    return FeatureFile(path, tokens, features, mask)


def write_features(path: str | os.PathLike, tokens: Sequence[str], features: np.ndarray,
                   mask: np.ndarray | None = None) -> str:
    """Write a ``.npz`` feature file (tokens kept); returns the path written."""
    path = os.fspath(path)
    if not path.endswith(".npz"):
        raise ValueError(f"feature files are written as .npz, got {path}")
    features = np.asarray(features, dtype=np.float32)
    tokens = np.asarray([str(t) for t in tokens])
    if features.ndim != 2 or len(features) != len(tokens):
        raise ValueError(f"features {features.shape} do not match {len(tokens)} tokens")
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    arrays = {"ids": tokens, "features": features}
    if mask is not None:
        arrays["mask"] = np.asarray(mask, dtype=bool)
    tmp = path + ".tmp.npz"
    np.savez(tmp, **arrays)
    os.replace(tmp, path)
    return path


def align_rows(file: FeatureFile, id_tokens: Sequence[str], missing: str = "error", what: str = "item",
               skip_first: bool = True) -> np.ndarray:
    """Rows of ``file`` in RecBole id order: result[i] is the row whose token is ``id_tokens[i]``.

    ``id_tokens`` is RecBole's ``field2id_token`` (index 0 is ``[PAD]`` when ``skip_first``; its row is 0).
    ``missing``: ``"error"`` raises when an id has no row; ``"zero"`` fills zeros and logs the count.
    """
    if missing not in ("error", "zero"):
        raise ValueError(f"missing must be 'error' or 'zero', got {missing!r}")
    index = {t: r for r, t in enumerate(file.tokens.tolist())}
    ids = list(id_tokens)
    start = 1 if skip_first else 0
    rows = np.array([index.get(str(t), -1) for t in ids[start:]], dtype=np.int64)
    absent = rows < 0
    if absent.any():
        examples = [ids[start + i] for i in np.flatnonzero(absent)[:5]]
        msg = (f"{file.path}: {int(absent.sum())} of {len(rows)} dataset {what}s have no feature row "
               f"(e.g. tokens {examples})")
        if missing == "error":
            raise FeatureFileError(msg + "; set missing_features: zero to fill them with zeros")
        logger.warning(msg + "; filled with zeros")
    out = np.zeros((len(ids), file.features.shape[1]), dtype=np.float32)
    out[start:][~absent] = file.features[rows[~absent]]
    return out


def file_fingerprint(path: str | os.PathLike) -> str:
    """``absolute path|size|mtime`` of a file: part of a cache key, so a changed input is not reused."""
    stat = os.stat(path)
    return f"{os.path.abspath(path)}|{stat.st_size}|{int(stat.st_mtime)}"
