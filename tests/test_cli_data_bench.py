"""The recgoat CLI, the importers and a smoke run of the benchmark."""
from __future__ import annotations

import json
import os

import numpy as np
import pandas as pd
import pytest
import yaml

from recgoat_recbole.cli import main
from recgoat_recbole.importers import ImportError_, import_lightgcn, import_mmrec
from recgoat_core.feature_files import read_features
from tests.conftest import mini_config, requires_shared


# --------------------------------------------------------------------------------------------------- CLI
def test_help_lists_every_subcommand(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    for command in ("run", "features", "data", "bench", "demo"):
        assert f"    {command}" in out


@pytest.mark.parametrize("argv, message", [
    (["run", "--config", "missing.yaml"], "config file not found: missing.yaml"),
    (["run", "--model", "NoSuchModel"], "unknown model 'NoSuchModel'"),
    (["data", "import", "--format", "mmrec", "nowhere", "out"], "source folder not found"),
    (["features", "text", "nope.item", "--columns", "a", "-o", "x.npz"], "table not found"),
])
def test_user_errors_are_one_line(capsys, argv, message):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("recgoat: error: ") and message in err and "\n" not in err


def test_run_trains_a_builtin_and_recgoat(mini_ml, capsys):
    cfg = mini_config(mini_ml, epochs=1)
    with open("mini.yaml", "w") as f:
        yaml.safe_dump(cfg, f)
    assert main(["run", "--config", "mini.yaml", "--no-save"]) == 0
    assert main(["run", "--config", "mini.yaml", "--model", "LightGCN", "--no-save", "--set", "epochs=1"]) == 0
    out = capsys.readouterr().out
    assert out.count("test: recall@10") == 2


# --------------------------------------------------------------------------------------------- importers
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
    with pytest.raises(ImportError_, match=message):
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
    with pytest.raises(ImportError_, match="integers"):
        import_lightgcn(str(src), str(tmp_path / "out2"))


def test_tiktok_import_and_one_epoch():
    from recbole.quick_start import run_recbole

    src = requires_shared("tiktok")
    report = import_mmrec(src, "recgoat_data")
    assert report.interactions == {"train": 59_541, "valid": 3_051, "test": 6_130}
    assert report.users == 9_308 and report.items == 6_710
    config = os.path.join(os.path.dirname(__file__), "..", "recbole_configs", "tiktok.yaml")
    result = run_recbole(model="RecGOAT", config_file_list=[config],
                         config_dict={"epochs": 1, "show_progress": False}, saved=False)
    assert result["test_result"]["ndcg@10"] > 0


# ------------------------------------------------------------------------------------------ bench smoke
def test_bench_smoke_writes_tables_and_resumes(mini_ml, capsys):
    with open("mini.yaml", "w") as f:
        yaml.safe_dump(mini_config(mini_ml, epochs=1), f)
    argv = ["bench", "--datasets", "ml-mini", "--config", "ml-mini=mini.yaml", "--models", "RecGOAT", "LightGCN",
            "--seeds", "1", "--epochs", "1", "--out", "bench"]
    assert main(argv) == 0
    for name in ("results.csv", "results.md", "results.png"):
        assert os.path.getsize(os.path.join("bench", name)) > 0
    rows = pd.read_csv("bench/results.csv")
    assert sorted(rows["model"]) == ["LightGCN", "RecGOAT"] and (rows["ndcg@10"] >= 0).all()
    record = json.load(open("bench/runs/ml-mini__RecGOAT__seed1.json"))
    assert record["epochs"] == 1 and record["peak_mib"] > 0 and record["epoch_s"] > 0
    assert open("bench/results.md").readline().strip() == "`recgoat " + " ".join(argv) + "`"  # the real argv
    capsys.readouterr()
    assert main(argv) == 0  # second time: nothing re-trained
    assert capsys.readouterr().out.count("done earlier, reused") == 2
    # --report-only trains nothing: BPR has no run, so it is listed and left out of the tables
    assert main(argv[:7] + ["BPR"] + argv[7:] + ["--report-only"]) == 0
    out = capsys.readouterr().out
    assert "ml-mini__BPR__seed1: not run yet" in out and "--report-only" in open("bench/results.md").read()
    assert sorted(pd.read_csv("bench/results.csv")["model"]) == ["LightGCN", "RecGOAT"]
    assert main(argv[:-1] + ["empty", "--report-only"]) == 2
    # a finished run is reused only with the same settings: other overrides or an edited YAML stop the bench
    capsys.readouterr()
    assert main(argv[:-3] + ["2", "--out", "bench", "--report-only"]) == 2
    assert "overrides differ: epochs 1 -> 2" in capsys.readouterr().err
    with open("mini.yaml", "a") as f:
        f.write("knn_k: 5\n")
    assert main(argv + ["--report-only"]) == 2
    assert "the YAML files changed since" in capsys.readouterr().err


def test_bench_resolves_relative_data_paths_against_the_callers_directory(tmp_path):
    """Runs execute in OUT/work/<run>: a YAML's `data_path: recgoat_data` must still mean ./recgoat_data."""
    from recgoat_recbole.bench.design import RunSpec
    from recgoat_recbole.bench.execute import _absolute_paths

    yaml_file = tmp_path / "d.yaml"
    yaml_file.write_text("dataset: d\ndata_path: recgoat_data\n")
    spec = RunSpec("d", "LightGCN", 1, "", (str(yaml_file),), {"feature_cache_dir": "cache"})
    paths = _absolute_paths(spec)
    assert paths == {"data_path": os.path.abspath("recgoat_data"), "feature_cache_dir": os.path.abspath("cache")}
    absolute = RunSpec("d", "LightGCN", 1, "", (str(yaml_file),), {"data_path": "/data", "feature_cache_dir": "/c"})
    assert _absolute_paths(absolute) == {}


def test_bench_reads_an_imported_yamls_data_path_against_the_yaml(tmp_path, monkeypatch):
    """`recgoat data import` writes DST/NAME/NAME.yaml with `data_path: ..`: from any working directory, the
    run must read DST (it read the caller's parent folder: `--config scientific=data/scientific/scientific.yaml`
    failed with "Neither [/tmp/scientific] exists")."""
    from recgoat_recbole.bench.design import RunSpec
    from recgoat_recbole.bench.execute import _absolute_paths

    folder = tmp_path / "dst" / "sci"
    folder.mkdir(parents=True)
    yaml_file = folder / "sci.yaml"
    yaml_file.write_text("dataset: sci\ndata_path: ..\n")
    elsewhere = tmp_path / "a" / "b"
    elsewhere.mkdir(parents=True)
    monkeypatch.chdir(elsewhere)
    paths = _absolute_paths(RunSpec("sci", "LightGCN", 1, "", (str(yaml_file),), {}))
    assert paths["data_path"] == str(tmp_path / "dst")


def test_ablation_specs_set_every_alignment_switch(tmp_path):
    """A dataset YAML that turns alignment off (tiktok.yaml) must not leak into the ablation rows."""
    from recgoat_recbole.bench import build_specs

    yaml_file = tmp_path / "d.yaml"
    yaml_file.write_text("dataset: d\ncmcl_weight: 0\nuse_oat: false\nwasserstein_weight: 0\n")
    specs = build_specs(["d"], ["LightGCN"], [1], {"epochs": 1}, {"d": str(yaml_file)}, ablations=True,
                        gammas=[0.3])
    by_label = {s.label: s.overrides for s in specs}
    switches = ("cmcl_weight", "use_oat", "wasserstein_weight")
    for label, overrides in by_label.items():
        if label.startswith("ablation:") and "ID-only" not in label:
            assert all(k in overrides for k in switches), label
    assert by_label["ablation: CMCL only"]["cmcl_weight"] > 0 and not by_label["ablation: CMCL only"]["use_oat"]
    assert all(by_label["ablation: RecGOAT (full)"][k] for k in switches)
    assert by_label["gamma=0.3"]["fusion_gamma"] == 0.3 and by_label["gamma=0.3"]["epochs"] == 1


def test_ncl_clusters_are_fitted_to_a_small_dataset():
    """faiss refuses more k-means clusters than points: NCL's default 1000 fails on ml-100k's 944 users."""
    from types import SimpleNamespace

    from recgoat_recbole.bench.worker import _fit_to_dataset

    small, large = SimpleNamespace(user_num=944, item_num=1683), SimpleNamespace(user_num=9308, item_num=6710)
    config = {"model": "NCL", "num_clusters": 1000}
    assert _fit_to_dataset(config, small) == {"num_clusters": 94} and config["num_clusters"] == 94
    config = {"model": "NCL", "num_clusters": 1000}
    assert _fit_to_dataset(config, large) == {} and config["num_clusters"] == 1000
    assert _fit_to_dataset({"model": "LightGCN"}, small) == {}
    config = {"model": "NCL+Align", "num_clusters": 1000}  # the plugin on NCL failed on ml-100k for this
    assert _fit_to_dataset(config, small) == {"num_clusters": 94}


def test_bench_gives_backbones_that_cannot_fuse_gamma_zero_from_a_recgoat_yaml():
    """recbole_configs/tiktok.yaml sets fusion_gamma 0.1 (for RecGOAT): `bench --align` failed on BPR+Align and
    SimpleX+Align with it; they get γ 0 (recorded), the graph backbones keep it."""
    from types import SimpleNamespace

    from recgoat_recbole.bench.worker import _fit_to_dataset

    data = SimpleNamespace(user_num=9308, item_num=6710)
    for model in ("BPR+Align", "SimpleX+Align"):
        config = {"model": model, "fusion_gamma": 0.1}
        assert _fit_to_dataset(config, data) == {"fusion_gamma": 0.0} and config["fusion_gamma"] == 0.0
    for model in ("LightGCN+Align", "SGL+Align", "BPR"):
        config = {"model": model, "fusion_gamma": 0.1}
        assert _fit_to_dataset(config, data) == {} and config["fusion_gamma"] == 0.1
    assert _fit_to_dataset({"model": "BPR+Align", "fusion_gamma": None}, data) == {}


def test_recgoat_run_without_a_validation_split_prints_instead_of_crashing(tmp_path, capsys):
    """The LightGCN layout makes valid.txt optional: `recgoat run` trains, tests and says there was no
    validation (it used to exit 1 with AttributeError: 'NoneType' object has no attribute 'items')."""
    from recgoat_recbole.cli import main

    src = tmp_path / "lg"
    src.mkdir()
    rng = np.random.default_rng(2)
    train, test = [], []
    for u in range(30):
        items = rng.choice(40, 7, replace=False)
        train.append(" ".join(map(str, [u, *items[:6]])))
        test.append(f"{u} {items[6]}")
    (src / "train.txt").write_text("\n".join(train) + "\n")
    (src / "test.txt").write_text("\n".join(test) + "\n")
    report = import_lightgcn(str(src), str(tmp_path / "out"), "lg")
    assert report.interactions["valid"] == 0
    code = main(["run", "--config", report.config, "--model", "LightGCN", "--no-save", "--set", "epochs=1",
                 "show_progress=false"])
    out = capsys.readouterr().out
    assert code == 0 and "best valid: none (no validation split" in out and "test: recall@10" in out
