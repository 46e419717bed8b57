"""Import MMRec- or LightGCN-layout datasets into RecBole atomic files that keep their fixed split.

Output, in ``DST/<name>/``:

- ``<name>.train.inter``, ``<name>.valid.inter``, ``<name>.test.inter`` (``user_id:token item_id:token``,
  plus ``rating:float`` / ``timestamp:float`` when the source has them), read by RecBole through
  ``benchmark_filename: [train, valid, test]`` -- the source's own split, untouched;
- ``<modality>.npz`` per feature file (``ids`` = item tokens, rows in item-id order);
- ``<name>.yaml`` -- a RecBole config for RecGOAT on it (split, modalities, full-ranking eval, an eval batch that
  fits the item count); its ``data_path: ..`` is relative to the YAML's folder, so ``DST`` can be moved.

Layouts:

- ``mmrec``: ``<name>.inter`` (TSV, header ``userID itemID x_label`` [+ ``rating``, ``timestamp``]; x_label 0 =
  train, 1 = valid, 2 = test) and ``<modality>_feat.npy`` (row r = itemID r). Without ``x_label`` (only
  ``userID itemID`` [+ ``rating``, ``timestamp``]) the import splits each user's interactions itself:
  ``split="0.8,0.1,0.1"`` (ratios, RecBole's ``RS`` rule per user) or ``split="loo"`` (leave-one-out, RecBole's
  ``LS: valid_and_test``), in timestamp order when there is a ``timestamp`` column (ties in file order), else in
  an order drawn with ``seed`` (:func:`split_per_user`); the split is recorded in the YAML's header comment. A
  source with ``x_label`` keeps its own split and refuses ``split``.
- item cold-start (``cold_items=SHARE``, mmrec, with or without ``x_label``): :func:`hold_out_cold_items` takes
  SHARE of the items out of training entirely, after the split: every interaction with half of them goes to
  valid, with the other half to test; the rest of the split stays. Recorded in the YAML's header comment.
- ``lightgcn``: ``train.txt`` / ``valid.txt`` (optional) / ``test.txt``, one user per line: ``u i1 i2 ...``;
  features by ``--feature name=file.npy`` (row r = item r; a relative path is looked up in the source folder
  first, then in the working directory).

Checks: ids must be non-negative integers; a feature file needs a row for every item id used (more rows are
fine: items that never occur are kept as feature rows only); duplicate (user, item) pairs are dropped, keeping
the first by split order (train, valid, test), and counted in the returned report; an empty train or test split
is an error (an empty valid split is allowed). Items of valid or test that have no train interaction (cold
items, whether the source's split or ``cold_items`` made them) are counted in the report and the YAML's header
comment. Every problem with the source (an empty, binary or non-UTF-8
``.inter``, a non-number rating, an unreadable feature file, ...) raises :class:`DataImportError` naming the file.

Re-importing is safe: everything is written into a temporary folder ``DST/.<name>.tmp-*`` and swapped in only
when all of it succeeded, so a failed import leaves the previous ``DST/<name>/`` exactly as it was. Files in the
previous folder that the import does not write (notes, a profile file) are carried over into the new one. The
generated ``<name>.yaml`` records a sha256 of its body in its first line; if that body was edited since (or the
file has no such line, i.e. a person wrote it), a re-import refuses before writing anything, unless ``force``
(checked when the import starts, and again right before the swap).

Imports of one dataset at once: an import holds an exclusive lock (``fcntl.flock`` on ``DST/.<name>.lock``,
removed when it ends) from before its temporary folder is made until the old folder is deleted, so imports of
the same ``DST/<name>`` run one after the other (imports of other names do not wait). A second import waits
for the first (a log line says so) up to :data:`LOCK_TIMEOUT_S` seconds, then fails with one
:class:`DataImportError` naming the lock file; a lock is released when its process ends, however it ends. Under
the lock:

- the carry-over is listed right before the swap, and once more from the old folder after it (before the old
  folder is deleted): a file written into ``DST/<name>/`` while the import runs is kept;
- leftovers of an interrupted import are cleared first: ``.<name>.tmp-*`` (an unfinished new folder) and
  ``.<name>.old-*`` (an old folder whose deletion was interrupted, e.g. by Ctrl-C: the new folder was already in
  place with everything carried over) are deleted, with a warning naming them; if ``DST/<name>`` itself is
  missing (the process was killed between the two renames of a swap), the newest ``.<name>.old-*`` is put back
  first, so its files are carried over as usual.

Where ``fcntl`` is missing (Windows) or the file system refuses locks, the import runs unlocked with a warning.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import logging
import math
import os
import re
import shutil
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from typing import Iterator, Sequence

try:
    import fcntl
except ImportError:  # pragma: no cover  (Windows: imports are not locked)
    fcntl = None  # type: ignore[assignment]

import numpy as np
import pandas as pd
import yaml

from recgoat_core.feature_files import FeatureFileError, current_umask, read_features, write_features

__all__ = ["DataImportError", "ImportReport", "import_mmrec", "import_lightgcn", "eval_batch_size", "SPLITS",
           "LOCK_TIMEOUT_S", "parse_split", "split_per_user", "DEFAULT_SPLIT_SEED", "parse_cold_share",
           "hold_out_cold_items", "ColdHoldOut", "cold_counts"]

logger = logging.getLogger(__name__)
SPLITS = ("train", "valid", "test")
#: how long an import waits for another import of the same dataset folder to finish (seconds)
LOCK_TIMEOUT_S = 600.0
#: the seed of a split drawn for data without ``x_label`` and without timestamps (RecBole's default ``seed``)
DEFAULT_SPLIT_SEED = 2020


class DataImportError(ValueError):
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
    #: how the split was made: ``"source"`` (x_label, or the LightGCN files), else the ``--split`` drawn
    split: str = "source"
    #: how many items of valid and of test have no train interaction (cold items): ``{"valid": n, "test": m}``
    cold: dict[str, int] = field(default_factory=dict)
    #: what ``cold_items`` did (:class:`ColdHoldOut`), or ``None``
    held_out: "ColdHoldOut | None" = None

    def __str__(self) -> str:
        parts = ", ".join(f"{k} {v:,}" for k, v in self.interactions.items())
        extra = f"; dropped {self.duplicates_dropped} duplicate pairs" if self.duplicates_dropped else ""
        mods = ", ".join(self.modalities) or "none"
        drawn = f"; split drawn: {self.split}" if self.split != "source" else ""
        held = f"; {self.held_out.summary()}" if self.held_out is not None else ""
        cold = (f"; cold items (no train interaction): valid {self.cold.get('valid', 0):,}, test "
                f"{self.cold.get('test', 0):,}" if any(self.cold.values()) else "")
        return (f"{self.name}: {self.users:,} users, {self.items:,} items, interactions {parts}{extra}{drawn}"
                f"{held}{cold}; modalities: {mods}; config: {self.config}")


def _check_ids(values: pd.Series, what: str, source: str) -> np.ndarray:
    numeric = pd.to_numeric(values, errors="coerce")
    if numeric.isna().any() or (numeric < 0).any() or (numeric % 1 != 0).any():
        bad = str(values[numeric.isna() | (numeric < 0) | (numeric % 1 != 0)].iloc[0])
        shown = repr(bad) if len(bad) <= 60 else f"{bad[:40]!r}... ({len(bad):,} characters)"
        raise DataImportError(f"{source}: {what} must be non-negative integers, found {shown}")
    return numeric.astype(np.int64).to_numpy()


def parse_split(spec: str | Sequence[float]) -> tuple[float, float, float] | str:
    """``--split``: ``"loo"`` (leave-one-out), or three ratios ``train,valid,test`` -- non-negative numbers,
    train and test above 0 (valid may be 0), normalised to sum to 1 as RecBole normalises ``RS`` ratios.
    :class:`DataImportError` for anything else."""
    if isinstance(spec, str) and spec.strip().lower() in ("loo", "leave-one-out"):
        return "loo"
    parts = spec.split(",") if isinstance(spec, str) else list(spec)
    usage = f"--split expects three ratios train,valid,test (e.g. 0.8,0.1,0.1) or loo, got {spec!r}"
    if len(parts) != 3:
        raise DataImportError(usage)
    try:
        values = [float(p) for p in parts]
    except (TypeError, ValueError):
        raise DataImportError(usage) from None
    if not all(math.isfinite(v) and v >= 0 for v in values) or values[0] == 0 or values[2] == 0:
        raise DataImportError(f"{usage}: each ratio must be a number >= 0, and train and test above 0")
    total = sum(values)
    return (values[0] / total, values[1] / total, values[2] / total)


def _ratio_counts(total: int, ratios: Sequence[float]) -> tuple[int, int, int]:
    """How many of a user's ``total`` interactions go to train, valid and test: RecBole 1.2.1's
    ``Dataset._calcu_split_ids`` (valid and test rounded down, then a part whose share is below one
    interaction gets one while train keeps more than one)."""
    counts = [int(r * total) for r in ratios]
    counts[0] = total - sum(counts[1:])
    for i in range(1, len(ratios)):
        if counts[0] <= 1:
            break
        if 0 < ratios[-i] * total < 1:
            counts[-i] += 1
            counts[0] -= 1
    return counts[0], counts[1], counts[2]


def split_per_user(users: np.ndarray, split: tuple[float, float, float] | str, seed: int = DEFAULT_SPLIT_SEED,
                   timestamps: np.ndarray | None = None) -> np.ndarray:
    """Each interaction's split (0 train, 1 valid, 2 test), cutting every user's interactions as RecBole does
    with ``group_by: user``.

    Order: by ``timestamps`` when given (ties keep the file order, as RecBole's stable sort does with
    ``order: TO``), else an order drawn from ``numpy.random.default_rng(seed)`` (the same seed and file give the
    same split). Cut: ``split`` ratios by RecBole's ``RS`` rule (:func:`_ratio_counts`: the first part of a
    user's list is train, then valid, then test), or ``"loo"`` as RecBole's ``LS: valid_and_test``: the last
    interaction is test, the one before it valid; a user with two interactions has train and test, one with one
    interaction train only."""
    users = np.asarray(users)
    n = len(users)
    position = np.arange(n)
    if timestamps is not None:
        order = np.lexsort((position, np.asarray(timestamps, dtype=np.float64), users))
    else:
        order = np.lexsort((np.random.default_rng(seed).permutation(n), users))
    grouped = users[order]
    starts = np.flatnonzero(np.r_[True, grouped[1:] != grouped[:-1]]) if n else np.zeros(0, np.int64)
    sizes = np.diff(np.r_[starts, n])
    rank = position - np.repeat(starts, sizes)
    total = np.repeat(sizes, sizes)
    if split == "loo":
        leave = np.minimum(2, total - 1)
        n_train, n_valid = total - leave, (leave == 2).astype(np.int64)
    else:
        table = {int(t): _ratio_counts(int(t), split) for t in np.unique(sizes)}
        n_train = np.array([table[int(t)][0] for t in total], dtype=np.int64)
        n_valid = np.array([table[int(t)][1] for t in total], dtype=np.int64)
    labels = np.where(rank < n_train, 0, np.where(rank < n_train + n_valid, 1, 2))
    out = np.empty(n, dtype=np.int64)
    out[order] = labels
    return out


def _split_note(split: tuple[float, float, float] | str, seed: int, by_time: bool, given: str) -> str:
    """The header comment lines of a YAML whose split this import drew (what, how, from which seed)."""
    order = ("in timestamp order (ties in file order; the seed is not used)" if by_time
             else f"in a random order drawn with seed {seed}")
    if split == "loo":
        cut = "leave-one-out (RecBole's LS valid_and_test: last -> test, the one before -> valid)"
    else:
        cut = ("RecBole's RS ratio rule, train {:g}, valid {:g}, test {:g}".format(*split))
    return (f"# split: drawn by recgoat data import --split {given} --seed {seed} (the source has no x_label):\n"
            f"# each user's interactions {order},\n# cut by {cut}\n")


def parse_cold_share(value: str | float) -> float:
    """``--cold-items``: the share of the items to hold out of training, a number strictly between 0 and 1."""
    usage = f"--cold-items expects the share of items to hold out, a number between 0 and 1 (e.g. 0.2), got {value!r}"
    try:
        share = float(value)
    except (TypeError, ValueError):
        raise DataImportError(usage) from None
    if not (math.isfinite(share) and 0 < share < 1):
        raise DataImportError(usage)
    return share


@dataclass(frozen=True)
class ColdHoldOut:
    """What :func:`hold_out_cold_items` did: ``share`` and ``seed`` as given; of ``items`` items in the data,
    ``valid_items`` + ``test_items`` were held out of training (their ids in ``valid_ids`` / ``test_ids``), their
    interactions put in valid (``valid_interactions``) and test (``test_interactions``), ``moved`` of those taken
    from train; ``users_dropped`` users left without a train interaction were dropped with their
    ``interactions_dropped`` remaining interactions; ``duplicates`` (user, item) pairs were dropped before."""

    share: float
    seed: int
    items: int
    valid_ids: tuple[int, ...]
    test_ids: tuple[int, ...]
    valid_interactions: int
    test_interactions: int
    moved: int
    users_dropped: int
    interactions_dropped: int
    duplicates: int

    @property
    def valid_items(self) -> int:
        return len(self.valid_ids)

    @property
    def test_items(self) -> int:
        return len(self.test_ids)

    def summary(self) -> str:
        users = (f", users left without a train interaction dropped: {self.users_dropped:,} "
                 f"({self.interactions_dropped:,} interactions)" if self.users_dropped else "")
        return (f"cold items held out: {self.valid_items + self.test_items:,} of {self.items:,} "
                f"(--cold-items {self.share:g}, seed {self.seed}): {self.valid_items:,} in valid, "
                f"{self.test_items:,} in test{users}")

    def note(self) -> str:
        """The YAML header comment lines that record the hold-out."""
        users = (f"# users left without a train interaction, dropped with the valid/test interactions they had "
                 f"left: {self.users_dropped:,} ({self.interactions_dropped:,} interactions)\n" if self.users_dropped
                 else "# no user was left without a train interaction\n")
        return (f"# cold items: recgoat data import --cold-items {self.share:g} --seed {self.seed} held "
                f"{self.valid_items + self.test_items:,} of the {self.items:,} items out of training (drawn with seed "
                f"{self.seed}):\n# every interaction with {self.valid_items:,} of them ({self.valid_interactions:,}) "
                f"is in valid, with the other {self.test_items:,} ({self.test_interactions:,}) in test;\n"
                f"# {self.moved:,} of those were train interactions of the split above, whose other valid and "
                "test interactions stay where it put them;\n" + users)


def _dedupe_by_split(frame: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """``frame`` without duplicate (user, item) pairs, keeping the first by split order (train, valid, test),
    as :func:`_write` does; and how many were dropped."""
    before = len(frame)
    order = {s: k for k, s in enumerate(SPLITS)}
    frame = frame.assign(_o=frame["split"].map(order)).sort_values("_o", kind="stable")
    frame = frame.drop_duplicates(["user", "item"], keep="first").drop(columns="_o")
    return frame, before - len(frame)


def hold_out_cold_items(frame: pd.DataFrame, share: float, seed: int,
                        source: str = "data") -> tuple[pd.DataFrame, ColdHoldOut]:
    """Item cold-start: take ``share`` of the items that occur in ``frame`` (columns ``user``, ``item``,
    ``split``) out of training entirely.

    - Duplicate (user, item) pairs are dropped first, keeping the first by split order (what the import does
      anyway), so the counts are those of the written files.
    - The number held out is ``round(share * items)`` (halves up); it must be at least 1 and leave at least one
      item in training, else :class:`DataImportError`. The items are the first of a permutation of the sorted
      item ids drawn by ``numpy.random.default_rng(numpy.random.SeedSequence(seed).spawn(1)[0])`` (a stream of
      its own: the same seed holds out the same items with or without ``--split``); the first
      ``held // 2`` of them are valid's, the rest test's (test gets the odd one).
    - Every interaction with a valid item goes to valid, with a test item to test, wherever the split put it;
      every other interaction keeps its split.
    - A user who had a train interaction and has none left is dropped with every interaction left (a user
      without any train interaction in the source is kept as the source has it).
    """
    frame, duplicates = _dedupe_by_split(frame)
    items = np.unique(frame["item"].to_numpy())
    held = int(math.floor(share * len(items) + 0.5))
    if held < 1:
        raise DataImportError(f"{source}: --cold-items {share:g} of {len(items):,} items holds out no item "
                              f"(round({share:g} x {len(items):,}) = 0); raise the share")
    if held >= len(items):
        raise DataImportError(f"{source}: --cold-items {share:g} of {len(items):,} items holds out every item and "
                              "leaves none to train on; lower the share")
    rng = np.random.default_rng(np.random.SeedSequence(int(seed)).spawn(1)[0])
    drawn = rng.permutation(items)[:held]
    valid_ids, test_ids = np.sort(drawn[: held // 2]), np.sort(drawn[held // 2:])
    item = frame["item"].to_numpy()
    to_valid, to_test = np.isin(item, valid_ids), np.isin(item, test_ids)
    split = frame["split"].to_numpy().copy()
    moved = int(((to_valid | to_test) & (split == "train")).sum())
    had_train = set(frame.loc[split == "train", "user"].tolist())
    split[to_valid], split[to_test] = "valid", "test"
    frame = frame.assign(split=split)
    left = set(frame.loc[split == "train", "user"].tolist())
    lost = frame["user"].isin(had_train - left).to_numpy()
    users_dropped = len(had_train - left)
    if users_dropped:
        logger.warning(f"{source}: users whose train interactions were all with held-out cold items: "
                       f"{users_dropped}, dropped with the {int(lost.sum())} valid/test interactions they had left")
    frame = frame[~lost]
    if not (frame["split"] == "train").any():
        raise DataImportError(f"{source}: --cold-items {share:g} leaves no train interaction; lower the share")
    kept = frame["item"].to_numpy()
    info = ColdHoldOut(share=float(share), seed=int(seed), items=int(len(items)),
                       valid_ids=tuple(int(i) for i in valid_ids), test_ids=tuple(int(i) for i in test_ids),
                       valid_interactions=int(np.isin(kept, valid_ids).sum()),
                       test_interactions=int(np.isin(kept, test_ids).sum()), moved=moved,
                       users_dropped=users_dropped, interactions_dropped=int(lost.sum()), duplicates=duplicates)
    return frame, info


def cold_counts(frame: pd.DataFrame) -> dict[str, int]:
    """How many distinct items of valid and of test have no train interaction in ``frame``."""
    train = frame.loc[frame["split"] == "train", "item"].unique()
    out = {}
    for split in ("valid", "test"):
        items = frame.loc[frame["split"] == split, "item"].unique()
        out[split] = int((~np.isin(items, train)).sum())
    return out


def _cold_note(counts: dict[str, int]) -> str:
    if not any(counts.values()):
        return ""
    return (f"# cold items (no train interaction): {counts['valid']:,} in valid, {counts['test']:,} in test; "
            "`recgoat run` and `recgoat bench` report them apart\n")


_HEADER = ("# generated by recgoat data import from {source}; sha256 {digest} -- edit freely: "
           "a re-import keeps your edits unless --force\n")
_HEADER_RE = re.compile(rb"^# generated by recgoat data import from .*; sha256 ([0-9a-f]{64}) -- ")


_DATA_PATH_NOTE = ("# data_path: .. is this file's parent folder: `import recgoat_recbole` makes RecBole read it "
                   "against this file,\n# so run_recbole(config_file_list=[this file]) and `recgoat run` work from "
                   "any directory.\n")


def eval_batch_size(n_items: int) -> int:
    """An ``eval_batch_size`` that fits 64 users of full-ranking scores per batch (``n_items`` + RecBole's
    padding row), at least RecBole's 4096 and at most 2**22 scores."""
    return int(min(max(4096, 64 * (n_items + 1)), 2**22))


