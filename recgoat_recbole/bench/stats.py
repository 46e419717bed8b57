"""Per-user test metrics in a run record, and the paired significance test of the benchmark tables.

A record keeps each test user's NDCG@10 and Recall@20 (:data:`recgoat_recbole.training.PER_USER_METRICS`) in
``per_user``, compactly (a few KB for thousands of users)::

    {"format": "u16-zlib-b64", "n": 2928,
     "user_id": <base64 of zlib of the user ids' first value and differences, int32 little-endian>,
     "ndcg@10": <base64 of zlib of round(value * 65535), uint16 little-endian>, ...}

The values are quantised to 1/65535 (a user's NDCG@10 is off by at most 7.7e-6); ``user_id`` is RecBole's
internal id (the same for every model on one dataset config and split).

A record of a test split with cold items (items without a train interaction) keeps the same per-user values for
each slice of :data:`recgoat_recbole.training.COLD_SLICES` in ``cold.per_user.<slice>`` (each over its own
users: those with a positive of the slice); :func:`slice_records` makes them records of their own for the test.

The test (:func:`paired_test`): for two models on one dataset, each user's metric averaged over the model's
seeds, then a two-sided Wilcoxon signed-rank test over the users (both models must have the same test users) (ties, users with equal values,
dropped: ``zero_method="wilcox"``). Pooling the seeds per user pairs the same users under both models and
keeps the seed noise in each user's value; the seeds themselves are too few (3) for a test of their own.
"""

from __future__ import annotations

import base64
import math
import zlib
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

__all__ = ["FORMAT", "encode_per_user", "decode_per_user", "user_means", "PairedTest", "paired_test",
           "slice_records"]

FORMAT = "u16-zlib-b64"
_SCALE = 65535


def _pack(array: np.ndarray) -> str:
    return base64.b64encode(zlib.compress(array.tobytes(), 9)).decode("ascii")


def _unpack(text: str, dtype: str) -> np.ndarray:
    return np.frombuffer(zlib.decompress(base64.b64decode(text.encode("ascii"))), dtype=dtype)


def encode_per_user(per_user: dict[str, Any] | None) -> dict[str, Any] | None:
    """The record form of :func:`recgoat_recbole.training.per_user_metrics`' output (see the module docstring)."""
    if not per_user:
        return None
    users = np.asarray(per_user["user_id"], dtype=np.int64)
    order = np.argsort(users, kind="stable")
    users = users[order]
    out: dict[str, Any] = {"format": FORMAT, "n": int(len(users)),
                           "user_id": _pack(np.diff(users, prepend=0).astype("<i4"))}
    for name, values in per_user.items():
        if name == "user_id":
            continue
        values = np.clip(np.asarray(values, dtype=np.float64)[order], 0.0, 1.0)
        out[name] = _pack(np.rint(values * _SCALE).astype("<u2"))
    return out


def decode_per_user(packed: dict[str, Any] | None) -> dict[str, np.ndarray] | None:
    """``{"user_id": int64 array, metric: float64 array}`` from a record's ``per_user``; ``None`` for a record
    without one. Raises ``ValueError`` for a damaged one."""
    if not packed:
        return None
    if packed.get("format") != FORMAT:
        raise ValueError(f"per_user: unknown format {packed.get('format')!r} (expected {FORMAT})")
    try:
        users = np.cumsum(_unpack(packed["user_id"], "<i4").astype(np.int64))
        out = {"user_id": users}
        for name, text in packed.items():
            if name in ("format", "n", "user_id"):
                continue
            values = _unpack(text, "<u2").astype(np.float64) / _SCALE
            if len(values) != len(users):
                raise ValueError(f"per_user[{name!r}] has {len(values)} values for {len(users)} users")
            out[name] = values
    except (KeyError, TypeError, zlib.error, base64.binascii.Error) as exc:
        raise ValueError(f"per_user: damaged ({exc})") from None
    if len(users) != packed.get("n"):
        raise ValueError(f"per_user: {len(users)} users, the record says {packed.get('n')}")
    return out


def user_means(records: Sequence[dict], metric: str) -> tuple[np.ndarray, np.ndarray] | None:
    """``(user ids, each user's ``metric`` averaged over the records)``, over the users every record has;
    ``None`` when a record has no per-user values for ``metric``."""
    decoded = [decode_per_user(r.get("per_user")) for r in records]
    if not decoded or any(d is None or metric not in d for d in decoded):
        return None
    common = decoded[0]["user_id"]
    for d in decoded[1:]:
        common = np.intersect1d(common, d["user_id"])
    total = np.zeros(len(common))
    for d in decoded:
        total += d[metric][np.searchsorted(d["user_id"], common)]
    return common, total / len(decoded)


@dataclass(frozen=True)
class PairedTest:
    """A paired test of model ``a`` against ``b`` on ``metric``: ``delta`` = mean(a) - mean(b) over ``users``
    (per-user means over seeds), ``p`` the two-sided Wilcoxon signed-rank p-value (NaN when every user ties)."""

    metric: str
    users: int
    delta: float
    p: float

    @property
    def significant(self) -> bool:
        return not math.isnan(self.p) and self.p < 0.05


def paired_test(a: Sequence[dict], b: Sequence[dict], metric: str = "ndcg@10") -> PairedTest | None:
    """Model ``a``'s runs against model ``b``'s on the same test users (see the module docstring). ``None`` when
    either has no per-user values or their test users differ (another split)."""
    from scipy.stats import wilcoxon

    ma, mb = user_means(a, metric), user_means(b, metric)
    if ma is None or mb is None:
        return None
    if len(ma[0]) == 0 or not np.array_equal(ma[0], mb[0]):
        return None
    users, x, y = ma[0], ma[1], mb[1]
    delta = float(np.mean(x) - np.mean(y))
    if np.all(x == y):
        return PairedTest(metric, len(users), delta, float("nan"))
    p = float(wilcoxon(x, y, zero_method="wilcox", alternative="two-sided").pvalue)
    return PairedTest(metric, len(users), delta, p)


def slice_records(records: Sequence[dict], name: str) -> list[dict]:
    """``records`` with the per-user values of their cold-item slice ``name`` (``cold``, ``among_cold``,
    ``warm``) as ``per_user``, for :func:`user_means` and :func:`paired_test`; a record without that slice gets
    ``per_user`` None (so a test of it is None)."""
    out = []
    for r in records:
        cold = r.get("cold")
        per_user = cold.get("per_user") if isinstance(cold, dict) else None
        packed = per_user.get(name) if isinstance(per_user, dict) else None
        out.append({"per_user": packed})
    return out
