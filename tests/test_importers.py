"""recgoat_recbole.importers: `recgoat data import` of the MMRec and LightGCN layouts -- splits, features,
moved folders and the generated YAML."""
from __future__ import annotations

import os
import shutil

import numpy as np
import pandas as pd
import pytest
import yaml

from recgoat_cli import main
from recgoat_recbole.importers import DataImportError, import_lightgcn, import_mmrec
from recgoat_core.feature_files import read_features
from tests.conftest import requires_shared
from tests.helpers import lightgcn_source


def _mmrec_fixture(folder, n_users=12, n_items=9, dup=False):
    rng = np.random.default_rng(0)
    os.makedirs(folder)
    # random pairs over items 3.., so the planted pairs below are the only possible duplicates
    rows = [(u, int(i), int(rng.integers(0, 3))) for u in range(n_users)
            for i in rng.choice(np.arange(3, n_items), 4, replace=False)]
    rows += [(0, 1, 0), (0, 2, 2)]
    if dup:
        rows += [(0, 1, 2)]  # the same pair again, in test
    pd.DataFrame(rows, columns=["userID", "itemID", "x_label"]).to_csv(f"{folder}/toy.inter", sep="\t", index=False)
    np.save(f"{folder}/image_feat.npy", rng.normal(size=(n_items, 4)).astype(np.float32))
    np.save(f"{folder}/text_feat.npy", rng.normal(size=(n_items, 6)).astype(np.float32))
    return folder


def test_mmrec_import_keeps_split_and_features(tmp_path):
    src = _mmrec_fixture(str(tmp_path / "src"), dup=True)
    report = import_mmrec(src, str(tmp_path / "out"))
    assert report.duplicates_dropped == 1 and set(report.modalities) == {"image", "text"}
    raw = pd.read_csv(f"{src}/toy.inter", sep="\t").drop_duplicates(["userID", "itemID"])
    for label, split in enumerate(("train", "valid", "test")):
        got = pd.read_csv(tmp_path / "out" / "toy" / f"toy.{split}.inter", sep="\t")
        expected = raw[raw["x_label"] == label]
        assert len(got) == len(expected)
    f = read_features(tmp_path / "out" / "toy" / "image.npz")
    np.testing.assert_array_equal(f.features, np.load(f"{src}/image_feat.npy"))
    config = yaml.safe_load(open(report.config))
    assert config["benchmark_filename"] == ["train", "valid", "test"]


@pytest.mark.parametrize("mutate, message", [
    (lambda p: np.save(f"{p}/image_feat.npy", np.ones((3, 4))), "3 feature rows but item ids go up to"),
    (lambda p: pd.DataFrame({"userID": [0], "itemID": [1], "x_label": [2]}).to_csv(f"{p}/toy.inter", sep="\t",
                                                                                  index=False), "train split is empty"),
    (lambda p: pd.DataFrame({"userID": [-1], "itemID": [1], "x_label": [0]}).to_csv(f"{p}/toy.inter", sep="\t",
                                                                                   index=False), "non-negative"),
    (lambda p: pd.DataFrame({"user": [0], "item": [1]}).to_csv(f"{p}/toy.inter", sep="\t", index=False), "needs columns"),
])
def test_mmrec_import_bad_input(tmp_path, mutate, message):
    src = _mmrec_fixture(str(tmp_path / "src"))
    mutate(src)
    with pytest.raises(DataImportError, match=message):
        import_mmrec(src, str(tmp_path / "out"))


def test_lightgcn_import_and_training(tmp_path):
    from recbole.quick_start import run_recbole

    src = tmp_path / "lg"
    src.mkdir()
    rng = np.random.default_rng(1)
    lines = {s: [] for s in ("train", "valid", "test")}
    for u in range(30):
        items = rng.choice(40, 8, replace=False)
        lines["train"].append(" ".join(map(str, [u, *items[:6]])))
        lines["valid"].append(f"{u} {items[6]}")
        lines["test"].append(f"{u} {items[7]}")
    for split, rows in lines.items():
        (src / f"{split}.txt").write_text("\n".join(rows) + "\n")
    np.save(tmp_path / "img.npy", rng.normal(size=(40, 5)).astype(np.float32))
    report = import_lightgcn(str(src), str(tmp_path / "out"), "lg", {"image": str(tmp_path / "img.npy")})
    assert report.interactions == {"train": 180, "valid": 30, "test": 30}
    # run_recbole reads the YAML's relative data_path (..) against the working directory: pass it (docs/data.md)
    result = run_recbole(model="RecGOAT", config_file_list=[report.config],
                         config_dict={"epochs": 1, "show_progress": False, "embedding_size": 16, "gat_heads": 2,
                                      "data_path": str(tmp_path / "out")}, saved=False)
    assert 0 <= result["test_result"]["ndcg@10"] <= 1
    (src / "train.txt").write_text("0 1 x\n")
    with pytest.raises(DataImportError, match="integers"):
        import_lightgcn(str(src), str(tmp_path / "out2"))


