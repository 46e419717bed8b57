"""Per-component diagnosis: one model, several config variants, several seeds, each run in its own process.

Every run goes through :func:`recgoat_recbole.training.run_training` (early stopping on the config's
``valid_metric``, test read once from the checkpoint validation chose) with one torch thread, and appends one
JSON line (variant, seed, epochs, valid and test metrics, seconds) to ``--out``; a finished (variant, seed) in
``--out`` is not run again. At the end the file is summarised as a Markdown table (mean ± std over seeds).

    python benchmarks/component_sweep.py --config data/scientific/scientific.yaml --seeds 2020 2021 2022 \\
        --variant "" --variant "use_gat=false" --variant "use_gat=false use_oat=false" --out sweep.jsonl
    python benchmarks/component_sweep.py --model LightGCN --config ... --variant "" --out sweep.jsonl
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time


def _parse(variant: str) -> dict:
    import yaml

    out = {}
    for pair in variant.split():
        key, _, value = pair.partition("=")
        out[key] = yaml.safe_load(value)
    return out


def _one(model: str, config: str, seed: int, variant: str) -> dict:
    """Train and test one run in this process (the child)."""
    import logging

    import torch

    from recgoat_recbole.training import run_training

    torch.set_num_threads(1)
    logging.disable(logging.INFO)
    settings = {"seed": seed, "show_progress": False, "save_dataset": False, "epochs": 300, "stopping_step": 10,
                **_parse(variant)}
    start = time.time()
    result = run_training(model, config_file_list=[config], config_dict=settings, log_details=False)
    return {"model": model, "variant": variant, "seed": seed, "epochs": result.epochs,
            "valid": {k: round(float(v), 4) for k, v in (result.best_valid_result or {}).items()},
            "test": {k: round(float(v), 4) for k, v in (result.test_result or {}).items()},
            "seconds": round(time.time() - start, 1), "epoch_s": round(result.mean_epoch_s, 3)}


def summarise(path: str, metric: str = "ndcg@10") -> str:
    """A Markdown table of ``path``: per model and variant, valid and test ``metric`` (mean ± std over seeds)."""
    rows: dict[tuple[str, str], list[dict]] = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            record = json.loads(line)
            rows.setdefault((record["model"], record["variant"]), []).append(record)

    def stat(values: list[float]) -> str:
        if len(values) == 1:
            return f"{values[0]:.4f}"
        return f"{statistics.mean(values):.4f} ± {statistics.stdev(values):.4f}"

    lines = [f"| model | variant | valid {metric} | test {metric} | epochs | seeds |", "| --- | --- | --- | --- | --- | --- |"]
    for (model, variant), records in rows.items():
        lines.append(f"| {model} | `{variant or 'defaults'}` | {stat([r['valid'][metric] for r in records])} | "
                     f"{stat([r['test'][metric] for r in records])} | "
                     f"{', '.join(str(r['epochs']) for r in records)} | {', '.join(str(r['seed']) for r in records)} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="RecGOAT")
    parser.add_argument("--config", required=True, help="the dataset YAML (e.g. what `recgoat data import` wrote)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[2020])
    parser.add_argument("--variant", action="append", default=None,
                        help="space-separated KEY=VALUE overrides; repeat for several; '' = the defaults")
    parser.add_argument("--out", required=True, help="JSON lines, appended; finished runs are skipped")
    parser.add_argument("--child", nargs=2, metavar=("SEED", "VARIANT"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print("RESULT " + json.dumps(_one(args.model, args.config, int(args.child[0]), args.child[1])), flush=True)
        return 0
    done = set()
    if os.path.isfile(args.out):
        with open(args.out, encoding="utf-8") as f:
            done = {(r["model"], r["variant"], r["seed"]) for r in map(json.loads, f)}
    env = dict(os.environ, OMP_NUM_THREADS="1")
    for seed in args.seeds:
        for variant in args.variant or [""]:
            if (args.model, variant, seed) in done:
                continue
            cmd = [sys.executable, __file__, "--model", args.model, "--config", args.config, "--out", args.out,
                   "--child", str(seed), variant]
            out = subprocess.run(cmd, capture_output=True, text=True, env=env)
            lines = [line for line in out.stdout.splitlines() if line.startswith("RESULT ")]
            if out.returncode != 0 or not lines:
                print(f"failed: {args.model} seed {seed} {variant!r}: {out.stderr.strip().splitlines()[-1:]}")
                continue
            with open(args.out, "a", encoding="utf-8") as f:
                f.write(lines[-1][len("RESULT "):] + "\n")
            print(lines[-1][len("RESULT "):], flush=True)
    print(summarise(args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