def _is_plain_name(name: str) -> bool:
    """A name usable as one file or folder name: not empty, not ``.``/``..``, no path separator."""
    return bool(name) and name not in (".", "..") and not any(s and s in name for s in ("/", os.sep, os.altsep))


def _check_name(name: str) -> str:
    if not _is_plain_name(name):
        raise DataImportError(f"invalid dataset name {name!r}: it must be a plain folder name (no path separators)")
    return name


def _check_config_not_edited(dst: str, name: str, force: bool) -> None:
    """Refuse (before anything is written) to replace a ``<name>.yaml`` that is not as the last import wrote it."""
    path = os.path.join(dst, name, f"{name}.yaml")
    if force or not os.path.isfile(path):
        return
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as exc:
        raise DataImportError(f"{path}: cannot read the existing config ({exc}); --force overwrites it") from None
    header, _, body = data.partition(b"\n")
    match = _HEADER_RE.match(header)
    if match is None:
        raise DataImportError(f"{path} was not generated by this importer (no sha256 header: written by hand or by "
                           f"an older recgoat); not overwriting it -- move it away, or re-run with --force to "
                           f"overwrite it")
    if hashlib.sha256(body).hexdigest() != match.group(1).decode():
        raise DataImportError(f"{path} was edited since it was generated; not overwriting it -- keep your copy "
                           f"elsewhere, or re-run with --force to overwrite it")


