"""The feature-file format, and the alignment of its rows to RecBole's internal ids *by token*.

Two layouts are read:

- ``.npy`` -- MMRec's convention: a float [n, dim] array whose row r is the item (or user) with token ``r``
  (``"0"``, ``"1"``, ...). A sidecar text file ``<file>.ids`` (one token per line) overrides that convention.
- ``.npz`` -- what ``recgoat features`` writes: ``features`` float [n, dim], ``ids`` the n tokens (strings),
  and optionally ``mask`` (bool [n], False where a row is a fallback, e.g. an unreadable image).

Rows are never matched by position to RecBole ids: RecBole remaps tokens to ids in order of appearance and
drops filtered users/items, so :func:`align_rows` looks every id's token up in the file.

Sizes are checked against the file before anything is allocated (a header can claim any shape):

- an array's header may claim no more bytes than the file (``.npy``) or the zip member (``.npz``) holds;
- a compressed ``.npz`` member may inflate to at most ``max(256 MiB, 64 x its compressed size)`` (its declared
  size, read from the zip directory before decompressing; zip never yields more than the declared size);
- tokens (``ids``, a ``.ids`` sidecar) are at most 4096 characters, and a sidecar's fixed-width token array
  at most ``max(256 MiB, 64 x the sidecar's size)``.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import tempfile
import zipfile
import zlib
from dataclasses import dataclass
from typing import BinaryIO, Callable, Sequence

import numpy as np

__all__ = ["FeatureFile", "FeatureFileError", "read_features", "write_features", "align_rows",
           "file_fingerprint", "content_digest", "normalise_rows", "reusable_cache", "atomic_write", "new_file_mode",
           "current_umask", "read_npz_members", "check_output_path", "check_mmrec_output", "mmrec_rows",
           "MMREC_MAX_ROWS_PER_ID", "MAX_TOKEN_CHARS", "INFLATE_FREE_BYTES", "INFLATE_RATIO"]

logger = logging.getLogger(__name__)


class FeatureFileError(ValueError):
    """A feature file that cannot be used; the message names the file and the problem."""


@dataclass
class FeatureFile:
    path: str
    tokens: np.ndarray  # [n] str
    features: np.ndarray  # [n, dim] float32
    mask: np.ndarray | None = None  # [n] bool
    split: str | None = None  # user profiles: fingerprint of the training split they were built from


_NPY_MAGIC = b"\x93NUMPY"
_ZIP_MAGIC = b"PK"  # a local file header, or the end record of an empty archive
_READ_ERRORS = (ValueError, OSError, EOFError, KeyError, zipfile.BadZipFile, zlib.error)
_NONE_LIMIT = 1e15  # |x| above this with feature_norm: none lets float32 dot products overflow
MAX_TOKEN_CHARS = 4096  #: the longest token (item / user id) a feature file may hold
INFLATE_FREE_BYTES = 256 << 20  #: what any compressed .npz member (or a sidecar's token array) may grow to
INFLATE_RATIO = 64  #: ... or this many times its size on disk, if that is more
_PICKLED = "holds Python objects (pickled), refused"
_NUMERIC = "features must be real numeric (float or int), got dtype {}"


def _sniff(path: str) -> None:
    """Refuse, by content, what ``np.load`` would mis-read: empty files, torch/pickle files, wrong extensions."""
    with open(path, "rb") as f:
        head = f.read(8)
    if not head:
        raise FeatureFileError(f"{path}: the feature file is empty (0 bytes); rewrite it")
    is_npz = path.endswith(".npz")
    if head.startswith(_ZIP_MAGIC):
        try:
            with zipfile.ZipFile(path) as archive:
                names = archive.namelist()
        except (zipfile.BadZipFile, OSError, EOFError) as exc:
            raise FeatureFileError(f"{path}: cannot read: truncated or corrupt zip/.npz archive ({exc})") from exc
        if any(n == "data.pkl" or n.endswith("/data.pkl") for n in names):
            raise FeatureFileError(
                f"{path}: is a PyTorch torch.save file, not a numpy feature file; convert it, e.g. "
                f"np.save(path, tensor.numpy()) for .npy or write_features(...) for .npz"
            )
        if not is_npz:
            arrays = sorted(n[:-4] if n.endswith(".npy") else n for n in names)
            raise FeatureFileError(f"{path}: is an .npz archive (arrays {arrays}), not a .npy array; rename it to .npz")
    elif head.startswith(_NPY_MAGIC):
        if is_npz:
            raise FeatureFileError(f"{path}: is a .npy array, not an .npz archive; rename it to .npy")
    elif head[:1] == b"\x80":
        raise FeatureFileError(
            f"{path}: cannot read: a Python pickle (e.g. a legacy torch.save), refused because unpickling can run "
            f"code; save a float array with np.save / write_features"
        )
    else:
        raise FeatureFileError(f"{path}: cannot read as a numpy feature file (no .npy/.npz header: {head!r})")


def read_features(path: str | os.PathLike) -> FeatureFile:
    """Read and validate a ``.npy`` / ``.npz`` feature file (see the module docstring).

    Anything unusable -- empty, truncated, a torch or pickle file, the wrong extension, no rows or columns, a
    non-numeric dtype, NaN/Inf, values beyond float32, a header claiming more than the file holds, a zip bomb,
    over-long tokens -- raises one :class:`FeatureFileError` naming the file.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FeatureFileError(f"feature file not found: {path}")
    _sniff(path)
    mask = tokens = split = None
    try:
        if path.endswith(".npz"):
            arrays = _read_npz(path)
            features, ids, mask = arrays["features"], arrays["ids"], arrays.get("mask")
            if "split" in arrays:
                split_array = arrays["split"]
                if split_array.size != 1:
                    raise FeatureFileError(f"{path}: 'split' must hold one training-split fingerprint, got "
                                           f"{split_array.size} values (shape {split_array.shape}); rebuild the file")
                split = str(split_array.reshape(-1)[0])
            if ids.ndim != 1:
                raise FeatureFileError(f"{path}: ids must be a 1-d array of tokens, got shape {ids.shape}")
            tokens = ids.astype(str)
        else:
            with open(path, "rb") as f:
                _npy_header(f, path, "the .npy content", os.fstat(f.fileno()).st_size, "the file", "fiu")
                f.seek(0)
                features = np.lib.format.read_array(f, allow_pickle=False)
    except _READ_ERRORS as exc:
        if isinstance(exc, FeatureFileError):
            raise
        what = _PICKLED if "Object arrays" in str(exc) else str(exc)
        raise FeatureFileError(f"{path}: cannot read as a numpy feature file ({what})") from exc
    if features.ndim != 2:
        raise FeatureFileError(f"{path}: features must be a 2-d [rows, dim] array, got shape {features.shape}")
    if features.dtype.kind not in "fiu":  # float, int, unsigned; not bool, complex, timedelta, str, object
        raise FeatureFileError(f"{path}: " + _NUMERIC.format(features.dtype))
    if features.shape[0] == 0:
        raise FeatureFileError(f"{path}: the feature file has no rows (shape {features.shape})")
    if features.shape[1] == 0:
        raise FeatureFileError(f"{path}: features have 0 columns (shape {features.shape})")
    if tokens is None:
        tokens = _sidecar_tokens(path, len(features))
    if len(tokens) != len(features):
        raise FeatureFileError(f"{path}: {len(features)} feature rows but {len(tokens)} tokens")
    if mask is not None:
        if mask.ndim != 1 or mask.dtype.kind not in "biu":
            raise FeatureFileError(f"{path}: mask must be a 1-d bool array, got {mask.dtype} of shape {mask.shape}")
        if len(mask) != len(features):
            raise FeatureFileError(f"{path}: {len(features)} feature rows but a mask of {len(mask)}")
        mask = mask.astype(bool)
    if features.dtype.kind == "f":
        bad = ~np.isfinite(features).all(axis=1)
        if bad.any():
            raise FeatureFileError(
                f"{path}: {int(bad.sum())} rows contain NaN or Inf (first: token {str(tokens[np.argmax(bad)])!r})"
            )
        if features.dtype.itemsize > 4:
            big = (np.abs(features) > np.finfo(np.float32).max).any(axis=1)
            if big.any():
                raise FeatureFileError(
                    f"{path}: {int(big.sum())} rows hold values beyond the float32 range (|x| > 3.4e38; first: "
                    f"token {str(tokens[np.argmax(big)])!r}); rescale the features"
                )
    features = features.astype(np.float32, copy=False)
    unique, counts = np.unique(tokens, return_counts=True)
    if (counts > 1).any():
        raise FeatureFileError(
            f"{path}: duplicate tokens, e.g. {unique[counts > 1][:5].tolist()} ({int((counts > 1).sum())} in all)"
        )
    return FeatureFile(path, tokens, features, mask, split)


