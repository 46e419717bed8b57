"""Synthetic MMRec datasets of a given shape, for the speed benchmark (``benchmarks/bench_speed.py``).

A shape is users, items, interactions and feature widths: :data:`SHAPES` holds the three datasets of the paper
(MMRec's Amazon Baby, Sports and Electronics, with 4096-d image and 384-d text features) and a small 512-d one.
:func:`ensure` writes one into a cache folder once (``<cache>/<name>/``: ``<name>.inter`` with MMRec's
``x_label`` split, ``text_feat.npy``, ``image_feat.npy`` and ``spec.json``, the manifest, written last) and
reuses it on later calls while its manifest says the same generator, shape and seed; ``recgoat data import
--format mmrec`` (:func:`recgoat_recbole.importers.import_mmrec`) imports it like the real data.
:func:`scaled` shrinks every count by a factor (``--scale 0.01``: the same generator at a tiny size, for tests).

What the data look like (fixed seed; the same bytes on every call on one machine):

- **exact counts**: every user has at least 5 interactions and every item at least 5 (5-core data, as MMRec's),
  no (user, item) pair twice, so the importer and RecBole see exactly ``users`` users, ``items`` items and
  ``interactions`` interactions;
- **per-user counts**: 5 plus a share of the rest drawn with log-normal user weights (mean = interactions /
  users, a long tail, capped); **item popularity**: 5 plus a share drawn with Pareto (power-law) item weights,
  capped at a twentieth of the users;
- **collaborative structure the features see**: items sit in clusters of about :data:`ITEMS_PER_CLUSTER`; each
  user has a favourite cluster (drawn in proportion to its interactions) and takes 1 - :data:`MIX` of its
  interactions there, the rest anywhere (an assortative configuration model: user and item slots sorted by
  cluster and paired by rank, then repeated pairs swapped away, which keeps both degree sequences);
- **features with signal**: each item has a :data:`FACTORS`-d factor (its cluster's centre plus noise); each
  modality is that factor through a random projection to its width plus Gaussian noise, so the kNN graphs
  and the alignment gate's co-occurrence lift do the work they do on real data;
- **split**: per user 8:1:1 (at least one valid and one test interaction), in MMRec's ``x_label`` column.

Memory: the interactions are a few arrays of ``interactions`` integers; the feature files are written in
chunks of :data:`CHUNK_ROWS` rows (a ``.npy`` header, then the rows, appended), so Electronics' 63,001 x 4096
float32 image matrix (1 GB) never sits in memory (nor in a memory map, whose written pages would count in the
process's resident memory). The folder is written under a temporary name and renamed into place when complete.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass, replace

import numpy as np

__all__ = ["Shape", "SHAPES", "GENERATOR", "scaled", "dataset_name", "ensure", "generate", "interactions",
           "ScaleError", "FACTORS", "MIX", "ITEMS_PER_CLUSTER", "CHUNK_ROWS"]

#: the generator's version: part of the manifest, so a cache written by another version is written again
GENERATOR = "recgoat-synthetic-1"
#: the width of the item factors the features are projected from
FACTORS = 32
#: the share of a user's interactions drawn outside its favourite cluster
MIX = 0.4
#: about this many items per cluster
ITEMS_PER_CLUSTER = 150
#: feature rows per written chunk (4096 x 4096 float32: 64 MiB)
CHUNK_ROWS = 4096
#: every user and every item has at least this many interactions (5-core)
CORE = 5
#: the noise of an item's factor around its cluster centre, and of a feature around its projected factor
FACTOR_NOISE, FEATURE_NOISE = 0.6, 1.0


class ScaleError(ValueError):
    """A shape that cannot be generated (a ``--scale`` so small that the counts cannot be 5-core)."""


@dataclass(frozen=True)
class Shape:
    """A dataset's shape: counts, the feature widths per modality, the seed, and whether it is one of the
    paper's datasets at full size (the issue's speed goals apply there)."""

    key: str
    users: int
    items: int
    interactions: int
    dims: tuple[tuple[str, int], ...]
    seed: int = 2020
    scale: float = 1.0
    paper: bool = False

    @property
    def name(self) -> str:
        """The dataset's folder and RecBole name: ``synth_baby``, ``synth_baby_x0p01`` at scale 0.01."""
        return dataset_name(self.key, self.scale)

    @property
    def label(self) -> str:
        """How tables name it: ``synthetic-baby``, ``synthetic-baby x0.01`` at scale 0.01."""
        return f"synthetic-{self.key}" + ("" if self.scale == 1 else f" x{self.scale:g}")


_AMAZON = (("text", 384), ("image", 4096))
#: ``--dataset`` names of the synthetic shapes (MMRec's counts for Baby, Sports and Electronics)
SHAPES: dict[str, Shape] = {
    "synthetic-512": Shape("512", 2900, 1600, 30450, (("text", 512), ("image", 512))),
    "synthetic-baby": Shape("baby", 19445, 7050, 160792, _AMAZON, paper=True),
    "synthetic-sports": Shape("sports", 35598, 18357, 296337, _AMAZON, paper=True),
    "synthetic-electronics": Shape("electronics", 192403, 63001, 1689188, _AMAZON, paper=True),
}


