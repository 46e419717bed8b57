"""recgoat_recbole.bench: `recgoat bench` end to end (tables, resume, console), the run design, the worker's
per-dataset fixes, and the report's tables and plots."""
from __future__ import annotations

import json
import os

import pandas as pd
import yaml

from recgoat_cli import main
from tests.conftest import mini_config


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
    assert open("bench/commands.txt").read() == "recgoat " + " ".join(argv) + "\n"
    # the raw record: the budget, the validation curve, every test user's metrics
    assert record["epochs_cap"] == 1 and record["best_epoch"] == 1 and len(record["valid_curve"]) == 1
    from recgoat_recbole.bench.stats import decode_per_user

    per_user = decode_per_user(record["per_user"])
    assert abs(per_user["ndcg@10"].mean() - record["test"]["ndcg@10"]) < 1e-4
    table = open("bench/results.md").read().split("\n", 1)[1]
    assert "vs best other (NDCG@10)" in table and ", p = " in table and "‡ the cap binds" in table
    capsys.readouterr()
    assert main(argv) == 0  # second time: nothing re-trained
    assert capsys.readouterr().out.count("done earlier, reused") == 2
    # --report-only rebuilds the same table from the records alone
    assert main(argv + ["--report-only"]) == 0
    assert open("bench/results.md").read().split("\n", 1)[1] == table
    assert open("bench/commands.txt").read() == "recgoat " + " ".join(argv) + "\n"  # (report-only trains nothing)
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
    """A YAML that turns alignment off must not leak into the ablation rows."""
    from recgoat_recbole.bench.design import build_specs

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
    config = {"model": "RecGOAT", "backbone": "NCL", "num_clusters": 1000, "fusion_gamma": 0.0}  # and RecGOAT on NCL
    assert _fit_to_dataset(config, small) == {"num_clusters": 94}
    assert _fit_to_dataset({"model": "RecGOAT", "backbone": "SGL", "fusion_gamma": 0.0}, small) == {}


def test_bench_gives_backbones_that_cannot_fuse_gamma_zero_from_a_recgoat_yaml():
    """A YAML that sets fusion_gamma 0.1 (for RecGOAT; the shipped TikTok YAML once did): `bench --align` failed on
    BPR+Align and SimpleX+Align with it; they get γ 0 (recorded), the graph backbones keep it."""
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


def _record(label: str, seed: int, ndcg: float) -> dict:
    return {"dataset": "d", "label": label, "seed": seed, "epochs": 3, "epoch_s": 1.0, "total_s": 5.0,
            "peak_mib": 10.0, "device": "cpu",
            "test": {"recall@10": ndcg + 0.1, "ndcg@10": ndcg, "recall@20": ndcg + 0.2, "ndcg@20": ndcg + 0.05}}


def test_tables_and_plots_say_what_the_numbers_are(tmp_path):
    """One seed prints the value alone (it used to print '± 0.0000'); the split, the seeds and the meaning of ±
    are stated in the table and on the plot; Recall sits next to NDCG."""
    from recgoat_recbole.bench.names import METRICS
    from recgoat_recbole.bench.report import markdown_table, summarise, write_outputs

    one = markdown_table(summarise([_record("A", 1, 0.2)], METRICS), METRICS)
    assert "±" not in one.split("\n", 1)[1] and "0.2000" in one
    assert "Test split" in one and "validation" in one and "1 seed" in one
    assert "shared machine" in one and "bench_speed.py" in one  # the time columns are not a clean measurement
    header = next(line for line in one.splitlines() if line.startswith("| dataset"))
    assert header.index("recall@10") < header.index("ndcg@10") < header.index("recall@20")
    three = markdown_table(summarise([_record("A", s, 0.2 + 0.01 * s) for s in (1, 2, 3)], METRICS), METRICS)
    assert "mean ± std over 3 seeds" in three and "0.2200 ± 0.0100" in three
    paths = write_outputs([_record("A", 1, 0.2), _record("B", 1, 0.3)], str(tmp_path), METRICS, "title")
    assert os.path.getsize(paths["png"]) > 0 and "1 seed" in open(paths["markdown"]).read()


