"""Import MMRec- or LightGCN-layout datasets into RecBole atomic files that keep their fixed split.

Output, in ``DST/<name>/``:

- ``<name>.train.inter``, ``<name>.valid.inter``, ``<name>.test.inter`` (``user_id:token item_id:token``,
  plus ``rating:float`` / ``timestamp:float`` when the source has them), read by RecBole through
  ``benchmark_filename: [train, valid, test]`` -- the source's own split, untouched;
- ``<modality>.npz`` per feature file (``ids`` = item tokens, rows in item-id order);
- ``<name>.yaml`` -- a RecBole config for RecGOAT on it (data path, split, modalities, full-ranking eval).

Layouts:

- ``mmrec``: ``<name>.inter`` (TSV, header ``userID itemID x_label`` [+ ``rating``, ``timestamp``]; x_label 0 =
  train, 1 = valid, 2 = test) and ``<modality>_feat.npy`` (row r = itemID r).
- ``lightgcn``: ``train.txt`` / ``valid.txt`` (optional) / ``test.txt``, one user per line: ``u i1 i2 ...``;
  features by ``--feature name=file.npy`` (row r = item r).

Checks: ids must be non-negative integers; a feature file needs a row for every item id used (more rows are
fine: items that never occur are kept as feature rows only); duplicate (user, item) pairs are dropped, keeping
the first by split order (train, valid, test), and counted in the returned report; an empty train or test split
is an error (an empty valid split is allowed).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import yaml

from recgoat_recbole.features.store import write_features

__all__ = ["ImportError_", "ImportReport", "import_mmrec", "import_lightgcn", "SPLITS"]

logger = logging.getLogger(__name__)
SPLITS = ("train", "valid", "test")


class ImportError_(ValueError):
    """The source cannot be imported as it is; the message says which file and why."""


@dataclass
class ImportReport:
    name: str
    folder: str
    config: str
    users: int
    items: int
    interactions: dict[str, int]
    duplicates_dropped: int
    modalities: dict[str, str] = field(default_factory=dict)

    def __str__(self) -> str:
        parts = ", ".join(f"{k} {v:,}" for k, v in self.interactions.items())
        extra = f"; dropped {self.duplicates_dropped} duplicate pairs" if self.duplicates_dropped else ""
        mods = ", ".join(self.modalities) or "none"
        return (f"{self.name}: {self.users:,} users, {self.items:,} items, interactions {parts}{extra}; "
                f"modalities: {mods}; config: {self.config}")


def _check_ids(values: pd.Series, what: str, source: str) -> np.ndarray:
    numeric = pd.to_numeric(values, errors="coerce")
    if numeric.isna().any() or (numeric < 0).any() or (numeric % 1 != 0).any():
        bad = values[numeric.isna() | (numeric < 0) | (numeric % 1 != 0)].iloc[0]
        raise ImportError_(f"{source}: {what} must be non-negative integers, found {bad!r}")
    return numeric.astype(np.int64).to_numpy()


def _write(frame: pd.DataFrame, name: str, dst: str, features: dict[str, str], source: str,
           n_items_hint: int | None = None) -> ImportReport:
    for split in ("train", "test"):
        if not (frame["split"] == split).any():
            raise ImportError_(f"{source}: the {split} split is empty")
    before = len(frame)
    order = {s: k for k, s in enumerate(SPLITS)}
    frame = frame.assign(_o=frame["split"].map(order)).sort_values("_o", kind="stable")
    frame = frame.drop_duplicates(["user", "item"], keep="first").drop(columns="_o")
    dropped = before - len(frame)
    if dropped:
        logger.warning(f"{source}: dropped {dropped} duplicate (user, item) pairs, keeping the first by split")
    max_item = int(frame["item"].max())
    folder = os.path.join(dst, name)
    os.makedirs(folder, exist_ok=True)
    modalities = {}
    n_items = max(max_item + 1, n_items_hint or 0)
    for modality, path in features.items():
        if not os.path.isfile(path):
            raise ImportError_(f"feature file not found: {path}")
        feats = np.load(path, allow_pickle=False)
        if feats.ndim != 2:
            raise ImportError_(f"{path}: features must be 2-d, got shape {feats.shape}")
        if len(feats) <= max_item:
            raise ImportError_(f"{path}: {len(feats)} feature rows but item ids go up to {max_item}")
        if not np.isfinite(feats).all():
            raise ImportError_(f"{path}: contains NaN or Inf")
        n_items = max(n_items, len(feats))
        out = write_features(os.path.join(folder, f"{modality}.npz"), [str(i) for i in range(len(feats))],
                             feats.astype(np.float32))
        modalities[modality] = os.path.basename(out)
    extra = [c for c in ("rating", "timestamp") if c in frame.columns]
    header = ["user_id:token", "item_id:token"] + [f"{c}:float" for c in extra]
    counts = {}
    for split in SPLITS:
        part = frame[frame["split"] == split][["user", "item", *extra]]
        counts[split] = len(part)
        path = os.path.join(folder, f"{name}.{split}.inter")
        part.to_csv(path, sep="\t", header=header, index=False)
    config = {
        "dataset": name,
        "data_path": os.path.abspath(dst),
        "benchmark_filename": list(SPLITS),
        "load_col": {"inter": ["user_id", "item_id", *extra]},
        "item_modalities": modalities or None,
        # RecBole slices benchmark files by their sizes: no interaction may be filtered out
        "filter_inter_by_user_or_item": False,
        "user_inter_num_interval": None,
        "item_inter_num_interval": None,
        "eval_args": {"group_by": "user", "order": "RO", "mode": "full"},
        "metrics": ["Recall", "NDCG"],
        "topk": [10, 20],
        "valid_metric": "NDCG@10",
    }
    config_path = os.path.join(folder, f"{name}.yaml")
    with open(config_path, "w", encoding="utf-8") as f:
        f.write(f"# generated by `recgoat data import` from {source}\n")
        yaml.safe_dump(config, f, sort_keys=False)
    report = ImportReport(name, folder, config_path, int(frame["user"].nunique()), n_items, counts, dropped,
                          modalities)
    logger.info(str(report))
    return report


def import_mmrec(src: str, dst: str, name: str | None = None, inter_file: str | None = None) -> ImportReport:
    """Import an MMRec dataset folder (see the module docstring)."""
    if not os.path.isdir(src):
        raise ImportError_(f"source folder not found: {src}")
    if inter_file is None:
        candidates = sorted(f for f in os.listdir(src) if f.endswith(".inter"))
        if len(candidates) != 1:
            raise ImportError_(f"{src}: expected exactly one *.inter file, found {candidates or 'none'}")
        inter_file = candidates[0]
    path = os.path.join(src, inter_file)
    name = name or os.path.splitext(inter_file)[0]
    raw = pd.read_csv(path, sep="\t", dtype=str)
    required = {"userID", "itemID", "x_label"}
    if not required <= set(raw.columns):
        raise ImportError_(f"{path}: needs columns {sorted(required)}, has {list(raw.columns)}")
    labels = _check_ids(raw["x_label"], "x_label", path)
    if not np.isin(labels, [0, 1, 2]).all():
        raise ImportError_(f"{path}: x_label must be 0 (train), 1 (valid) or 2 (test)")
    frame = pd.DataFrame({
        "user": _check_ids(raw["userID"], "userID", path),
        "item": _check_ids(raw["itemID"], "itemID", path),
        "split": np.array(SPLITS)[labels],
    })
    for col in ("rating", "timestamp"):
        if col in raw.columns:
            frame[col] = pd.to_numeric(raw[col], errors="raise")
    features = {f[: -len("_feat.npy")]: os.path.join(src, f) for f in sorted(os.listdir(src))
                if f.endswith("_feat.npy")}
    return _write(frame, name, dst, features, path)


def import_lightgcn(src: str, dst: str, name: str | None = None,
                    features: dict[str, str] | None = None) -> ImportReport:
    """Import a LightGCN-layout folder (``train.txt``, optional ``valid.txt``, ``test.txt``)."""
    if not os.path.isdir(src):
        raise ImportError_(f"source folder not found: {src}")
    rows = []
    for split in SPLITS:
        path = os.path.join(src, f"{split}.txt")
        if not os.path.isfile(path):
            if split == "valid":
                continue
            raise ImportError_(f"{path} not found (a LightGCN-layout folder needs train.txt and test.txt)")
        with open(path, encoding="utf-8") as f:
            for line_no, line in enumerate(f, 1):
                parts = line.split()
                if not parts:
                    continue
                try:
                    ids = [int(p) for p in parts]
                except ValueError:
                    raise ImportError_(f"{path}:{line_no}: ids must be integers: {line.strip()!r}") from None
                if min(ids) < 0:
                    raise ImportError_(f"{path}:{line_no}: negative id in {line.strip()!r}")
                rows += [(ids[0], item, split) for item in ids[1:]]
    frame = pd.DataFrame(rows, columns=["user", "item", "split"])
    if frame.empty:
        raise ImportError_(f"{src}: no interactions")
    return _write(frame, name or os.path.basename(os.path.normpath(src)), dst, dict(features or {}), src)