# what each .npz member may hold: (dtype kinds, message when another kind); tokens are also width-checked
_MEMBERS = {
    "features": ("fiu", _NUMERIC),
    "ids": ("USiu", "ids must be tokens (strings or integers), got dtype {}"),
    "mask": ("biu", "mask must be a 1-d bool array, got dtype {}"),
    "split": ("US", "'split' must be a training-split fingerprint (a string), got dtype {}"),
}


def _npy_header(f: BinaryIO, path: str, name: str, size: int, holder: str, kinds: str,
                kind_message: str = _NUMERIC) -> tuple[tuple[int, ...], np.dtype]:
    """Read the ``.npy`` header at ``f`` and check it before any allocation: the bytes it claims must fit in
    the ``size`` bytes of ``holder`` (the file or the zip member), the dtype must be of ``kinds`` and hold no
    Python objects, and a string dtype at most :data:`MAX_TOKEN_CHARS` characters."""
    try:
        version = np.lib.format.read_magic(f)
    except ValueError as exc:
        raise FeatureFileError(f"{path}: {name} is not a .npy array ({exc})") from None
    if version == (1, 0):
        shape, _, dtype = np.lib.format.read_array_header_1_0(f)
    elif version == (2, 0):
        shape, _, dtype = np.lib.format.read_array_header_2_0(f)
    else:
        raise FeatureFileError(f"{path}: {name} uses .npy format version {version}, not read; re-save it with "
                               f"np.save")
    if dtype.hasobject:
        raise FeatureFileError(f"{path}: cannot read as a numpy feature file ({name} {_PICKLED})")
    if dtype.kind not in kinds and math.prod(shape):  # (an empty array holds nothing: later checks name it)
        raise FeatureFileError(f"{path}: " + kind_message.format(dtype))
    chars = dtype.itemsize // 4 if dtype.kind == "U" else dtype.itemsize
    if dtype.kind in "US" and chars > MAX_TOKEN_CHARS:
        raise FeatureFileError(f"{path}: {name} of dtype {dtype.str} holds strings of up to {chars} "
                               f"characters (limit {MAX_TOKEN_CHARS}); tokens that long are refused")
    claimed = math.prod(int(d) for d in shape) * dtype.itemsize
    available = size - f.tell()
    if claimed > available:
        raise FeatureFileError(f"{path}: {name}: header claims {claimed} bytes (shape {tuple(shape)}, {dtype.str}) "
                               f"but {holder} holds {max(available, 0)}; truncated or forged")
    return tuple(shape), dtype


