"""RecGOAT under RecBole's multi-process DDP against a single process: same config, seeds and epoch budget.

    python benchmarks/ddp_vs_single.py --dataset ml-100k --epochs 30 --learning-rate 0.005 --seeds 2020 2021 --nproc 1 2

Each run is ``recbole.quick_start.run(RecGOAT, dataset, config_file_list=[<the dataset's data YAML>],
nproc=N)`` in its own process and working directory (gloo on CPU through the patch ``ddp_cpu``; NCCL
when CUDA is available). RecBole splits every batch across the ranks (``train_batch_size / nproc`` each) and
averages the gradients, so both settings take the same optimiser steps per epoch; the metrics should agree
within seed noise. Prints a Markdown table of test Recall/NDCG@10 (mean ± std over seeds) and wall time.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

CHILD = """
import json, sys
import recgoat_recbole
from recgoat_recbole import RecGOAT
from recbole.quick_start import run

if __name__ == "__main__":
    cfg = json.loads(sys.argv[1])
    result = run(RecGOAT, cfg.pop("dataset"), config_file_list=[cfg.pop("config")], config_dict=cfg,
                 nproc=cfg.pop("nproc"), port=cfg.pop("port"))
    print("RESULT " + json.dumps({"test": dict(result["test_result"]), "valid": dict(result["best_valid_result"])}))
"""


def run_once(dataset: str, config: str, nproc: int, seed: int, epochs: int, port: int,
             learning_rate: float | None = None, stopping_step: int = 10) -> dict:
    with tempfile.TemporaryDirectory(prefix="recgoat-ddp-") as work:
        script = os.path.join(work, "child.py")
        with open(script, "w", encoding="utf-8") as f:
            f.write(CHILD)
        cfg = {"dataset": dataset, "config": config, "nproc": nproc, "port": str(port), "seed": seed,
               "epochs": epochs, "stopping_step": stopping_step, "show_progress": False,
               "feature_cache_dir": os.path.join(ROOT, "recgoat_cache")}
        if learning_rate is not None:
            cfg["learning_rate"] = learning_rate
        t0 = time.perf_counter()
        out = subprocess.run([sys.executable, script, json.dumps(cfg)], cwd=work, capture_output=True, text=True)
        seconds = time.perf_counter() - t0
    if out.returncode != 0:
        raise RuntimeError(out.stderr[-3000:])
    line = next(l for l in out.stdout.splitlines() if l.startswith("RESULT "))
    return {"nproc": nproc, "seed": seed, "seconds": seconds, **json.loads(line[len("RESULT "):])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="ml-100k")
    parser.add_argument("--config", default=None, help="default: the dataset's data YAML (recbole_configs/data/<dataset>.yaml, as recgoat bench)")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--seeds", type=int, nargs="+", default=[2020, 2021, 2022])
    parser.add_argument("--nproc", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--learning-rate", type=float, default=None)
    parser.add_argument("--stopping-step", type=int, default=10, help="as in recgoat bench")
    parser.add_argument("--json", default=None, help="also write every run to this JSON file")
    args = parser.parse_args()
    from recgoat_recbole.bench.design import find_config

    config = args.config or find_config(args.dataset)
    runs = []
    for seed in args.seeds:
        for nproc in args.nproc:
            r = run_once(args.dataset, config, nproc, seed, args.epochs, 29600 + len(runs), args.learning_rate,
                         args.stopping_step)
            runs.append(r)
            print(f"nproc={nproc} seed={seed}: test NDCG@10 {r['test']['ndcg@10']:.4f} in {r['seconds']:.0f} s",
                  flush=True)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(runs, f, indent=1)
    print("\n| processes | test recall@10 | test ndcg@10 | valid ndcg@10 | wall time (s) | seeds |")
    print("| --- | --- | --- | --- | --- | --- |")
    for nproc in args.nproc:
        sub = [r for r in runs if r["nproc"] == nproc]

        def cell(values: list[float]) -> str:
            sd = statistics.stdev(values) if len(values) > 1 else 0.0
            return f"{statistics.mean(values):.4f} ± {sd:.4f}"

        print(f"| {nproc} | {cell([r['test']['recall@10'] for r in sub])} | "
              f"{cell([r['test']['ndcg@10'] for r in sub])} | {cell([r['valid']['ndcg@10'] for r in sub])} | "
              f"{statistics.mean(r['seconds'] for r in sub):.0f} | {len(sub)} |")


if __name__ == "__main__":
    main()