def _read_item_features(path: str, max_item: int):
    """A ``.npy`` feature file whose row r is item r, checked; DataImportError naming the file when unusable."""
    if not os.path.isfile(path):
        raise DataImportError(f"feature file not found: {path}")
    try:
        file = read_features(path)
    except FeatureFileError as exc:
        raise DataImportError(str(exc)) from None
    except (ValueError, OSError, EOFError, AttributeError, TypeError, KeyError) as exc:
        # read_features normally says FeatureFileError itself; this is the net for what it lets through
        raise DataImportError(f"{path}: cannot read as a numpy feature file ({type(exc).__name__}: {exc})") from None
    feats = file.features
    if len(feats) <= max_item:
        raise DataImportError(f"{path}: {len(feats)} feature rows but item ids go up to {max_item}")
    if not np.array_equal(file.tokens, np.arange(len(feats)).astype(str)):
        raise DataImportError(f"{path}: rows must be in item-id order (row r = item r), but the file lists other "
                           f"ids (e.g. {file.tokens[:3].tolist()})")
    return file


def _link_or_copy(src: str, dst: str) -> str:
    try:
        os.link(src, dst, follow_symlinks=False)
    except OSError:
        shutil.copy2(src, dst, follow_symlinks=False)
    return dst


def _carry_over(old: str, new: str) -> list[str]:
    """Put every entry of ``old`` that ``new`` lacks into ``new`` (hard links where possible); their names."""
    carried = []
    for entry in sorted(os.listdir(old)):
        source, target = os.path.join(old, entry), os.path.join(new, entry)
        if os.path.lexists(target):
            continue
        if os.path.islink(source):
            os.symlink(os.readlink(source), target)
        elif os.path.isdir(source):
            shutil.copytree(source, target, symlinks=True, copy_function=_link_or_copy)
        else:
            _link_or_copy(source, target)
        carried.append(entry)
    return carried


