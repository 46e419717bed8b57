"""RecBole's multi-process DDP on CPU (gloo) with RecGOAT: the patch `ddp_cpu`."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from recgoat_recbole import patches

SCRIPT = """
import json, sys
sys.path.insert(0, {root!r})
import recgoat_recbole
from recgoat_recbole import RecGOAT
from recbole.quick_start import run
from tests.conftest import mini_config
import os, recbole.trainer.trainer as _trainer
# Each spawned rank re-imports this module: give every rank its own clock, as when the ranks start in
# different seconds, so a rank that reloads "its own" checkpoint name finds nothing.
_trainer.get_local_time = lambda: "pid" + str(os.getpid())

if __name__ == "__main__":
    config = mini_config(json.loads(sys.argv[1]), epochs=1, eval_batch_size=4096)
    name, _, backbone = sys.argv[3].partition(":")  # RecGOAT:SGL = RecGOAT on the backbone SGL
    model = RecGOAT if name == "RecGOAT" else name  # the class, or a registered name
    if backbone:
        config["backbone"] = backbone
    if model != RecGOAT:
        config["user_profile_feat"] = None
    result = run(model, "ml-mini", config_dict=config, nproc=2, port=sys.argv[2])
    print("RESULT " + json.dumps(dict(result["test_result"])))
"""


@pytest.mark.parametrize("model", ["RecGOAT:LightGCN", "RecGOAT:SGL", "LightGCN+Align"])
def test_two_process_ddp_on_cpu_with_gloo(mini_ml, tmp_path, model):
    root = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
    script = tmp_path / "ddp_run.py"
    script.write_text(SCRIPT.format(root=root))
    port = str(29500 + (os.getpid() + 7 * len(model)) % 400)
    out = subprocess.run([sys.executable, str(script), json.dumps(mini_ml), port, model], capture_output=True, text=True,
                         timeout=600, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    line = next(l for l in out.stdout.splitlines() if l.startswith("RESULT "))
    result = json.loads(line[len("RESULT "):])
    assert set(result) == {"recall@10", "ndcg@10"} and 0 < result["ndcg@10"] <= 1


def test_original_init_device_demands_nccl_and_cuda():
    """Without the fix RecBole asserts one GPU per process (and would ask for NCCL)."""
    class FakeConfig:
        final_config_dict = {"gpu_id": "", "local_rank": 0, "nproc": 2}

    with pytest.raises(AssertionError):
        patches.ORIGINALS["ddp_cpu"]["_init_device"](FakeConfig())


def test_ensure_dir_tolerates_a_concurrent_creator(tmp_path, monkeypatch):
    """RecBole's ensure_dir checks then creates: if another rank creates the folder in between, it fails."""
    from recbole.utils.logger import ensure_dir

    target = tmp_path / "log"
    target.mkdir()  # "another rank" created it ...
    monkeypatch.setattr("os.path.exists", lambda path: False)  # ... after this rank's check
    with pytest.raises(FileExistsError):
        patches.ORIGINALS["ddp_cpu"]["ensure_dir"](str(target))
    ensure_dir(str(target))  # the fixed one does not care
