"""`recgoat run --device / --gpu-id` reach RecBole's config keys (gpu_id, use_gpu), and `--nproc` (with
--world-size, --ip, --port, --group-offset) runs RecBole's multi-process path the way RecBole's own `run` does,
with the training path in every process -- once for real, two processes over gloo on the CPU."""
from __future__ import annotations

import os
import subprocess
import sys
from types import SimpleNamespace

import pytest
import torch
import yaml

from recgoat_cli import main
from tests.conftest import mini_config

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))


@pytest.fixture
def captured(monkeypatch):
    """``recgoat run`` with run_training replaced: what it was called with."""
    calls = []

    def fake(**kwargs):
        calls.append(kwargs)
        return SimpleNamespace(checkpoint=None, best_valid_result={"ndcg@10": 0.5}, test_result={"ndcg@10": 0.4})

    monkeypatch.setattr("recgoat_recbole.training.run_training", fake)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", os.environ.get("CUDA_VISIBLE_DEVICES", ""))  # Config sets it
    return calls


def _config(overrides: dict):
    from recbole.config import Config

    return Config(model="BPR", dataset="ml-100k", config_dict=overrides)


def test_device_cpu_puts_the_model_on_the_cpu_even_where_cuda_is(captured, monkeypatch, capsys):
    assert main(["run", "--dataset", "ml-100k", "--model", "BPR", "--device", "cpu"]) == 0
    overrides = captured[0]["config_dict"]
    assert overrides == {"gpu_id": "", "use_gpu": False}
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # a GPU machine, as RecBole sees it
    assert _config(overrides)["device"] == torch.device("cpu")
    # use_gpu: false alone (what `bench --device cpu` set) leaves RecBole 1.2.1 on the GPU: why gpu_id is ''
    assert _config({"use_gpu": False})["device"].type == "cuda"


def test_bench_device_cpu_keeps_its_runs_on_the_cpu_where_cuda_is(monkeypatch):
    import argparse

    from recgoat_cli.commands import _bench_common

    args = argparse.Namespace(epochs=2, stopping_step=None, learning_rate=None, device="cpu", set=None)
    common = _bench_common(args)
    assert common["gpu_id"] == "" and common["use_gpu"] is False
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert _config({k: v for k, v in common.items() if k in ("gpu_id", "use_gpu")})["device"] == torch.device("cpu")
    assert "gpu_id" not in _bench_common(argparse.Namespace(**{**vars(args), "device": None}))


@pytest.mark.parametrize("argv, expected", [
    (["--device", "cuda"], {"use_gpu": True}),
    (["--device", "cuda:1"], {"use_gpu": True, "gpu_id": "1"}),
    (["--gpu-id", "0,1"], {"gpu_id": "0,1"}),
    (["--gpu_id=2"], {"gpu_id": "2"}),  # RecBole's spelling
    (["--device", "cuda:1", "--gpu-id", "1", "--set", "gpu_id=3"], {"use_gpu": True, "gpu_id": "1"}),
], ids=["cuda", "cuda_index", "gpu_ids", "recbole_spelling", "options_win_over_set"])
def test_device_and_gpu_id_reach_the_config(captured, monkeypatch, capsys, argv, expected):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert main(["run", "--dataset", "ml-100k", "--model", "BPR", *argv]) == 0
    overrides = captured[0]["config_dict"]
    assert overrides == expected
    assert _config(overrides)["gpu_id"] == expected.get("gpu_id", "0")


@pytest.mark.parametrize("argv, cuda, needle", [
    (["--device", "cuda"], False, "CUDA is not available here"),
    (["--device", "tpu"], True, "--device expects cpu, cuda or cuda:N"),
    (["--device", "cpu", "--gpu-id", "0"], True, "contradict"),
    (["--device", "cuda:1", "--gpu-id", "0"], True, "contradict"),
    (["--gpu-id", "first"], True, "--gpu-id expects GPU numbers"),
    (["--nproc", "2", "--world-size", "3", "--group-offset", "2"], True, "--world-size 3 is smaller"),
])
def test_bad_device_options_are_one_line(captured, monkeypatch, capsys, argv, cuda, needle):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    code = main(["run", "--dataset", "ml-100k", "--model", "BPR", *argv])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("recgoat: error:") and needle in err and "\n" not in err
    assert not captured


@pytest.fixture
def spawned(monkeypatch):
    """torch.multiprocessing.spawn replaced: the calls, and rank 0's result put on the caller's queue."""
    calls = []

    def spawn(fn, args=(), nprocs=1, join=True, **kwargs):
        calls.append({"fn": fn, "args": args, "nprocs": nprocs, "join": join})
        queue = args[-1].get("queue")
        if queue is not None and fn.__module__.startswith("recgoat"):
            queue.put({"best_valid_result": {"ndcg@10": 0.5}, "test_result": {"ndcg@10": 0.25},
                       "checkpoint": "saved/LightGCN-x.pth", "log": None})

    monkeypatch.setattr(torch.multiprocessing, "spawn", spawn)
    return calls


