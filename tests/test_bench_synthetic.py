"""The synthetic datasets of the speed benchmark (recgoat_recbole.bench.synthetic, issue 28), at tiny scale:
the paper's shapes, exact 5-core counts at any --scale, the same bytes for the same seed, feature files
written in chunks that the importer reads, and features that carry the interactions' structure."""
from __future__ import annotations

import dataclasses
import os

import numpy as np
import pytest

from recgoat_core.feature_files import read_features
from recgoat_recbole.bench import synthetic
from recgoat_recbole.bench.synthetic import SHAPES, ScaleError, scaled
from recgoat_recbole.importers import import_mmrec


@pytest.mark.parametrize("name, factor", [("synthetic-baby", 0.01), ("synthetic-sports", 0.01),
                                          ("synthetic-electronics", 0.005), ("synthetic-512", 0.1)])
def test_the_generator_gives_exact_5_core_counts(name, factor):
    shape = scaled(SHAPES[name], factor)
    full = SHAPES[name]
    assert (shape.users, shape.items, shape.interactions) == tuple(
        round(n * factor) for n in (full.users, full.items, full.interactions))
    assert shape.dims == full.dims and shape.name.endswith("_x" + f"{factor:g}".replace(".", "p"))
    data = synthetic.interactions(shape)
    users, items, labels = data["user"], data["item"], data["label"]
    assert len(users) == shape.interactions
    assert len(np.unique(users)) == shape.users and users.max() == shape.users - 1
    assert len(np.unique(items)) == shape.items and items.max() == shape.items - 1
    assert len(np.unique(users.astype(np.int64) * shape.items + items)) == shape.interactions  # no pair twice
    assert np.bincount(users).min() >= 5 and np.bincount(items).min() >= 5  # 5-core
    for split in (1, 2):  # every user has a valid and a test interaction; ~8:1:1 overall
        assert np.bincount(users[labels == split], minlength=shape.users).min() >= 1
    assert 0.7 < np.mean(labels == 0) < 0.85
    popularity = np.sort(np.bincount(items))[::-1]  # a long tail: the top 10% of items hold far more than 10%
    assert popularity[: max(1, shape.items // 10)].sum() > 0.2 * shape.interactions


def test_the_full_shapes_are_the_papers():
    assert [(s.users, s.items, s.interactions, dict(s.dims)) for k, s in SHAPES.items() if s.paper] == [
        (19445, 7050, 160792, {"text": 384, "image": 4096}), (35598, 18357, 296337, {"text": 384, "image": 4096}),
        (192403, 63001, 1689188, {"text": 384, "image": 4096})]


def test_a_scale_too_small_for_5_core_data_is_one_error():
    with pytest.raises(ScaleError, match="at least 20"):
        scaled(SHAPES["synthetic-baby"], 0.001)
    with pytest.raises(ScaleError, match="> 0"):
        scaled(SHAPES["synthetic-baby"], 0)


def _files(folder) -> dict[str, bytes]:
    return {name: open(os.path.join(folder, name), "rb").read() for name in sorted(os.listdir(folder))}


def test_the_generator_is_deterministic_written_in_chunks_and_imported(tmp_path, monkeypatch):
    monkeypatch.setattr(synthetic, "CHUNK_ROWS", 16)  # 70 items: five chunks per feature file
    shape = scaled(SHAPES["synthetic-baby"], 0.01)
    one, manifest = synthetic.ensure(shape, str(tmp_path / "a"))
    two, _ = synthetic.ensure(shape, str(tmp_path / "b"))
    assert _files(one) == _files(two)  # same seed: the same bytes
    other, _ = synthetic.ensure(dataclasses.replace(shape, seed=7), str(tmp_path / "c"))
    assert _files(other)[f"{shape.name}.inter"] != _files(one)[f"{shape.name}.inter"]
    assert _files(other)["image_feat.npy"] != _files(one)["image_feat.npy"]
    assert sorted(manifest["files"]) == sorted(["image_feat.npy", "text_feat.npy", f"{shape.name}.inter"])
    # generated once: a second call reads the manifest and writes nothing
    monkeypatch.setattr(synthetic, "generate", lambda *a: pytest.fail("generated again"))
    assert synthetic.ensure(shape, str(tmp_path / "a")) == (one, manifest)

    report = import_mmrec(one, str(tmp_path / "data"), name=shape.name)
    assert (report.users, report.items, sum(report.interactions.values())) == (
        shape.users, shape.items, shape.interactions)
    counts = manifest["counts"]
    assert report.interactions == {s: counts[s] for s in ("train", "valid", "test")}
    for modality, dim in shape.dims:
        features = read_features(os.path.join(report.folder, report.modalities[modality])).features
        assert features.shape == (shape.items, dim) and features.dtype == np.float32
        assert np.isfinite(features).all() and np.abs(features[-16:]).sum() > 0  # the last chunk is written


def test_the_features_see_the_clusters():
    """Each modality is the item factors projected plus noise: an item's nearest neighbour by cosine is mostly in
    its cluster (the kNN graphs and the gate do real work)."""
    shape = scaled(SHAPES["synthetic-512"], 0.1)
    data = synthetic.interactions(shape)
    rng = np.random.default_rng([shape.seed, 100])
    cluster = data["cluster"]
    centres = rng.standard_normal((cluster.max() + 1, synthetic.FACTORS))
    factors = centres[cluster] + synthetic.FACTOR_NOISE * rng.standard_normal((shape.items, synthetic.FACTORS))
    path = "x.npy"
    synthetic._write_features(path, factors, 512, (shape.seed, 200))
    x = np.load(path)
    x = x / np.linalg.norm(x, axis=1, keepdims=True)
    sims = x @ x.T
    np.fill_diagonal(sims, -2)
    assert np.mean(cluster[sims.argmax(1)] == cluster) > 0.8