def _default_dir_mode() -> int:
    return 0o777 & ~current_umask()


@contextlib.contextmanager
def _dataset_lock(parent: str, base: str) -> Iterator[None]:
    """Hold the exclusive lock ``parent/.<base>.lock`` (see the module docstring); the file is removed on exit.

    The holder unlinks the file while it still holds it, so a waiter may end up locking a file that is no
    longer the lock: after locking, the open file must still be the one at the path, else it tries again."""
    path = os.path.join(parent, f".{base}.lock")
    fd = _acquire(path, base) if fcntl is not None else None
    if fcntl is None:
        logger.warning(f"no file locks on this system: another import of {base} at the same time may conflict")
    try:
        if fd is not None:
            os.ftruncate(fd, 0)
            os.write(fd, f"pid {os.getpid()}\n".encode("ascii"))
        yield
    finally:
        if fd is not None:
            try:
                os.unlink(path)
            except OSError:
                pass
            os.close(fd)


def _acquire(path: str, base: str) -> int | None:
    """The open, locked lock file (None when the file system refuses locks: a warning says so)."""
    deadline = time.monotonic() + LOCK_TIMEOUT_S
    said = False
    while True:
        # 0600 and O_NOFOLLOW: nobody else can hold it (a read-only descriptor can be locked too) or plant a link
        fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            holder = _read_pid(fd)
            os.close(fd)
            if exc.errno not in (errno.EAGAIN, errno.EWOULDBLOCK, errno.EACCES):
                logger.warning(f"cannot lock {path} ({exc.strerror}): importing without the lock; another import "
                               f"of {base} at the same time may conflict")
                return None
            if time.monotonic() >= deadline:
                raise DataImportError(f"{path}: another import of {base} ({holder or 'another process'}) has held "
                                   f"this lock for over {LOCK_TIMEOUT_S:g} s; let it finish (or stop it) and "
                                   "import again") from None
            if not said:
                logger.info(f"waiting for another import of {base} to finish ({holder or 'lock'} {path}) ...")
                said = True
            time.sleep(0.05)
            continue
        except BaseException:
            os.close(fd)
            raise
        try:
            current = os.stat(path, follow_symlinks=False)
        except FileNotFoundError:
            current = None
        if current is not None and os.path.samestat(os.fstat(fd), current):
            return fd
        os.close(fd)  # the previous holder removed that file after we opened it: lock the new one