def _read_npz(path: str) -> dict[str, np.ndarray]:
    """The members :func:`read_features` uses, each checked against the zip directory before it is read."""
    return read_npz_members(path, _MEMBERS, required=("ids", "features"), what=".npz feature file")


def read_npz_members(path: str, spec: dict[str, tuple[str, str]], required: Sequence[str],
                     what: str = ".npz file") -> dict[str, np.ndarray]:
    """The members of the ``.npz`` at ``path`` that ``spec`` names (``{name: (dtype kinds, message with {} for
    the dtype)}``), read with ``allow_pickle=False``, each checked against the zip directory before it is read
    (sizes, zip bombs, dtypes: the module docstring); one :class:`FeatureFileError` naming the file when a
    ``required`` member is missing or any check fails (a non-zip file: ``zipfile.BadZipFile``)."""
    archive_size = os.path.getsize(path)
    with zipfile.ZipFile(path) as archive:
        members = {(i.filename[:-4] if i.filename.endswith(".npy") else i.filename): i for i in archive.infolist()}
        missing = set(required) - set(members)
        if missing:
            raise FeatureFileError(f"{path}: {what} lacks {sorted(missing)} (has {sorted(members)})")
        out = {}
        for name, (kinds, kind_message) in spec.items():
            info = members.get(name)
            if info is None:
                continue
            limit = max(INFLATE_FREE_BYTES, INFLATE_RATIO * info.compress_size)
            if info.compress_size > archive_size:
                raise FeatureFileError(f"{path}: member {name!r} claims {info.compress_size} compressed bytes but "
                                       f"the archive holds {archive_size}; truncated or corrupt")
            if info.compress_type != zipfile.ZIP_STORED and info.file_size > limit:
                raise FeatureFileError(
                    f"{path}: member {name!r} would inflate {info.compress_size} bytes to {info.file_size} "
                    f"(limit max({INFLATE_FREE_BYTES >> 20} MiB, {INFLATE_RATIO}x compressed)); refused as a "
                    f"possible zip bomb -- save it uncompressed (np.savez / write_features)"
                )
            with archive.open(info) as f:
                _npy_header(f, path, f"member {name!r}", info.file_size, "the member", kinds, kind_message)
            with archive.open(info) as f:
                out[name] = np.lib.format.read_array(f, allow_pickle=False)
    return out