def test_bench_is_quiet_shows_epochs_and_ends_with_one_block(mini_ml, capfd):
    """No pandas / torch FutureWarnings by default, `epoch k/N` with an ETA, and a final block that says where
    the table, logs, CSV, Markdown and PNG are; --verbose shows RecBole's log."""
    with open("mini.yaml", "w") as f:
        yaml.safe_dump(mini_config(mini_ml, epochs=2), f)
    argv = ["bench", "--datasets", "ml-mini", "--config", "ml-mini=mini.yaml", "--models", "LightGCN",
            "--seeds", "1", "--epochs", "2", "--out", "bench"]
    assert main(argv) == 0
    out, err = capfd.readouterr()
    assert "FutureWarning" not in err and "epoch 1 training" not in err
    assert "epoch 2/2" in out and "ETA run" in out and "all ≤" in out
    block = out[out.rindex("=" * 100, 0, len(out) - 101):]
    assert "Test split" in block and "| ml-mini | LightGCN |" in block
    for word in ("logs:", "checkpoints:", "csv:", "markdown:", "png:"):
        assert word in block
    assert main(argv[:-1] + ["bench-v", "--verbose"]) == 0
    assert "epoch 1 training" in capfd.readouterr().err


def test_tag_makes_variants_of_a_model_rows_of_their_own(tmp_path):
    """`recgoat bench --set use_gat=true --tag gat` and the defaults share one --out: other keys, other labels
    (without the tag the second command would stop at the first one's records: other settings)."""
    from recgoat_recbole.bench.design import build_specs

    yaml_file = tmp_path / "d.yaml"
    yaml_file.write_text("dataset: d\n")
    plain = build_specs(["d"], ["RecGOAT"], [1], {}, {"d": str(yaml_file)})
    tagged = build_specs(["d"], ["RecGOAT"], [1], {"use_gat": True}, {"d": str(yaml_file)}, tag="gat")
    tuned = build_specs(["d"], ["RecGOAT"], [1], {}, {"d": str(yaml_file)}, tuned={"d": {"RecGOAT": {"k": 1}}},
                        tag="gat")
    assert plain[0].key != tagged[0].key and tagged[0].label == "RecGOAT (gat)"
    assert tuned[0].label == "RecGOAT (tuned, gat)" and tuned[0].key not in (plain[0].key, tagged[0].key)


def test_runs_at_once_share_the_cores_instead_of_oversubscribing_them(monkeypatch):
    from recgoat_recbole.bench import execute

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.delenv("MKL_NUM_THREADS", raising=False)
    monkeypatch.setattr(execute.os, "sched_getaffinity", lambda pid: {0, 1, 2, 3}, raising=False)
    assert "OMP_NUM_THREADS" not in execute.worker_env(1)  # alone: torch's own choice
    assert execute.worker_env(2)["OMP_NUM_THREADS"] == "2" and execute.worker_env(2)["MKL_NUM_THREADS"] == "2"
    assert execute.worker_env(8)["OMP_NUM_THREADS"] == "1"
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert execute.worker_env(2)["OMP_NUM_THREADS"] == "3"  # yours wins


def test_run_all_tells_each_run_how_many_share_the_machine(tmp_path):
    from recgoat_recbole.bench import execute
    from recgoat_recbole.bench.design import RunSpec

    seen = []

    def fake(spec, out_dir, verbose=True, jobs=1):
        seen.append(jobs)
        return {"key": spec.key, "test": {"ndcg@10": 0.1}, "valid": {"ndcg@10": 0.1}, "epochs": 1}

    specs = [RunSpec("d", "BPR", s) for s in (1, 2)]
    original = execute.run_one
    execute.run_one = fake
    try:
        execute.run_all(specs, str(tmp_path), log=lambda *_: None, jobs=2)
    finally:
        execute.run_one = original
    assert seen == [2, 2]


def test_a_dataset_may_take_several_yaml_files_in_order(tmp_path, monkeypatch):
    """`--config scientific=data.yaml,recbole_configs/paper.yaml`: the paper's configuration over a data YAML."""
    import argparse

    import pytest

    from recgoat_cli.commands import _dataset_configs
    from recgoat_cli.errors import UserError
    from recgoat_recbole.bench.design import build_specs

    monkeypatch.chdir(tmp_path)
    for name in ("data.yaml", "model.yaml"):
        (tmp_path / name).write_text("epochs: 1\n")
    configs = _dataset_configs(argparse.Namespace(config=["d=data.yaml,model.yaml"]))
    assert configs == {"d": ("data.yaml", "model.yaml")}
    specs = build_specs(["d"], ["BPR"], [1], {}, configs)
    assert specs[0].config_files == ("data.yaml", "model.yaml")
    with pytest.raises(UserError, match="config file not found: missing.yaml"):
        _dataset_configs(argparse.Namespace(config=["d=data.yaml,missing.yaml"]))