def _read_pid(fd: int) -> str:
    try:
        return os.pread(fd, 64, 0).decode("ascii", "replace").strip()
    except OSError:
        return ""


def _remove(path: str) -> None:
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path)
    else:
        os.unlink(path)


def _clear_debris(parent: str, base: str, target: str, folder: str) -> None:
    """Under the lock: what an interrupted import of ``base`` left in ``parent`` (see the module docstring)."""
    tmps, olds = [], []
    for entry in os.listdir(parent):
        if entry.startswith(f".{base}.tmp-"):
            tmps.append(entry)
        elif entry.startswith(f".{base}.old-"):
            olds.append(entry)
    if not os.path.lexists(target) and olds:
        newest = max(olds, key=lambda e: os.stat(os.path.join(parent, e), follow_symlinks=False).st_ctime)
        if os.path.isdir(os.path.join(parent, newest)) and not os.path.islink(os.path.join(parent, newest)):
            os.rename(os.path.join(parent, newest), target)
            olds.remove(newest)
            logger.warning(f"{folder} was missing (an import was stopped in the middle of its swap): put back "
                           f"the previous version from {os.path.join(parent, newest)}")
    removed = []
    for entry in sorted(tmps + olds):
        try:
            _remove(os.path.join(parent, entry))
            removed.append(entry)
        except OSError as exc:
            logger.warning(f"cannot delete {os.path.join(parent, entry)}, left by an interrupted import: {exc}")
    if removed:
        logger.warning(f"deleted what an interrupted import of {folder} left in {parent}: {', '.join(removed)}")


