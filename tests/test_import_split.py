"""`recgoat data import --format mmrec --split ...`: MMRec-like data without x_label is split per user as RecBole
splits it (ratios or leave-one-out; by timestamp, else seeded), the split is recorded in the YAML's header, and
a source with x_label refuses --split."""
from __future__ import annotations

import os

import numpy as np
import pandas as pd
import pytest
import yaml

from recgoat_cli import main
from recgoat_recbole.importers import (DataImportError, _ratio_counts, import_mmrec, parse_split,
                                       split_per_user)
from tests.helpers import imported_splits


def _source(folder, timestamps: bool, n_users: int = 15, n_items: int = 25, label: bool = False) -> str:
    """An MMRec-like folder: ``toy.inter`` with userID, itemID [, timestamp] [, x_label] (users with 1 to 12
    interactions, timestamps with ties), and ``text_feat.npy``."""
    rng = np.random.default_rng(5)
    os.makedirs(folder)
    rows = []
    for u in range(n_users):
        for i in rng.choice(n_items, 1 + u % 12, replace=False):
            rows.append({"userID": u, "itemID": int(i), "timestamp": int(rng.integers(0, 8))})  # many ties
    frame = pd.DataFrame(rows).sample(frac=1.0, random_state=1)  # the file is not in time order
    if not timestamps:
        frame = frame.drop(columns="timestamp")
    if label:
        frame["x_label"] = 0
        frame.loc[frame.index[:5], "x_label"] = 2
    frame.to_csv(f"{folder}/toy.inter", sep="\t", index=False)
    np.save(f"{folder}/text_feat.npy", rng.normal(size=(n_items, 4)).astype(np.float32))
    return folder


def _splits(folder: str) -> pd.DataFrame:
    return imported_splits(folder)


@pytest.mark.parametrize("ratios", [(0.8, 0.1, 0.1), (0.7, 0.0, 0.3), (0.6, 0.2, 0.2), (1 / 3, 1 / 3, 1 / 3)])
def test_ratio_counts_are_recboles_rule(ratios):
    """The per-user cut is RecBole 1.2.1's own (Dataset._calcu_split_ids), for every list length."""
    from recbole.data.dataset import Dataset

    for total in range(1, 60):
        ids = Dataset._calcu_split_ids(None, tot=total, ratios=list(ratios))
        counts = np.diff([0, *ids, total]).tolist()
        assert list(_ratio_counts(total, ratios)) == counts, total


def test_leave_one_out_is_recboles_valid_and_test():
    from recbole.data.dataset import Dataset

    for total in range(1, 8):
        users = np.zeros(total, dtype=np.int64)
        got = split_per_user(users, "loo", timestamps=np.arange(total))
        parts = Dataset._split_index_by_leave_one_out(None, [list(range(total))], 2)
        expected = np.empty(total, dtype=np.int64)
        for label, index in enumerate(parts):
            expected[index] = label
        assert got.tolist() == expected.tolist(), total


def test_ratio_split_per_user_in_timestamp_order_recorded_in_the_yaml(tmp_path):
    src = _source(str(tmp_path / "src"), timestamps=True)
    report = import_mmrec(src, str(tmp_path / "out"), split="0.8,0.1,0.1")
    got = _splits(str(tmp_path / "out" / "toy"))
    raw = pd.read_csv(f"{src}/toy.inter", sep="\t")
    assert len(got) == len(raw) and report.interactions == {"train": int((got.split == 0).sum()),
                                                           "valid": int((got.split == 1).sum()),
                                                           "test": int((got.split == 2).sum())}
    assert report.interactions["valid"] > 0 and report.interactions["test"] > 0
    for user, rows in got.groupby("user_id"):
        counts = [int((rows.split == k).sum()) for k in range(3)]
        assert counts == list(_ratio_counts(len(rows), (0.8, 0.1, 0.1))), user
        # every train interaction is no later than every valid one, and valid no later than test
        for early, late in ((0, 1), (1, 2), (0, 2)):
            if counts[early] and counts[late]:
                assert rows[rows.split == early].timestamp.max() <= rows[rows.split == late].timestamp.min()
    text = open(report.config).read()
    header = text.split("# data_path")[0]
    assert "--split 0.8,0.1,0.1 --seed 2020" in header and "timestamp order" in header and "RS ratio" in header
    assert yaml.safe_load(text)["benchmark_filename"] == ["train", "valid", "test"]