def test_nproc_spawns_like_recboles_run(spawned, capsys):
    from recbole.quick_start import run

    from recgoat_recbole.training import _run_rank

    argv = ["run", "--dataset", "ml-100k", "--model", "LightGCN", "--nproc", "2", "--world_size=4", "--ip",
            "10.0.0.1", "--port", "6000", "--group-offset", "2", "--device", "cpu", "--epochs=3"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "checkpoint: saved/LightGCN-x.pth" in out and "test: ndcg@10 0.2500" in out
    ours = spawned[0]
    assert ours["fn"] is _run_rank and ours["nprocs"] == 2 and ours["join"]
    model, dataset, files, kwargs = ours["args"]
    assert (model, dataset, files) == ("LightGCN", "ml-100k", None)  # by name: each process looks it up
    # RecBole's own run() with the same arguments hands its processes the same config
    run("LightGCN", "ml-100k", config_dict={"epochs": 3, "gpu_id": "", "use_gpu": False}, nproc=2, world_size=4,
        ip="10.0.0.1", port="6000", group_offset=2)
    recbole = spawned[1]["args"][-1]["config_dict"]
    assert kwargs["config_dict"] == recbole == {"epochs": 3, "gpu_id": "", "use_gpu": False, "world_size": 4,
                                                "ip": "10.0.0.1", "port": "6000", "nproc": 2, "offset": 2}
    assert spawned[1]["nprocs"] == 2


def test_each_rank_trains_with_its_local_rank_and_rank_0_reports(monkeypatch):
    from recgoat_recbole import training

    calls, queue = [], []
    result = SimpleNamespace(checkpoint="saved/m.pth",
                             as_run_recbole=lambda: {"best_valid_result": {}, "test_result": {"ndcg@10": 1.0}})

    def fake(model, dataset, files, **kwargs):
        calls.append((model, kwargs))
        return result

    monkeypatch.setattr(training, "run_training", fake)
    queue_like = SimpleNamespace(put=queue.append)
    kwargs = {"config_dict": {"nproc": 2}, "queue": queue_like, "progress": print, "quiet": True}
    training._run_rank(1, "RecGOAT", None, None, kwargs)
    training._run_rank(0, "RecGOAT", None, None, kwargs)
    assert [c[1]["config_dict"]["local_rank"] for c in calls] == [1, 0]
    assert calls[0][1]["progress"] is None and calls[1][1]["progress"] is print  # one progress line per epoch
    assert len(queue) == 1 and queue[0]["checkpoint"] == "saved/m.pth"  # only rank 0 reports


def test_an_error_in_a_process_is_one_line(monkeypatch, capsys):
    from recgoat_recbole.config_check import ConfigError

    def spawn(fn, args=(), nprocs=1, join=True, **kwargs):
        args[-1]["queue"].put({"error": ConfigError("config key 'gat_heads' must be an integer ≥ 1, got 0")})
        raise torch.multiprocessing.ProcessRaisedException("Traceback ... ConfigError", 0, 123)

    monkeypatch.setattr(torch.multiprocessing, "spawn", spawn)
    code = main(["run", "--dataset", "ml-100k", "--model", "LightGCN", "--nproc", "2"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err == "recgoat: error: config key 'gat_heads' must be an integer ≥ 1, got 0"


def test_two_processes_over_gloo_from_the_command_line(mini_ml, tmp_path):
    config = mini_config(mini_ml, epochs=1, eval_batch_size=4096)
    config.pop("item_modalities")
    config.pop("user_profile_feat")
    (tmp_path / "mini.yaml").write_text(yaml.safe_dump(config))
    port = str(29100 + os.getpid() % 300)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")]))
    out = subprocess.run([sys.executable, "-m", "recgoat_cli", "run", "--config", "mini.yaml", "--model",
                          "LightGCN", "--nproc", "2", "--port", port, "--device", "cpu"],
                         capture_output=True, text=True, timeout=600, cwd=tmp_path, env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    lines = dict(line.split(": ", 1) for line in out.stdout.splitlines() if ": " in line)
    assert lines["checkpoint"].startswith("saved/LightGCN-") and os.path.isfile(tmp_path / lines["checkpoint"])
    ndcg = float(lines["test"].split("ndcg@10 ")[1].split()[0])
    assert 0 < ndcg <= 1  # rank 0's test metrics, passed back to the parent through the queue