def _write(frame: pd.DataFrame, name: str, dst: str, features: dict[str, str], source: str,
           n_items_hint: int | None = None, force: bool = False, split_note: str = "", split_how: str = "source",
           dropped_before: int = 0, held_out: ColdHoldOut | None = None) -> ImportReport:
    for split in ("train", "test"):
        if not (frame["split"] == split).any():
            raise DataImportError(f"{source}: the {split} split is empty")
    frame, dropped = _dedupe_by_split(frame)
    if dropped:
        logger.warning(f"{source}: dropped {dropped} duplicate (user, item) pairs, keeping the first by split")
    dropped += dropped_before
    cold = cold_counts(frame)
    split_note += (held_out.note() if held_out is not None else "") + _cold_note(cold)
    max_item = int(frame["item"].max())
    for modality, path in features.items():
        if not _is_plain_name(modality):
            raise DataImportError(f"invalid modality name {modality!r} for {path}: it must be a plain name")
        if not os.path.isfile(path):
            raise DataImportError(f"feature file not found: {path}")
    folder = os.path.join(dst, name)
    if os.path.lexists(folder) and not os.path.isdir(folder):
        raise DataImportError(f"{folder} exists and is not a folder")
    if os.path.exists(dst) and not os.path.isdir(dst):
        raise DataImportError(f"output folder {dst} exists and is not a folder")
    # a symlinked dataset folder: work next to (and swap) its target
    target = os.path.realpath(folder) if os.path.islink(folder) else folder
    parent = os.path.dirname(target) or "."
    base = os.path.basename(target)
    created_parent = not os.path.isdir(parent)
    try:
        os.makedirs(parent, exist_ok=True)
        with _dataset_lock(parent, base):
            _clear_debris(parent, base, target, folder)
            modalities, n_items, counts = _write_and_swap(frame, name, dst, features, source, n_items_hint, force,
                                                          folder, target, parent, base, max_item, split_note)
    except BaseException as exc:
        if created_parent:
            try:
                os.rmdir(parent)
            except OSError:
                pass
        if isinstance(exc, OSError):
            raise DataImportError(f"cannot write {folder}: {exc}") from None
        raise
    config_path = os.path.join(folder, f"{name}.yaml")
    report = ImportReport(name, folder, config_path, int(frame["user"].nunique()), n_items, counts, dropped,
                          modalities, split_how, cold, held_out)
    logger.info(str(report))
    return report


def _write_and_swap(frame: pd.DataFrame, name: str, dst: str, features: dict[str, str], source: str,
                    n_items_hint: int | None, force: bool, folder: str, target: str, parent: str, base: str,
                    max_item: int, split_note: str = "") -> tuple[dict[str, str], int, dict[str, int]]:
    """Under the lock: write everything into ``parent/.<base>.tmp-*``, then swap it in for ``target``."""
    tmp = tempfile.mkdtemp(prefix=f".{base}.tmp-", dir=parent)
    try:
        modalities = {}
        n_items = max(max_item + 1, n_items_hint or 0)
        for modality, path in features.items():
            file = _read_item_features(path, max_item)
            n_items = max(n_items, len(file.features))
            out = write_features(os.path.join(tmp, f"{modality}.npz"), file.tokens, file.features, file.mask)
            modalities[modality] = os.path.basename(out)
            del file
        extra = [c for c in ("rating", "timestamp") if c in frame.columns]
        header = ["user_id:token", "item_id:token"] + [f"{c}:float" for c in extra]
        counts = {}
        for split in SPLITS:
            part = frame[frame["split"] == split][["user", "item", *extra]]
            counts[split] = len(part)
            part.to_csv(os.path.join(tmp, f"{name}.{split}.inter"), sep="\t", header=header, index=False)
        config = {
            "dataset": name,
            # relative to this YAML's folder (DST/NAME/), so the folder can be moved or shared: with
            # `import recgoat_recbole`, RecBole reads it against this YAML (recgoat_recbole/patches/yaml_data_path.py)
            "data_path": "..",
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
            # full ranking scores eval_batch_size // n_items users per batch: 64 of them, not one
            "eval_batch_size": eval_batch_size(n_items),
            # early stopping patience, 50 for every model: at RecBole's 10, LightGCN and FREEDOM stopped in an
            # early validation dip on Amazon Scientific in an earlier round (no record of those runs was kept)
            "stopping_step": 50,
        }
        body = (split_note + _DATA_PATH_NOTE + yaml.safe_dump(config, sort_keys=False)).encode("utf-8")
        one_line_source = " ".join(str(source).splitlines())
        with open(os.path.join(tmp, f"{name}.yaml"), "wb") as f:
            f.write(_HEADER.format(source=one_line_source, digest=hashlib.sha256(body).hexdigest()).encode("utf-8"))
            f.write(body)
        # right before the swap, under the lock: the YAML as the last import wrote it, the user's files listed now
        _check_config_not_edited(dst, name, force)
        old_exists = os.path.isdir(target)
        if old_exists:
            carried = _carry_over(target, tmp)
            if carried:
                logger.info(f"kept from the previous {folder}: {', '.join(carried)}")
        os.chmod(tmp, (os.stat(target).st_mode & 0o7777) if old_exists else _default_dir_mode())
        # the swap: old folder aside, new one in, what appeared in the old one meanwhile carried, old one deleted
        if old_exists:
            aside = os.path.join(parent, f".{base}.old-{uuid.uuid4().hex[:12]}")
            os.rename(target, aside)
            try:
                os.rename(tmp, target)
            except BaseException:
                os.rename(aside, target)
                raise
            tmp = None
            try:
                late = _carry_over(aside, target)
            except OSError as exc:  # keep the old folder, under a name that no import deletes
                kept = os.path.join(parent, f".{base}.kept-{uuid.uuid4().hex[:12]}")
                os.rename(aside, kept)
                logger.warning(f"could not carry every file written into {folder} during the import over into the "
                               f"new version ({exc}); the previous version is kept in {kept}")
                return modalities, n_items, counts
            if late:
                logger.info(f"kept from the previous {folder} (written during the import): {', '.join(late)}")
            try:
                shutil.rmtree(aside, ignore_errors=True)
            except BaseException:  # (Ctrl-C): the new folder is in place; the next import deletes the rest
                logger.warning(f"interrupted while deleting the previous version of {folder}: the next import "
                               f"deletes what is left of it ({aside})")
                raise
            if os.path.lexists(aside):
                logger.warning(f"could not delete the previous version of {folder}, moved aside to {aside} (the "
                               "next import deletes it)")
        else:
            os.rename(tmp, target)
            tmp = None
    except BaseException:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
        raise
    return modalities, n_items, counts