def test_ties_in_time_keep_the_file_order():
    users = np.zeros(5, dtype=np.int64)
    got = split_per_user(users, "loo", timestamps=np.array([3, 1, 3, 1, 3]))  # order: 1, 3, 0, 2, 4
    assert got.tolist() == [0, 0, 1, 0, 2]


def test_without_timestamps_the_order_is_drawn_from_the_seed(tmp_path):
    src = _source(str(tmp_path / "src"), timestamps=False)
    import_mmrec(src, str(tmp_path / "a"), split="loo", seed=1)
    import_mmrec(src, str(tmp_path / "b"), split="loo", seed=1)
    import_mmrec(src, str(tmp_path / "c"), split="loo", seed=2)
    a, b, c = (_splits(str(tmp_path / d / "toy")) for d in "abc")
    assert a.equals(b) and not a.equals(c)  # the same seed, the same split; another seed, another split
    for user, rows in a.groupby("user_id"):
        n = len(rows)
        assert [int((rows.split == k).sum()) for k in range(3)] == ([1, 0, 0] if n == 1 else
                                                                      [1, 0, 1] if n == 2 else [n - 2, 1, 1])
    header = open(tmp_path / "c" / "toy" / "toy.yaml").read().split("# data_path")[0]
    assert "--split loo --seed 2" in header and "random order drawn with seed 2" in header


def test_duplicate_pairs_are_dropped_before_splitting(tmp_path):
    src = _source(str(tmp_path / "src"), timestamps=True)
    raw = pd.read_csv(f"{src}/toy.inter", sep="\t")
    pd.concat([raw, raw.head(3)]).to_csv(f"{src}/toy.inter", sep="\t", index=False)
    report = import_mmrec(src, str(tmp_path / "out"), split="loo")
    assert report.duplicates_dropped == 3 and sum(report.interactions.values()) == len(raw)


@pytest.mark.parametrize("argv, needle", [
    (["--split", "0.8,0.1,0.1"], "has an x_label column"),
    (["--seed", "3"], "--seed is the seed of --split"),
], ids=["split_with_x_label", "seed_without_split"])
def test_split_is_refused_for_a_source_with_x_label(tmp_path, capsys, argv, needle):
    src = _source(str(tmp_path / "src"), timestamps=True, label=True)
    code = main(["data", "import", "--format", "mmrec", src, "out", *argv])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("recgoat: error:") and needle in err and "\n" not in err
    assert not os.path.exists("out/toy")


@pytest.mark.parametrize("split, needle", [
    (None, "has no x_label column"), ("0.8,0.2", "three ratios"), ("a,b,c", "three ratios"),
    ("0.8,0.2,0", "train and test above 0"), ("-1,1,1", "train and test above 0"),
])
def test_no_x_label_needs_a_valid_split(tmp_path, capsys, split, needle):
    src = _source(str(tmp_path / "src"), timestamps=False)
    code = main(["data", "import", "--format", "mmrec", src, "out", *([f"--split={split}"] if split else [])])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("recgoat: error:") and needle in err and "\n" not in err


def test_split_with_the_lightgcn_layout_is_refused(tmp_path, capsys):
    code = main(["data", "import", "--format", "lightgcn", str(tmp_path), "out", "--split", "loo"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "for --format mmrec data without x_label" in err and "\n" not in err


def test_an_empty_timestamp_is_one_error_naming_the_line(tmp_path):
    src = _source(str(tmp_path / "src"), timestamps=True)
    raw = pd.read_csv(f"{src}/toy.inter", sep="\t", dtype=str)
    raw.loc[4, "timestamp"] = ""
    raw.to_csv(f"{src}/toy.inter", sep="\t", index=False)
    with pytest.raises(DataImportError, match="no timestamp on line 6"):
        import_mmrec(src, str(tmp_path / "out"), split="loo")


def test_parse_split_normalises_like_recbole():
    assert parse_split("8,1,1") == pytest.approx((0.8, 0.1, 0.1)) and parse_split(" LOO ") == "loo"
    assert parse_split((0.8, 0.1, 0.1)) == pytest.approx((0.8, 0.1, 0.1))
