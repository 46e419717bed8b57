"""`recgoat data import --format mmrec --cold-items SHARE [--seed S]`: item cold-start. SHARE of the items leave
training entirely (half of them to valid, half to test), the rest of the split stays, users left without a
train interaction are dropped and counted, it is all recorded in the YAML's header; an x_label split that
already has cold items imports as it is, and the report counts them."""
from __future__ import annotations

import os

import numpy as np
import pandas as pd
import pytest

from recgoat_cli import main
from recgoat_recbole.importers import DataImportError, hold_out_cold_items, import_mmrec
from tests.helpers import imported_splits


def _source(folder, label: bool = True, n_users: int = 30, n_items: int = 40, extra=(), rows_of_features=None) -> str:
    """An MMRec folder: ``toy.inter`` (userID, itemID[, x_label]: per user 8 items, the 7th valid, the 8th
    test) plus ``extra`` rows, and ``text_feat.npy``."""
    rng = np.random.default_rng(0)
    os.makedirs(folder)
    rows = []
    for u in range(n_users):
        for k, i in enumerate(rng.choice(n_items, 8, replace=False)):
            rows.append((u, int(i), 2 if k == 7 else 1 if k == 6 else 0))
    rows += list(extra)
    frame = pd.DataFrame(rows, columns=["userID", "itemID", "x_label"])
    if not label:
        frame = frame.drop(columns="x_label")
    frame.to_csv(f"{folder}/toy.inter", sep="\t", index=False)
    np.save(f"{folder}/text_feat.npy", rng.normal(size=(rows_of_features or n_items, 4)).astype(np.float32))
    return folder


def _splits(folder: str) -> pd.DataFrame:
    return imported_splits(folder)


def test_cold_items_leave_training_half_to_valid_half_to_test_the_rest_stays(tmp_path):
    src = _source(str(tmp_path / "src"))
    raw = pd.read_csv(f"{src}/toy.inter", sep="\t")
    n_items = raw.itemID.nunique()
    report = import_mmrec(src, str(tmp_path / "out"), cold_items="0.25", seed=3)
    held = report.held_out
    assert held.items == n_items and held.valid_items + held.test_items == round(0.25 * n_items) == 10
    assert held.valid_items == 5 and held.test_items == 5
    got = _splits(str(tmp_path / "out" / "toy"))
    valid_ids, test_ids = set(held.valid_ids), set(held.test_ids)
    assert not valid_ids & test_ids
    # no cold item in train; each half only in its own split
    assert not set(got[got.split == 0].item_id) & (valid_ids | test_ids)
    assert set(got[got.item_id.isin(valid_ids)].split) == {1} and set(got[got.item_id.isin(test_ids)].split) == {2}
    # every interaction with a cold item is there (no user was dropped here), in its half's split
    assert held.users_dropped == 0 and len(got) == len(raw)
    cold_raw = raw[raw.itemID.isin(valid_ids | test_ids)]
    assert held.valid_interactions == int(raw.itemID.isin(valid_ids).sum()) == int(got.item_id.isin(valid_ids).sum())
    assert held.test_interactions == int(raw.itemID.isin(test_ids).sum()) == int(got.item_id.isin(test_ids).sum())
    assert held.moved == int((cold_raw.x_label == 0).sum())
    # the warm part keeps the source's split
    merged = got.merge(raw, left_on=["user_id", "item_id"], right_on=["userID", "itemID"])
    warm = merged[~merged.item_id.isin(valid_ids | test_ids)]
    assert (warm.split == warm.x_label).all()
    assert report.cold == {"valid": 5, "test": 5}
    assert report.interactions == {"train": int((got.split == 0).sum()), "valid": int((got.split == 1).sum()),
                                   "test": int((got.split == 2).sum())}
    header = open(report.config).read().split("# data_path")[0]
    assert "# split: the source's own" in header
    assert f"--cold-items 0.25 --seed 3 held 10 of the {n_items} items out of training" in header
    assert f"with 5 of them ({held.valid_interactions}) is in valid, with the other 5 ({held.test_interactions})" \
        in header and f"# {held.moved} of those were train interactions" in header
    assert "no user was left without a train interaction" in header
    assert "cold items (no train interaction): 5 in valid, 5 in test" in header


def test_the_draw_is_seeded(tmp_path):
    src = _source(str(tmp_path / "src"))
    a = import_mmrec(src, str(tmp_path / "a"), cold_items=0.25, seed=1).held_out
    b = import_mmrec(src, str(tmp_path / "b"), cold_items=0.25, seed=1).held_out
    c = import_mmrec(src, str(tmp_path / "c"), cold_items=0.25, seed=2).held_out
    assert (a.valid_ids, a.test_ids) == (b.valid_ids, b.test_ids) != (c.valid_ids, c.test_ids)
    assert _splits(str(tmp_path / "a" / "toy")).equals(_splits(str(tmp_path / "b" / "toy")))
    default = import_mmrec(src, str(tmp_path / "d"), cold_items=0.25).held_out
    assert default.seed == 2020 and "--seed 2020" in open(tmp_path / "d" / "toy" / "toy.yaml").read()