def _read_inter(path: str) -> pd.DataFrame:
    """The MMRec ``.inter`` TSV as strings; DataImportError naming the file for anything unreadable."""
    if not os.path.isfile(path):
        raise DataImportError(f"interaction file not found: {path}")
    empty = f"{path}: the file is empty (expected a TSV with header userID, itemID, x_label)"
    try:
        with open(path, "rb") as f:
            head = f.read(8192)
        if not head.strip():
            raise DataImportError(empty)
        if b"\0" in head:
            raise DataImportError(f"{path}: a binary file, not a tab-separated text file")
        frame = pd.read_csv(path, sep="\t", dtype=str, encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise DataImportError(f"{path}: not UTF-8 text (cannot decode byte {exc.object[exc.start:exc.start + 1]!r}); "
                           f"save it as UTF-8") from None
    except pd.errors.EmptyDataError:
        raise DataImportError(empty) from None
    except DataImportError:
        raise
    except (pd.errors.ParserError, ValueError) as exc:
        raise DataImportError(f"{path}: not a well-formed tab-separated file ({' '.join(str(exc).split())})") from None
    except OSError as exc:
        raise DataImportError(f"{path}: cannot read ({exc})") from None
    if frame.shape[1] == 1 and any(sep in str(frame.columns[0]) for sep in (",", ";", " ")):
        raise DataImportError(f"{path}: one column, headed {str(frame.columns[0])[:60]!r}: the file looks comma-, "
                              "semicolon- or space-separated; .inter files are tab-separated (userID<TAB>itemID"
                              "<TAB>x_label)")
    return frame


def import_mmrec(src: str, dst: str, name: str | None = None, inter_file: str | None = None,
                 force: bool = False, split: str | Sequence[float] | None = None,
                 seed: int | None = None, cold_items: str | float | None = None) -> ImportReport:
    """Import an MMRec dataset folder (see the module docstring). ``force`` overwrites an edited ``<name>.yaml``.

    ``split`` (``"0.8,0.1,0.1"``, ``(0.8, 0.1, 0.1)`` or ``"loo"``) and ``seed`` (default
    :data:`DEFAULT_SPLIT_SEED`) split a ``.inter`` without ``x_label`` per user (:func:`split_per_user`); they are
    required for such a file and refused for one with ``x_label``. ``cold_items`` (a share in (0, 1)) then holds
    that share of the items out of training (:func:`hold_out_cold_items`, drawn with ``seed``), with or without
    ``x_label``."""
    if seed is not None and split is None and cold_items is None:
        raise DataImportError("--seed is the seed of --split or --cold-items: give one of them too")
    if seed is not None and int(seed) < 0:
        raise DataImportError(f"--seed must be a non-negative integer, got {seed}")
    ratios = parse_split(split) if split is not None else None
    share = parse_cold_share(cold_items) if cold_items is not None else None
    if not os.path.isdir(src):
        raise DataImportError(f"source folder not found: {src}")
    if inter_file is None:
        candidates = sorted(f for f in os.listdir(src) if f.endswith(".inter"))
        if len(candidates) != 1:
            raise DataImportError(f"{src}: expected exactly one *.inter file, found {candidates or 'none'}")
        inter_file = candidates[0]
    path = os.path.join(src, inter_file)
    name = _check_name(name or os.path.splitext(inter_file)[0])
    _check_config_not_edited(dst, name, force)
    raw = _read_inter(path)
    required = {"userID", "itemID"}
    if not required <= set(raw.columns):
        raise DataImportError(f"{path}: needs columns {sorted(required)} (and x_label for its own split, else "
                              f"--split), has {list(raw.columns)}")
    has_labels = "x_label" in raw.columns
    if has_labels and ratios is not None:
        raise DataImportError(f"{path} has an x_label column, its own split (kept as it is); --split is for data "
                              "without x_label: drop --split, or the x_label column to split anew")
    if not has_labels and ratios is None:
        raise DataImportError(f"{path} has no x_label column (MMRec's split): give --split 0.8,0.1,0.1 (ratios per "
                              "user) or --split loo (leave-one-out per user) to split it")
    if raw.empty:
        raise DataImportError(f"{path}: no interactions (only a header line)")
    frame = pd.DataFrame({
        "user": _check_ids(raw["userID"], "userID", path),
        "item": _check_ids(raw["itemID"], "itemID", path),
    })
    if has_labels:
        labels = _check_ids(raw["x_label"], "x_label", path)
        if not np.isin(labels, [0, 1, 2]).all():
            raise DataImportError(f"{path}: x_label must be 0 (train), 1 (valid) or 2 (test)")
        frame["split"] = np.array(SPLITS)[labels]
    for col in ("rating", "timestamp"):
        if col in raw.columns:
            values = pd.to_numeric(raw[col], errors="coerce")
            bad = values.isna() & raw[col].notna()
            if bad.any():
                raise DataImportError(f"{path}: {col} must be numbers, found {raw[col][bad].iloc[0]!r} "
                                   f"(line {int(np.flatnonzero(bad.to_numpy())[0]) + 2})")
            frame[col] = values
    features = {f[: -len("_feat.npy")]: os.path.join(src, f) for f in sorted(os.listdir(src))
                if f.endswith("_feat.npy")}
    if has_labels:
        held_out = None
        if share is not None:
            frame, held_out = hold_out_cold_items(frame, share, DEFAULT_SPLIT_SEED if seed is None else seed, path)
        return _write(frame, name, dst, features, path, force=force,
                      split_note="# split: the source's own (x_label 0 train, 1 valid, 2 test)\n",
                      held_out=held_out, dropped_before=held_out.duplicates if held_out else 0)
    return _write_split(frame, name, dst, features, path, force, ratios, split, seed, share)


def _write_split(frame: pd.DataFrame, name: str, dst: str, features: dict[str, str], path: str, force: bool,
                 ratios: tuple[float, float, float] | str, given: str | Sequence[float],
                 seed: int | None, share: float | None = None) -> ImportReport:
    """Split ``frame`` (no x_label) per user (then hold out ``share`` of the items as cold, when given), then
    write it; duplicate pairs are dropped first (the first line kept), so each pair lands in one split."""
    seed = DEFAULT_SPLIT_SEED if seed is None else int(seed)
    by_time = "timestamp" in frame.columns
    if by_time and frame["timestamp"].isna().any():
        line = int(np.flatnonzero(frame["timestamp"].isna().to_numpy())[0]) + 2
        raise DataImportError(f"{path}: no timestamp on line {line}: a split by time needs every interaction's "
                              "timestamp (or drop the timestamp column for a seeded random split)")
    duplicated = frame.duplicated(["user", "item"], keep="first").to_numpy()
    if duplicated.any():
        logger.warning(f"{path}: dropped {int(duplicated.sum())} duplicate (user, item) pairs before splitting, "
                       "keeping the first line of each")
        frame = frame[~duplicated].reset_index(drop=True)
    labels = split_per_user(frame["user"].to_numpy(), ratios, seed,
                            frame["timestamp"].to_numpy() if by_time else None)
    frame["split"] = np.array(SPLITS)[labels]
    held_out = hold_out_cold_items(frame, share, seed, path) if share is not None else None
    if held_out is not None:
        frame, held_out = held_out
    given_text = given if isinstance(given, str) else ",".join(f"{float(v):g}" for v in given)
    how = ("loo" if ratios == "loo" else "ratio {:g}/{:g}/{:g}".format(*ratios)) + \
        (" by timestamp" if by_time else f" seed {seed}")
    return _write(frame, name, dst, features, path, force=force,
                  split_note=_split_note(ratios, seed, by_time, given_text.strip()), split_how=how,
                  dropped_before=int(duplicated.sum()), held_out=held_out)


def import_lightgcn(src: str, dst: str, name: str | None = None,
                    features: dict[str, str] | None = None, force: bool = False) -> ImportReport:
    """Import a LightGCN-layout folder (``train.txt``, optional ``valid.txt``, ``test.txt``).

    ``force`` overwrites an edited ``<name>.yaml``."""
    if not os.path.isdir(src):
        raise DataImportError(f"source folder not found: {src}")
    name = _check_name(name or os.path.basename(os.path.normpath(os.path.abspath(src))))
    _check_config_not_edited(dst, name, force)
    # a relative feature path names a file in SRC first, then one in the working directory
    features = {m: p if os.path.isabs(p) or not os.path.isfile(os.path.join(src, p)) else os.path.join(src, p)
                for m, p in (features or {}).items()}
    rows = []
    for split in SPLITS:
        path = os.path.join(src, f"{split}.txt")
        if not os.path.isfile(path):
            if split == "valid":
                continue
            raise DataImportError(f"{path} not found (a LightGCN-layout folder needs train.txt and test.txt)")
        try:
            with open(path, encoding="utf-8") as f:
                for line_no, line in enumerate(f, 1):
                    parts = line.split()
                    if not parts:
                        continue
                    try:
                        ids = [int(p) for p in parts]
                    except ValueError:
                        raise DataImportError(
                            f"{path}:{line_no}: ids must be integers: {line.strip()[:80]!r}") from None
                    if min(ids) < 0:
                        raise DataImportError(f"{path}:{line_no}: negative id in {line.strip()[:80]!r}")
                    rows += [(ids[0], item, split) for item in ids[1:]]
        except UnicodeDecodeError as exc:
            raise DataImportError(f"{path}: not UTF-8 text (cannot decode byte "
                               f"{exc.object[exc.start:exc.start + 1]!r}); save it as UTF-8") from None
        except OSError as exc:
            raise DataImportError(f"{path}: cannot read ({exc})") from None
    frame = pd.DataFrame(rows, columns=["user", "item", "split"])
    if frame.empty:
        raise DataImportError(f"{src}: no interactions")
    return _write(frame, name, dst, dict(features or {}), src, force=force,
                  split_note="# split: the source's own (train.txt, valid.txt, test.txt)\n")
