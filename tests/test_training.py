"""One training path (recgoat_recbole.training.run_training) for `recgoat run`, the benchmark worker and
benchmarks/bench_speed.py; reports that record the real command line; a CLI that answers --help lightly."""
from __future__ import annotations

import importlib.util
import json
import os
import shlex
import subprocess
import sys
from dataclasses import asdict
from types import SimpleNamespace

import pytest
import torch
import yaml

import recgoat_recbole.training as training
from recgoat_recbole.bench import execute, worker
from recgoat_recbole.bench.design import RunSpec
from recgoat_cli import main
from recgoat_recbole.training import TrainingResult
from tests.conftest import mini_config
from tests.helpers import FULL_RECGOAT, lightgcn_source

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HEAVY = ("torch", "recbole", "numpy", "pandas", "scipy")


def _python(code: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, env=env)


# ------------------------------------------------------------------------------------- a light command line
_HELP_AND_ERRORS = f"""
import json, sys
from recgoat_cli import build_parser, main
build_parser()
for argv in (["--help"], ["bench", "--help"], ["bench", "--no-such-option"], ["run", "--model"]):
    try:
        main(argv)
    except SystemExit:
        pass
print(json.dumps([m for m in {HEAVY!r} + ("recgoat_recbole",) if m in sys.modules]))
"""


def test_help_and_argument_errors_load_neither_torch_nor_recbole():
    """``recgoat`` is recgoat_cli:main: --help and argument errors import nothing heavy, not even the adapter."""
    out = _python(_HELP_AND_ERRORS)
    assert out.returncode == 0, out.stderr[-3000:]
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []


def test_console_script_is_the_light_entry_point():
    text = open(os.path.join(ROOT, "pyproject.toml"), encoding="utf-8").read()
    assert 'recgoat = "recgoat_cli:main"' in text