def dataset_name(key: str, scale: float = 1.0) -> str:
    return f"synth_{key}" + ("" if scale == 1 else "_x" + f"{scale:g}".replace(".", "p").replace("-", "m"))


def scaled(shape: Shape, factor: float) -> Shape:
    """``shape`` with every count multiplied by ``factor`` (rounded; feature widths and seed kept). A factor
    that leaves fewer than 20 users or items, or too few interactions for 5-core data, is a :class:`ScaleError`."""
    if not factor > 0:
        raise ScaleError(f"--scale {factor:g}: must be > 0")
    if factor == 1:
        return shape
    users, items, inter = (max(1, round(n * factor)) for n in (shape.users, shape.items, shape.interactions))
    out = replace(shape, users=users, items=items, interactions=inter, scale=factor, paper=False)
    _check(out)
    return out


def _caps(shape: Shape) -> tuple[int, int]:
    """The most interactions one user, and one item, may have."""
    u, i, n = shape.users, shape.items, shape.interactions
    user_cap = min(i, max(3 * math.ceil(n / u), min(i // 4, 500)))
    item_cap = min(u, max(3 * math.ceil(n / i), u // 20))
    return user_cap, item_cap


def _check(shape: Shape) -> None:
    u, i, n = shape.users, shape.items, shape.interactions
    if u < 20 or i < 20:
        raise ScaleError(f"{shape.label}: {u} users and {i} items; at least 20 of each are needed (a larger --scale)")
    user_cap, item_cap = _caps(shape)
    if n < CORE * max(u, i) or n > min(u * user_cap, i * item_cap):
        raise ScaleError(f"{shape.label}: {n} interactions cannot give {u} users and {i} items each "
                         f"{CORE} to {user_cap} / {item_cap} interactions")


def _counts(rng: np.random.Generator, n: int, total: int, cap: int, weights: np.ndarray) -> np.ndarray:
    """``n`` counts, each in ``[CORE, cap]``, summing to ``total``: CORE each, the rest drawn in proportion to
    ``weights``; what lands above the cap goes one by one to counts below it."""
    extra = total - CORE * n
    counts = CORE + np.bincount(rng.choice(n, size=extra, p=weights / weights.sum()), minlength=n)
    excess = int(np.clip(counts - cap, 0, None).sum())
    counts = np.minimum(counts, cap)
    while excess:
        room = np.flatnonzero(counts < cap)
        pick = rng.choice(room, size=min(excess, len(room)), replace=False)
        counts[pick] += 1
        excess -= len(pick)
    return counts


def interactions(shape: Shape) -> dict[str, np.ndarray]:
    """The interactions of ``shape`` (the module docstring): ``user``, ``item``, ``label`` (0 train, 1 valid,
    2 test), sorted by user, and ``cluster`` (each item's cluster, for the features)."""
    _check(shape)
    rng = np.random.default_rng([shape.seed, 0])
    u, i, n = shape.users, shape.items, shape.interactions
    user_cap, item_cap = _caps(shape)
    per_user = _counts(rng, u, n, user_cap, rng.lognormal(0.0, 1.0, u))
    per_item = _counts(rng, i, n, item_cap, rng.pareto(1.2, i) + 1.0)
    clusters = max(8, round(i / ITEMS_PER_CLUSTER))
    cluster = rng.integers(clusters, size=i)
    mass = np.bincount(cluster, weights=per_item, minlength=clusters)
    favourite = rng.choice(clusters, size=u, p=mass / mass.sum())
    # slots: an item's slots spread uniformly over its cluster's key range [c, c + 1); a user's slots in its
    # favourite cluster's range, or (MIX of them) at the key of a random item slot
    item_slot = np.repeat(np.arange(i), per_item)
    item_key = cluster[item_slot] + rng.random(n)
    user_slot = np.repeat(np.arange(u), per_user)
    user_key = favourite[user_slot] + rng.random(n)
    mixed = rng.random(n) < MIX
    user_key[mixed] = item_key[rng.integers(n, size=int(mixed.sum()))]
    users = user_slot[np.argsort(user_key, kind="stable")]
    items = item_slot[np.argsort(item_key, kind="stable")]
    _swap_repeats(rng, users, items, i)
    # per user: a random order, then 8:1:1 (at least one valid and one test interaction each)
    order = np.lexsort((rng.random(n), users))
    users, items = users[order], items[order]
    start = np.repeat(np.cumsum(per_user) - per_user, per_user)
    rank = np.arange(n) - start
    tests = np.maximum(1, np.rint(0.1 * per_user)).astype(np.int64)[users]
    valids = np.maximum(1, np.rint(0.1 * per_user)).astype(np.int64)[users]
    label = np.where(rank < tests, 2, np.where(rank < tests + valids, 1, 0)).astype(np.int8)
    order = np.lexsort((rng.random(n), users))  # the splits mixed within each user's lines
    return {"user": users[order], "item": items[order], "label": label[order], "cluster": cluster}


def _swap_repeats(rng: np.random.Generator, users: np.ndarray, items: np.ndarray, n_items: int) -> None:
    """Swap the item of every repeated (user, item) pair with that of a random other pair, until none is left
    (in place; every user's and every item's count stays as it is)."""
    for _ in range(1000):
        key = users * n_items + items
        order = np.argsort(key, kind="stable")
        ordered = key[order]
        repeats = order[1:][ordered[1:] == ordered[:-1]]
        if not len(repeats):
            return
        others = np.ones(len(items), dtype=bool)
        others[repeats] = False
        partners = rng.choice(np.flatnonzero(others), size=len(repeats), replace=False)
        items[repeats], items[partners] = items[partners], items[repeats]
    raise ScaleError("could not remove every repeated (user, item) pair")  # pragma: no cover


def _write_features(path: str, factors: np.ndarray, dim: int, seed: tuple[int, ...]) -> None:
    """``factors @ P + noise`` ([len(factors), dim] float32, MMRec's ``.npy``: row r = item r), written chunk by
    chunk of :data:`CHUNK_ROWS` rows after the ``.npy`` header; chunk k's noise has its own seed (``seed``, k)."""
    rows = len(factors)
    projection = np.random.default_rng([*seed, 0]).standard_normal((FACTORS, dim)) / math.sqrt(FACTORS)
    with open(path, "wb") as f:
        np.lib.format.write_array_header_1_0(f, {"descr": np.lib.format.dtype_to_descr(np.dtype("<f4")),
                                                 "fortran_order": False, "shape": (rows, dim)})
        for k, lo in enumerate(range(0, rows, CHUNK_ROWS)):
            hi = min(rows, lo + CHUNK_ROWS)
            noise = np.random.default_rng([*seed, 1 + k]).standard_normal((hi - lo, dim))
            chunk = factors[lo:hi] @ projection + FEATURE_NOISE * noise
            f.write(chunk.astype("<f4").tobytes())


def _sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(2**22), b""):
            digest.update(block)
    return digest.hexdigest()


def _manifest_head(shape: Shape) -> dict:
    """What makes a folder this shape's data (as JSON reads it back): the generator, the shape, the chunking."""
    return json.loads(json.dumps({"generator": GENERATOR, "name": shape.name, "shape": asdict(shape),
                                  "chunk_rows": CHUNK_ROWS}))


def generate(shape: Shape, folder: str) -> dict:
    """Write ``shape``'s MMRec folder at ``folder`` (which must not exist); returns its manifest (also written
    as ``folder/spec.json``, last: the counts per split, the clusters, each file's sha256)."""
    data = interactions(shape)
    parent = os.path.dirname(os.path.abspath(folder))
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(folder)}.tmp-", dir=parent)
    try:
        inter = os.path.join(tmp, f"{shape.name}.inter")
        table = np.stack([data["user"], data["item"], data["label"].astype(np.int64)], axis=1)
        with open(inter, "w", encoding="utf-8") as f:
            f.write("userID\titemID\tx_label\n")
            for lo in range(0, len(table), 262144):
                np.savetxt(f, table[lo:lo + 262144], fmt="%d", delimiter="\t")
        del table
        rng = np.random.default_rng([shape.seed, 100])
        n_clusters = int(data["cluster"].max()) + 1
        centres = rng.standard_normal((n_clusters, FACTORS))
        factors = centres[data["cluster"]] + FACTOR_NOISE * rng.standard_normal((shape.items, FACTORS))
        for m, (modality, dim) in enumerate(shape.dims):
            _write_features(os.path.join(tmp, f"{modality}_feat.npy"), factors, dim, (shape.seed, 200 + m))
        counts = np.bincount(data["label"], minlength=3)
        manifest = {**_manifest_head(shape),
                    "counts": {"users": shape.users, "items": shape.items, "interactions": shape.interactions,
                               "train": int(counts[0]), "valid": int(counts[1]), "test": int(counts[2])},
                    "clusters": n_clusters,
                    "files": {f: _sha256(os.path.join(tmp, f)) for f in sorted(os.listdir(tmp))}}
        with open(os.path.join(tmp, "spec.json"), "w", encoding="utf-8") as f:
            json.dump(manifest, f, indent=1, sort_keys=True)
        os.rename(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return json.loads(json.dumps(manifest))  # (as a later call reads it back)


def ensure(shape: Shape, cache: str) -> tuple[str, dict]:
    """``(folder, manifest)`` of ``shape`` under ``cache`` (``<cache>/<name>``): the folder of an earlier call
    when its manifest names this generator, shape and seed, else written anew (:func:`generate`)."""
    folder = os.path.join(cache, shape.name)
    try:
        with open(os.path.join(folder, "spec.json"), encoding="utf-8") as f:
            manifest = json.load(f)
        head = _manifest_head(shape)
        if {k: manifest.get(k) for k in head} == head:
            return folder, manifest
    except (OSError, ValueError):
        pass
    if os.path.lexists(folder):
        shutil.rmtree(folder)
    return folder, generate(shape, folder)