def test_with_split_for_data_without_x_label(tmp_path):
    """--split first cuts each user's list, then --cold-items holds items out of it; one --seed, both recorded."""
    src = _source(str(tmp_path / "src"), label=False)
    report = import_mmrec(src, str(tmp_path / "out"), split="loo", cold_items="0.2", seed=4)
    held = report.held_out
    got = _splits(str(tmp_path / "out" / "toy"))
    cold = set(held.valid_ids) | set(held.test_ids)
    assert len(cold) == 8 and not set(got[got.split == 0].item_id) & cold
    assert set(got[got.item_id.isin(held.test_ids)].split) == {2}
    # the warm part of test is leave-one-out's: at most one warm test item per user
    warm_test = got[(got.split == 2) & ~got.item_id.isin(cold)]
    assert warm_test.groupby("user_id").size().max() == 1
    header = open(report.config).read().split("# data_path")[0]
    assert "--split loo --seed 4" in header and f"--cold-items 0.2 --seed 4 held 8 of the {held.items} items" in header
    assert report.split != "source" and report.cold["test"] == held.test_items


def test_a_user_left_without_training_is_dropped_and_counted():
    frame = pd.DataFrame({"user": np.repeat(np.arange(6), 4), "item": np.tile(np.arange(8), 3),
                          "split": ["train", "train", "valid", "test"] * 6})
    _, first = hold_out_cold_items(frame, 0.25, seed=5)
    cold_item, warm_item = first.test_ids[0], next(i for i in range(8) if i not in first.valid_ids + first.test_ids)
    # user 9 trains only on an item that will be cold (the items, so the draw, stay the same); user 10 has no
    # train interaction in the source at all, and keeps it that way
    more = pd.DataFrame({"user": [9, 9, 10], "item": [cold_item, warm_item, warm_item],
                         "split": ["train", "test", "test"]})
    out, held = hold_out_cold_items(pd.concat([frame, more], ignore_index=True), 0.25, seed=5)
    assert (held.valid_ids, held.test_ids) == (first.valid_ids, first.test_ids)
    assert held.users_dropped == 1 and held.interactions_dropped == 2
    assert 9 not in set(out.user) and 10 in set(out.user)
    assert "users left without a train interaction, dropped with the valid/test interactions they had left: 1 (2 " \
        "interactions)" in held.note()


@pytest.mark.parametrize("argv, needle", [
    (["--cold-items", "0"], "between 0 and 1"), (["--cold-items", "1"], "between 0 and 1"),
    (["--cold-items", "-0.2"], "between 0 and 1"), (["--cold-items", "x"], "between 0 and 1"),
    (["--cold-items", "nan"], "between 0 and 1"),
    (["--cold-items", "0.01"], "holds out no item"), (["--cold-items", "0.99"], "leaves none to train on"),
    (["--cold-items", "0.2", "--seed", "-1"], "non-negative"),
])
def test_bad_shares_are_one_line_errors(tmp_path, capsys, argv, needle):
    src = _source(str(tmp_path / "src"))
    code = main(["data", "import", "--format", "mmrec", src, "out", *argv])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("recgoat: error:") and needle in err and "\n" not in err
    assert not os.path.exists("out/toy")


def test_cold_items_with_the_lightgcn_layout_is_refused(tmp_path, capsys):
    code = main(["data", "import", "--format", "lightgcn", str(tmp_path), "out", "--cold-items", "0.2"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "--cold-items is for --format mmrec" in err and "\n" not in err


def test_seed_alone_is_still_refused(tmp_path):
    with pytest.raises(DataImportError, match="--seed is the seed of --split or --cold-items"):
        import_mmrec(_source(str(tmp_path / "src")), str(tmp_path / "out"), seed=3)


def test_an_x_label_split_with_cold_items_imports_as_it_is(tmp_path, caplog):
    """Items 40 and 41 occur only in valid / test: the split is kept exactly, and the report counts them."""
    src = _source(str(tmp_path / "src"), rows_of_features=42, extra=[(0, 40, 1), (1, 41, 2), (2, 41, 2)])
    raw = pd.read_csv(f"{src}/toy.inter", sep="\t")
    caplog.set_level("INFO", logger="recgoat_recbole.importers")
    assert main(["data", "import", "--format", "mmrec", src, "out"]) == 0
    got = _splits("out/toy")
    merged = got.merge(raw, left_on=["user_id", "item_id"], right_on=["userID", "itemID"])
    assert len(merged) == len(got) == len(raw) and (merged.split == merged.x_label).all()
    # (items the random rows left out of train count too: the count is of every valid/test item never in train)
    train = set(raw[raw.x_label == 0].itemID)
    expected = {s: len(set(raw[raw.x_label == k].itemID) - train) for k, s in ((1, "valid"), (2, "test"))}
    assert expected["valid"] >= 1 and expected["test"] >= 1
    header = open("out/toy/toy.yaml").read().split("# data_path")[0]
    assert (f"# cold items (no train interaction): {expected['valid']} in valid, {expected['test']} in test"
            in header) and "--cold-items" not in header
    err = caplog.text
    assert f"cold items (no train interaction): valid {expected['valid']}, test {expected['test']}" in err