# ------------------------------------------------------------------------------------------ recgoat run
def test_recgoat_run_goes_through_run_training_and_prints_what_run_recbole_returns(mini_ml, capsys, monkeypatch):
    """The CLI's numbers are run_recbole's, to the last printed digit (the two real trainings of this file)."""
    from recbole.quick_start import run_recbole

    with open("mini.yaml", "w") as f:  # one epoch of three batches
        yaml.safe_dump(mini_config(mini_ml, epochs=1, train_batch_size=4096), f)
    calls: list[tuple[dict, TrainingResult]] = []
    real = training.run_training

    def spy(*args, **kwargs):
        result = real(*args, **kwargs)
        calls.append((kwargs, result))
        return result

    monkeypatch.setattr(training, "run_training", spy)
    assert main(["run", "--config", "mini.yaml"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    printed = [line for line in out if line.startswith(("best valid: ", "test: "))]
    # (the fixture's random split puts a few items in test only: the lines of its cold items come last)
    assert [line.split(" (")[0] for line in out[-3:]] == ["test"] * 3 and out[-4] == printed[-1]

    assert len(calls) == 1
    kwargs, result = calls[0]
    assert kwargs["saved"] is True and kwargs["config_file_list"] == ["mini.yaml"]
    assert result.epochs == 1 and len(result.epoch_times) == 1 and result.epoch_times[0] > 0
    assert result.checkpoint and os.path.isfile(result.checkpoint) and result.build_s > 0
    assert result.config["model"] == "RecGOAT" and result.trainer is not None and len(result.data) == 3

    reference = run_recbole(model="RecGOAT", config_file_list=["mini.yaml"])
    expected = [f"{label}: " + "  ".join(f"{k} {float(v):.4f}" for k, v in reference[key].items())
                for label, key in (("best valid", "best_valid_result"), ("test", "test_result"))]
    assert printed == expected
    assert result.as_run_recbole() == reference

    # what the run records besides: the validation curve and every test user's metrics, whose means are
    # RecBole's reported test metrics (RecBole rounds to 4 digits)
    assert result.valid_curve == [(1, pytest.approx(result.best_valid_score))] and result.best_epoch == 1
    per_user = result.per_user
    assert set(per_user) == {"user_id", "ndcg@10"}  # (recall@20 needs topk 20; the fixture ranks 10)
    assert len(per_user["user_id"]) == len(set(per_user["user_id"].tolist())) > 50
    for name in ("ndcg@10",):
        assert round(float(per_user[name].mean()), 4) == pytest.approx(float(result.test_result[name]), abs=1e-4)


def test_epoch_timer_records_every_epoch_and_calls_back():
    seen = []
    trainer = SimpleNamespace(_train_epoch=lambda data, epoch, show_progress=False: 0.25 * (epoch + 1))
    times = training._time_epochs(trainer, torch.device("cpu"), lambda *a: seen.append(a))
    assert trainer._train_epoch("train", 0) == 0.25 and trainer._train_epoch("train", 1, show_progress=True) == 0.5
    assert len(times) == 2 and all(t >= 0 for t in times)
    assert [(e, loss) for e, _, loss in seen] == [(0, 0.25), (1, 0.5)] and [s for _, s, _ in seen] == times


# ---------------------------------------------------------------------------------------- fake trainings
def _fake_result(tmp, **extra) -> TrainingResult:
    checkpoint = os.path.join(tmp, "best.pth")
    open(checkpoint, "w").close()
    from recbole.utils import ModelType

    config = {"device": torch.device("cpu"), "epochs": 2, "stopping_step": 10, "MODEL_TYPE": ModelType.GENERAL}
    fields = dict(config=config, best_valid_score=0.5,
                  best_valid_result={"ndcg@10": 0.5}, test_result={"ndcg@10": 0.25}, valid_score_bigger=True,
                  epoch_times=[1.0, 3.0], checkpoint=checkpoint, adjusted={"num_clusters": 2}, build_s=0.5,
                  total_s=9.0)
    fields.update(extra)
    return TrainingResult(**fields)


def test_bench_runs_the_worker_module_which_calls_run_training(tmp_path, monkeypatch, capsys):
    """run_one starts `python -m recgoat_recbole.bench.worker SPEC`; the worker trains through run_training."""
    calls = []

    def fake_training(*args, **kwargs):
        calls.append((args, kwargs))
        return _fake_result(str(tmp_path))

    def fake_subprocess(cmd, **kwargs):  # run the worker in this process instead
        assert cmd[:3] == [sys.executable, "-m", "recgoat_recbole.bench.worker"]
        worker.main(cmd[3:])
        return subprocess.CompletedProcess(cmd, 0, stdout=capsys.readouterr().out, stderr="")

    monkeypatch.setattr(training, "run_training", fake_training)
    monkeypatch.setattr(execute.subprocess, "run", fake_subprocess)
    (tmp_path / "d.yaml").write_text("dataset: d\n")
    spec = RunSpec("d", "NCL", 3, "", (str(tmp_path / "d.yaml"),), {"epochs": 2})
    record = execute.run_one(spec, "out")

    (args, kwargs), = calls
    assert args == ("NCL",) and kwargs["config_file_list"] == [str(tmp_path / "d.yaml")]
    assert kwargs["config_dict"]["seed"] == 3 and kwargs["config_dict"]["epochs"] == 2
    assert kwargs["saved"] is True and kwargs["log_details"] is False and kwargs["show_progress"] is False
    assert kwargs["before_model"] is worker._fit_to_dataset
    assert not os.path.exists(tmp_path / "best.pth")  # the checkpoint is removed once the metrics are kept
    assert record["epochs"] == 2 and record["epoch_s"] == 2.0 and record["total_s"] == 9.0
    assert record["test"] == {"ndcg@10": 0.25} and record["valid"] == {"ndcg@10": 0.5}
    assert record["checkpoint"] is None
    assert record["epochs_cap"] == 2 and record["model_type"] == "GENERAL" and record["per_user"] is None
    # recgoat demo keeps each run's best checkpoint and reports where it is
    _fake_result(str(tmp_path))
    assert os.path.exists(tmp_path / "best.pth")
    kept = execute.run_one(RunSpec("d", "NCL", 4, "", (str(tmp_path / "d.yaml"),), {"epochs": 2}), "out",
                           keep_checkpoint=True)
    assert os.path.exists(tmp_path / "best.pth") and kept["checkpoint"].endswith("best.pth")
    assert record["adjusted"] == {"num_clusters": 2} and record["peak_mib"] > 0
    assert json.load(open(os.path.join("out", "runs", f"{spec.key}.json")))["epochs"] == 2


def test_bench_speed_measures_through_run_training(tmp_path, monkeypatch):
    spec = importlib.util.spec_from_file_location("bench_speed", os.path.join(ROOT, "benchmarks", "bench_speed.py"))
    bench_speed = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench_speed)
    evaluated, calls = [], []
    trainer = SimpleNamespace(evaluate=lambda data, **kw: evaluated.append((data, kw)) or {"ndcg@10": 0.1})

    def fake_training(*args, **kwargs):
        calls.append((args, kwargs))
        kwargs["before_model"]({"device": torch.device("cpu")}, None)
        return _fake_result(str(tmp_path), epoch_times=[9.0, 1.0, 2.0, 4.0], test_result=None, checkpoint=None,
                            model=torch.nn.Linear(3, 2), trainer=trainer, data=("train", "valid", "test"))

    monkeypatch.setattr(training, "run_training", fake_training)
    row = bench_speed.measure("LightGCN", "ml-mini", ["a.yaml"], {"seed": 2020}, epochs=3)

    (args, kwargs), = calls
    assert args[:3] == ("LightGCN", "ml-mini", ["a.yaml"])
    assert args[3] == {"seed": 2020, "epochs": 4, "eval_step": 0}  # one warm-up epoch, no validation in fit
    assert kwargs["saved"] is False and kwargs["evaluate_test"] is False
    # every timed epoch is recorded, the warm-up apart
    assert row["epoch_s"] == [1.0, 2.0, 4.0] and row["warmup_s"] == 9.0
    assert row["build_s"] == 0.5 and row["params"] == 8 and row["recgoat"] == {}
    assert len(evaluated) == 7 and all(d == "valid" and not kw["load_best_model"] for d, kw in evaluated)
    assert len(row["eval_s"]) == 7 and row["knn"] == [] and row["gate"] is None


# ----------------------------------------------------------------------------------- recorded commands
def _fake_run_one(spec: RunSpec, out_dir: str, timeout=None, verbose=True) -> dict:
    """What run_one saves for a finished run, without training."""
    score = 0.1 + 0.01 * len(spec.key)
    record = {**asdict(spec), "label": spec.label, "key": spec.key, "test": {m: score for m in
              ("recall@10", "ndcg@10", "recall@20", "ndcg@20")}, "valid": {"ndcg@10": score}, "epochs": 1,
              "epoch_s": 0.1, "total_s": 1.0, "peak_mib": 10.0, "device": "cpu", "adjusted": {}}
    return execute._save(record, os.path.join(out_dir, "runs", f"{spec.key}.json"))


def test_bench_report_records_the_real_command(monkeypatch, capsys):
    monkeypatch.setattr(execute, "run_one", _fake_run_one)
    with open("d y.yaml", "w") as f:  # a name that needs quoting
        f.write("dataset: d\n")
    os.makedirs("old/runs")  # a --reuse folder must exist
    argv = ["bench", "--datasets", "d", "--config", "d=d y.yaml", "--models", "LightGCN", "Pop", "--seeds", "1",
            "--epochs", "2", "--stopping-step", "3", "--device", "cpu", "--jobs", "2", "--reuse", "old",
            "--set", "train_batch_size=512", "--out", "bench"]
    assert main(argv) == 0
    title = open("bench/results.md").readline().strip()
    assert title == f"`recgoat {shlex.join(argv)}`"
    assert "--config 'd=d y.yaml'" in title and "--jobs 2" in title and "--reuse old" in title
    assert "--stopping-step 3" in title and "--device cpu" in title


def test_tune_and_demo_record_the_real_command(monkeypatch, capsys):
    monkeypatch.setattr(execute, "run_one", _fake_run_one)
    with open("d.yaml", "w") as f:
        f.write("dataset: d\n")
    with open("grid.yaml", "w") as f:
        f.write("LightGCN: {n_layers: [1, 2]}\n")
    tune = ["tune", "--datasets", "d", "--config", "d=d.yaml", "--models", "LightGCN", "--grid", "grid.yaml",
            "--seeds", "1", "--epochs", "2", "--jobs", "2", "--device", "cpu", "--out", "tune"]
    assert main(tune) == 0
    command = "recgoat " + shlex.join(tune)
    assert open("tune/tuning.md").readline().startswith(f"`{command}` (validation only")
    assert f"# chosen on validation NDCG@10 (per dataset) by: {command}\n" in open("tune/best.yaml").read()
    demo = ["demo", "--epochs", "1", "--seeds", "5", "--stopping-step", "2", "--out", "demo"]
    assert main(demo) == 0
    assert open("demo/results.md").readline().startswith(f"`recgoat {shlex.join(demo)}` (ml-100k")


def test_bench_speed_reads_per_dataset_configs_and_data_paths():
    """One command for the whole speed table: `--config tiktok=FILE` goes to that dataset only, a bare FILE to
    every dataset, and a `NAME=` that names no dataset is a one-line error."""
    spec = importlib.util.spec_from_file_location("bench_speed", os.path.join(ROOT, "benchmarks", "bench_speed.py"))
    bench_speed = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench_speed)
    got = bench_speed.per_dataset(["tiktok=t.yaml", "common.yaml"], ["ml-100k", "tiktok"], "--config")
    assert got == {"ml-100k": ["common.yaml"], "tiktok": ["t.yaml", "common.yaml"]}
    assert bench_speed.per_dataset(None, ["ml-100k"], "--config") == {"ml-100k": []}
    with pytest.raises(SystemExit, match="'scientific' is not one of --dataset ml-100k"):
        bench_speed.per_dataset(["scientific=s.yaml"], ["ml-100k"], "--config")