def _sidecar_tokens(path: str, n_rows: int) -> np.ndarray:
    """Tokens of a ``.npy``: its ``<file>.ids`` sidecar if present, else ``"0" .. "n-1"`` (MMRec's rows).

    A token longer than :data:`MAX_TOKEN_CHARS`, or a token array (fixed width: rows x longest token) beyond
    ``max(INFLATE_FREE_BYTES, INFLATE_RATIO x the sidecar's size)``, is refused before it is built."""
    sidecar = path + ".ids"
    if not os.path.isfile(sidecar):
        return np.arange(n_rows).astype(str)
    try:
        with open(sidecar, encoding="utf-8") as f:
            lines = [line.rstrip("\n") for line in f if line.strip()]
        size = os.path.getsize(sidecar)
    except (OSError, UnicodeDecodeError) as exc:
        raise FeatureFileError(f"{path}: cannot read its token sidecar {sidecar} ({exc})") from exc
    longest = max(map(len, lines), default=0)
    if longest > MAX_TOKEN_CHARS:
        raise FeatureFileError(f"{path}: its token sidecar {sidecar} has a token of {longest} characters "
                               f"(limit {MAX_TOKEN_CHARS})")
    needed = len(lines) * longest * 4
    if needed > max(INFLATE_FREE_BYTES, INFLATE_RATIO * size):
        raise FeatureFileError(f"{path}: its token sidecar {sidecar} ({len(lines)} tokens of up to {longest} "
                               f"characters) would take {needed} bytes as an array, {needed // max(size, 1)}x "
                               f"its size; shorten the longest tokens")
    return np.array(lines, dtype=str)


#: rows per block of :func:`normalise_rows` (l2, none): about this many float64 values, so each temporary of a
#: block is 32 MiB whatever the matrix
_BLOCK_VALUES = 1 << 22