def test_tiktok_import_and_one_epoch():
    from recbole.quick_start import run_recbole

    src = requires_shared("tiktok")
    report = import_mmrec(src, "recgoat_data")
    assert report.interactions == {"train": 59_541, "valid": 3_051, "test": 6_130}
    assert report.users == 9_308 and report.items == 6_710
    with open(report.config, encoding="utf-8") as f:  # full ranking: 64 users of 6,711 scores per batch, not 1
        assert yaml.safe_load(f)["eval_batch_size"] >= 64 * 6_711
    result = run_recbole(model="RecGOAT", config_file_list=[report.config],
                         config_dict={"epochs": 1, "show_progress": False}, saved=False)
    assert result["test_result"]["ndcg@10"] > 0


def test_feature_paths_are_looked_up_in_the_source_folder(tmp_path, capsys):
    """docs/data.md: `recgoat data import --format lightgcn SRC DST --feature image=img.npy` with img.npy in SRC
    (it used to be looked up in the working directory only: 'feature file not found: img.npy')."""
    src = lightgcn_source(tmp_path / "gowalla")
    assert main(["data", "import", "--format", "lightgcn", str(src), "out", "--feature", "image=img.npy"]) == 0
    assert os.path.isfile("out/gowalla/image.npz")
    # a file only in the working directory still works; a file in neither place is one clear line
    shutil.copy(src / "img.npy", "here.npy")
    assert main(["data", "import", "--format", "lightgcn", str(src), "out2", "--feature", "image=here.npy"]) == 0
    capsys.readouterr()
    assert main(["data", "import", "--format", "lightgcn", str(src), "out3", "--feature", "image=none.npy"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("recgoat: error: feature file not found: none.npy") and "\n" not in err


def test_imported_folder_can_be_moved_and_still_runs(tmp_path, capsys):
    """The generated YAML used to hard-code an absolute data_path: after moving the folder, runs failed."""
    src = lightgcn_source(tmp_path / "src")
    assert main(["data", "import", "--format", "lightgcn", str(src), str(tmp_path / "old"), "--name", "lg",
                 "--feature", "image=img.npy"]) == 0
    config = yaml.safe_load((tmp_path / "old" / "lg" / "lg.yaml").read_text())
    assert not any(str(tmp_path) in str(v) for v in config.values())  # no absolute path in it
    shutil.move(str(tmp_path / "old"), str(tmp_path / "elsewhere" / "moved"))
    os.chdir(tmp_path / "elsewhere")  # and from another working directory
    capsys.readouterr()
    assert main(["run", "--config", "moved/lg/lg.yaml", "--model", "LightGCN", "--no-save", "--epochs=1"]) == 0
    assert "test: recall@10" in capsys.readouterr().out


def test_imported_yaml_carries_the_data_and_patience_50_but_no_model_setting(tmp_path):
    """The imported YAML describes the data: RecGOAT's validated settings (no GAT views, γ 0, the alignment
    gate) are its defaults now, not keys of the YAML (tests/test_data_yaml.py); patience 50 for every model."""
    from recgoat_recbole.keys import defaults

    src = lightgcn_source(tmp_path / "src")
    assert main(["data", "import", "--format", "lightgcn", str(src), "out", "--name", "mm",
                 "--feature", "image=img.npy"]) == 0
    config = yaml.safe_load(open("out/mm/mm.yaml"))
    assert not set(config) & (set(defaults("RecGOAT")) - {"item_modalities"}) and config["stopping_step"] == 50
    assert config["item_modalities"] == {"image": "image.npz"}
    assert main(["data", "import", "--format", "lightgcn", str(src), "out", "--name", "plain"]) == 0
    plain = yaml.safe_load(open("out/plain/plain.yaml"))
    assert "use_gat" not in plain and "align_gate" not in plain and plain["stopping_step"] == 50


def test_a_comma_separated_inter_says_tabs_are_expected(tmp_path, capsys):
    from recgoat_cli import main

    src = tmp_path / "src"
    src.mkdir()
    (src / "d.inter").write_text("userID,itemID,x_label\n0,0,0\n1,1,1\n")
    assert main(["data", "import", "--format", "mmrec", str(src), str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert "looks comma-, semicolon- or space-separated; .inter files are tab-separated" in err and "\n" not in err