def test_profile_step_reports_every_switched_on_part(mini_ml, tmp_path):
    """benchmarks/profile_step.py (the speed section's "where a step goes" tables): every part the config
    switches on gets a row, nested under its parent, and the parts add up to no more than the step."""
    config = tmp_path / "mini.yaml"
    config.write_text(yaml.safe_dump(mini_config(mini_ml, **FULL_RECGOAT, use_oat=True, wasserstein_weight=0.001)))
    out = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", "profile_step.py"), "--config",
                          str(config), "--epochs", "1"], capture_output=True, text=True, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    rows = dict(line.strip("| ").split(" | ") for line in out.stdout.splitlines()
                if line.startswith("| ") and not line.startswith("| part") and "---" not in line)
    for part in ("step (all, with data loading)", "ID branch propagation", "↳ item GAT", "↳ ↳ Sinkhorn plan", "↳ CMCL (InfoNCE)",
                 "↳ W term", "backward (every term)", "optimiser step"):
        assert part in rows, (part, out.stdout)
    ms = {k: float(v) for k, v in rows.items()}
    top = ["calculate_loss (all)", "backward (every term)", "optimiser step"]
    assert sum(ms[k] for k in top) <= ms["step (all, with data loading)"] + 1e-6


def test_eval_batch_fits_the_item_count(tmp_path, caplog):
    """TikTok evaluated one user per batch (eval_batch_size 4096 < 6,711 items): the shipped configs and the
    generated YAMLs fit 64 users, and a setting that forces one user per batch logs one warning line."""
    from types import SimpleNamespace

    from recgoat_recbole.importers import import_lightgcn
    from recgoat_recbole.training import _warn_one_user_per_batch

    src = lightgcn_source(tmp_path / "src", n_items=5000)  # img.npy has a row for each of the 5,000 items
    report = import_lightgcn(str(src), str(tmp_path / "out"), "big", {"image": "img.npy"})
    assert yaml.safe_load(open(report.config))["eval_batch_size"] >= 64 * 5000
    config = {"eval_args": {"mode": "full"}, "eval_batch_size": 4096}
    import logging

    with caplog.at_level(logging.WARNING):
        _warn_one_user_per_batch(config, SimpleNamespace(item_num=6711), logging.getLogger("t"))
        _warn_one_user_per_batch(config, SimpleNamespace(item_num=1683), logging.getLogger("t"))
    assert [r.getMessage().split(":")[0] for r in caplog.records] == ["eval_batch_size 4096 < 2 x 6,711 items"]