def normalise_rows(x: np.ndarray, how: str, path: str, out: np.ndarray | None = None) -> np.ndarray:
    """Normalise feature rows (``feature_norm``): ``l2`` (unit rows), ``standard`` (z-score per column over
    the non-zero rows) or ``none``; zero rows stay zero. Computed in float64 with rows/columns pre-scaled by
    their largest value, so huge (e.g. 1e30) values are not zeroed by overflow; returns float32.

    ``l2`` and ``none`` treat each row alone, so they run over blocks of rows: their float64 temporaries stay
    a few tens of MiB for any matrix (a 63,001 × 4096 image matrix in one piece needed 4 float64 copies, 8 GB),
    with the same result to the bit. ``out``: a float32 array of ``x``'s shape to write the result into (``x``
    itself may be it); by default a new one.

    Raises :class:`FeatureFileError` naming ``path`` for an unknown ``how``, a non-finite result, or
    ``none`` with values so large (|x| > 1e15) that float32 dot products overflow.
    """
    if how not in ("l2", "standard", "none"):
        raise FeatureFileError(f"{path}: feature_norm must be 'l2', 'standard' or 'none', got {how!r}")
    x = np.asarray(x)
    if x.ndim != 2:
        raise FeatureFileError(f"{path}: features must be a 2-d [rows, dim] array, got shape {x.shape}")
    if out is None:
        out = np.empty(x.shape, dtype=np.float32)
    elif out.shape != x.shape or out.dtype != np.float32:
        raise ValueError(f"out must be a float32 array of shape {x.shape}, got {out.dtype} {out.shape}")
    if how == "standard":
        out[...] = _checked(_standardised(x.astype(np.float64, copy=False)), how, path)
        return out
    step = max(1, _BLOCK_VALUES // max(1, x.shape[1]))
    largest = 0.0
    for start in range(0, len(x), step):
        block = x[start:start + step].astype(np.float64)  # (a copy: out may be x)
        if how == "l2":
            block = _unit_rows(block)
        _checked(block, how, path)
        if how == "none" and block.size:
            largest = max(largest, float(np.abs(block).max()))
        out[start:start + step] = block
    if largest > _NONE_LIMIT:
        raise FeatureFileError(
            f"{path}: features reach |x| = {largest:.3g} with feature_norm: none, too large for float32 "
            f"dot products (limit {_NONE_LIMIT:.0e}); set feature_norm: l2 (or standard)"
        )
    return out


def _unit_rows(x: np.ndarray) -> np.ndarray:
    """``x``'s rows (float64) scaled to unit L2 norm, each pre-scaled by its largest |value|; zero rows stay 0."""
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        scale = np.abs(x).max(axis=1, keepdims=True) if x.size else np.ones((len(x), 1))
        scaled = x / np.where(scale > 0, scale, 1.0)
        norms = np.linalg.norm(scaled, axis=1, keepdims=True)
        return np.where(norms > 0, scaled / np.where(norms > 0, norms, 1.0), 0.0)


def _standardised(x: np.ndarray) -> np.ndarray:
    """z-scores per column over the non-zero rows of ``x`` (float64), columns pre-scaled; zero rows stay 0."""
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        nonzero = (x != 0).any(axis=1)
        out = np.zeros_like(x)
        if nonzero.any():
            rows = x[nonzero]
            scale = np.abs(rows).max(axis=0)
            scale = np.where(scale > 0, scale, 1.0)
            rows = rows / scale  # (x - mean) / (std + 1e-6) == (y - mean_y) / (std_y + 1e-6 / s), y = x / s
            out[nonzero] = (rows - rows.mean(0)) / (rows.std(0) + 1e-6 / scale)
    return out


def _checked(values: np.ndarray, how: str, path: str) -> np.ndarray:
    if not np.isfinite(values).all():
        hint = "; set feature_norm: l2" if how != "l2" else ""
        raise FeatureFileError(f"{path}: feature_norm {how!r} gives NaN or Inf values (check the file){hint}")
    return values


def write_features(path: str | os.PathLike, tokens: Sequence[str], features: np.ndarray,
                   mask: np.ndarray | None = None, split: str | None = None) -> str:
    """Write a feature file; returns the path written.

    ``.npz``: ids, features, ``mask`` and ``split`` (the training split's fingerprint, for user profiles).
    ``.npy``: MMRec's layout, a plain float32 [n, dim] array, and the tokens in the ``<path>.ids`` sidecar
    that :func:`read_features` reads. When the tokens are MMRec item ids (:func:`mmrec_rows`: plain
    non-negative integers, not sparser than :data:`MMREC_MAX_ROWS_PER_ID` rows per id), row r is item r, as
    MMRec (and ``recgoat data import --format mmrec``) expect: ``max id + 1`` rows, a zero row for each id in
    between that has no features (logged); else the rows follow ``tokens`` and only the sidecar says which is
    which. ``mask`` is not kept (its rows are zero) and ``split`` is refused.

    Atomic: each file is written to a unique temporary file in the same folder, then renamed, so a reader
    never sees a torn file and concurrent writers of the same path do not interfere (the last rename wins,
    whole).
    """
    path = os.fspath(path)
    if not path.endswith((".npz", ".npy")):
        raise ValueError(f"feature files are written as .npz (or .npy: MMRec's layout), got {path}")
    features = np.asarray(features, dtype=np.float32)
    tokens = np.asarray([str(t) for t in tokens], dtype=str)
    if features.ndim != 2 or len(features) != len(tokens):
        raise ValueError(f"features {features.shape} do not match {len(tokens)} tokens")
    if path.endswith(".npy"):
        if split is not None:
            raise ValueError(f"{path}: user profiles (with a training-split fingerprint) are written as .npz")
        try:
            rows = mmrec_rows(tokens)
        except FeatureFileError:
            rows = None  # not MMRec ids: the rows follow the tokens, the sidecar names them
        if rows is not None:  # row r = item r
            dense = np.zeros((int(rows.max()) + 1 if len(rows) else 0, features.shape[1]), dtype=np.float32)
            dense[rows] = features
            if len(dense) > len(rows):
                logger.warning(f"{path}: {len(dense) - len(rows)} of the item ids 0..{len(dense) - 1} have no "
                               "features: zero rows (MMRec reads row r as item r)")
            features, tokens = dense, np.arange(len(dense)).astype(str)
        atomic_write(path, lambda f: np.save(f, features), suffix=".tmp.npy")
        atomic_write(path + ".ids", lambda f: f.write("".join(f"{t}\n" for t in tokens.tolist()).encode()))
        return path
    arrays = {"ids": tokens, "features": features}
    if mask is not None:
        arrays["mask"] = np.asarray(mask, dtype=bool)
    if split is not None:
        arrays["split"] = np.asarray([str(split)])
    atomic_write(path, lambda f: np.savez(f, **arrays), suffix=".tmp.npz")
    return path


#: MMRec's ``.npy`` layout is written for integer ids up to this many rows per id (a zero row per missing id)
MMREC_MAX_ROWS_PER_ID = 2


def mmrec_rows(tokens: Sequence[str]) -> np.ndarray:
    """The row of each token in MMRec's ``.npy`` layout, where row r is the item with id r: the ids themselves.

    :class:`FeatureFileError` when that layout does not fit: a token that is not a plain non-negative integer
    (a sign, a leading zero, a letter: MMRec's ids are ``0 .. n-1``), a repeated token, or ids so sparse that
    the array would have more than :data:`MMREC_MAX_ROWS_PER_ID` rows per item (most of them empty)."""
    tokens = [str(t) for t in tokens]
    bad = next((t for t in tokens if not (t.isascii() and t.isdigit() and len(t) < 19 and (t == "0" or t[0] != "0"))),
               None)
    if bad is not None:
        shown = bad if len(bad) <= 40 else bad[:40] + "..."
        raise FeatureFileError(f"MMRec's .npy layout (row r = item r) needs integer item ids 0, 1, ...; found "
                               f"{shown!r}")
    rows = np.asarray([int(t) for t in tokens], dtype=np.int64)
    if len(np.unique(rows)) != len(rows):
        raise FeatureFileError("MMRec's .npy layout (row r = item r) needs each item id once; some are repeated")
    if len(rows) and int(rows.max()) + 1 > MMREC_MAX_ROWS_PER_ID * len(rows):
        raise FeatureFileError(f"MMRec's .npy layout (row r = item r) would take {int(rows.max()) + 1:,} rows for "
                               f"{len(rows):,} items (ids up to {int(rows.max()):,}), most of them empty")
    return rows


def check_mmrec_output(path: str, tokens: Sequence[str], what: str) -> None:
    """Before encoding: an ``.npy`` output must be able to take MMRec's layout for ``tokens`` (:func:`mmrec_rows`),
    else one :class:`FeatureFileError` naming the output and ``what`` holds the tokens (an ``.npz`` keeps any
    token, so it needs no check)."""
    if not os.fspath(path).endswith(".npy"):
        return
    try:
        mmrec_rows(tokens)
    except FeatureFileError as exc:
        raise FeatureFileError(f"output {os.fspath(path)}: {exc} in {what}; write .npz instead (it keeps any "
                               "token), or give MMRec's item ids") from None


def check_output_path(path: str | os.PathLike, suffixes: Sequence[str] | None = (".npz", ".npy")) -> str:
    """Check, before any work, that a feature file (any file, with ``suffixes=None``) can be written at
    ``path``; returns it.

    :class:`FeatureFileError` naming the path when it does not end in one of ``suffixes``, is a folder or
    something else that is not a regular file (a FIFO, a device), or its folder cannot be created (a file is
    in the way) or written. A missing folder is fine: the writer creates it.
    """
    path = os.fspath(path)
    for target in (path, path + ".ids") if path.endswith(".npy") else (path,):
        if os.path.isdir(target):
            example = os.path.join(target, "features" + suffixes[0]) if suffixes else None
            raise FeatureFileError(f"output {target} is a folder; give a file name"
                                   + (f", e.g. {example}" if example else ""))
        if os.path.exists(target) and not os.path.isfile(target):  # a FIFO, a device, a socket
            raise FeatureFileError(f"output {target} exists and is not a regular file")
    if suffixes is not None and not path.endswith(tuple(suffixes)):
        raise FeatureFileError(f"output {path}: a feature file must end in {' or '.join(suffixes)}")
    folder = os.path.dirname(os.path.abspath(path))
    existing = folder
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        raise FeatureFileError(f"output {path}: cannot create its folder {folder}: {existing} is a file")
    if existing != folder:
        if not os.access(existing, os.W_OK | os.X_OK):
            raise FeatureFileError(f"output {path}: cannot create its folder {folder}: {existing} is not writable")
        return path
    try:
        fd, probe = tempfile.mkstemp(dir=folder, prefix=f".{os.path.basename(path)}.", suffix=".probe")
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise FeatureFileError(f"output {path}: cannot write in {folder} ({exc.strerror or exc})") from None
    return path


def current_umask() -> int:
    """The process's umask: Linux's ``/proc/self/status`` (read without changing it); elsewhere by setting it and
    putting it back (a file another thread creates in between would get 022)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def new_file_mode() -> int:
    """The mode ``open()`` gives a new file: 0666 less the umask (0644 with the usual umask 022)."""
    return 0o666 & ~current_umask()


def atomic_write(path: str | os.PathLike, write: Callable[[BinaryIO], object], suffix: str = ".tmp",
                 mode: int | None = None) -> None:
    """Create ``path`` with ``write(file)``: into a unique temporary file in the same folder (created if
    needed), then renamed over ``path``. A reader never sees a torn file, concurrent writers do not interfere
    (the last rename wins, whole), and a failed write leaves no temporary file and the old ``path`` intact.

    The file gets ``mode``, by default :func:`new_file_mode` -- what ``open()`` would give it under the user's
    umask -- not the 0600 of the temporary file, so colleagues can read what is shared with them."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{os.path.basename(path)}.", suffix=suffix)
    try:
        if hasattr(os, "fchmod"):
            os.fchmod(fd, new_file_mode() if mode is None else mode)
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


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
        examples = ", ".join(str(ids[start + i]) for i in np.flatnonzero(absent)[:5])  # (not numpy's np.str_(...))
        msg = (f"{file.path}: {int(absent.sum())} of {len(rows)} dataset {what}s have no feature row "
               f"(e.g. tokens {examples})")
        if missing == "error":
            raise FeatureFileError(msg + "; set missing_features: zero to fill them with zeros")
        logger.warning(msg + "; filled with zeros")
    out = np.zeros((len(ids), file.features.shape[1]), dtype=file.features.dtype)
    if absent.any():
        out[start:][~absent] = file.features[rows[~absent]]
    else:  # straight into place, without a temporary copy of the matrix ("clip": unbuffered; rows are valid)
        np.take(file.features, rows, axis=0, out=out[start:], mode="clip")
    return out.astype(np.float32, copy=False)


def reusable_cache(path: str | os.PathLike, what: str) -> bool:
    """Whether the cached feature file ``path`` can be reused; a damaged one (empty, truncated) is reported
    with a warning and not reused, so the caller rebuilds it."""
    if not os.path.isfile(path):
        return False
    try:
        read_features(path)
    except FeatureFileError as exc:
        logger.warning(f"{what}: damaged cache ({exc}); rebuilding it")
        return False
    logger.info(f"{what}: reusing {os.fspath(path)}")
    return True


_DIGESTS: dict[tuple, str] = {}


def content_digest(path: str | os.PathLike) -> str:
    """sha256 of a file's bytes (memoised within the process by path, inode, size, mtime and ctime)."""
    stat = os.stat(path)  # ctime too: a write that restores the mtime (or a coarse clock) still changes it
    memo = (os.path.abspath(path), stat.st_ino, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns)
    if memo not in _DIGESTS:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        _DIGESTS[memo] = h.hexdigest()
    return _DIGESTS[memo]


def file_fingerprint(path: str | os.PathLike) -> str:
    """``absolute path|sha256 of the contents``: part of a cache key, so a changed input (even one of the same
    size written within the same second) is never reused."""
    return f"{os.path.abspath(path)}|{content_digest(path)}"
