"""RecGOAT vs RecBole's LightGCN: epoch time, full-sort evaluation time and peak memory at equal settings.

    python benchmarks/bench_speed.py --dataset ml-100k --epochs 3 --variant shipped --variant all-terms
    python benchmarks/bench_speed.py --dataset ml-100k synthetic-512 tiktok --config tiktok=recbole_configs/tiktok.yaml \
        --data-path tiktok=recgoat_data --variant shipped --variant all-terms --before /tmp/old-checkout

Both models get the same embedding size, LightGCN layers, batch size, split and seed; one Markdown table has a
row per dataset and RecGOAT variant. ``--before CHECKOUT`` measures another checkout's code the same way
(its ``recgoat_*`` packages on the children's path, alternating with this one), for a before/after column
from one command. RecGOAT runs its
*shipped* config (the YAML files as they are, user profiles included; ``--no-profiles`` drops them) and, with
``--variant all-terms``, the same config with every alignment term on (GAT, OAT map, CMCL, W term, γ = 0.5).

``--dataset synthetic-512`` writes (into ``--cache``, the same data on every call) an Amazon-sized MMRec
folder -- 2,900 users, 1,600 items, ~30k interactions, two 512-d modalities ``text`` and ``image``, fixed
seed -- and imports it with :func:`recgoat_recbole.importers.import_mmrec`; ``--data-path`` points an
imported dataset's YAML (whose ``data_path`` is relative) at the folder holding it.

Every measurement runs in a fresh interpreter (``subprocess.run``), and so does the feature warm-up (which
encodes LM features once, before timing): this parent imports nothing heavy. That matters for the peak memory
column: Linux keeps ``ru_maxrss`` across ``execve``, and the pre-exec address space of a child forked from a
big parent is the parent's, so a child started from a parent that had loaded the text encoder reports the
parent's peak. Each child reads ``getrusage(RUSAGE_SELF)`` (CPU) / ``torch.cuda.max_memory_allocated`` (GPU).
Epoch time is the median of ``--epochs`` training epochs after one warm-up epoch; evaluation time is the
median of seven full-sort passes over the validation split. The models alternate for ``--rounds`` rounds and
each keeps its fastest round (this VM's timings vary by up to 2x between runs; noise only adds time).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

VARIANTS: dict[str, dict] = {
    "shipped": {},
    "all-terms": {"use_gat": True, "use_oat": True, "cmcl_weight": 0.032, "wasserstein_weight": 0.001,
                  "fusion_gamma": 0.5},
}
SYNTHETIC = {"synthetic-512": dict(name="synth512", users=2900, items=1600, per_user=10.5, dim=512, seed=2020)}


def measure(model_name: str, dataset: str, config_files: list[str], overrides: dict, epochs: int) -> dict:
    """One warm-up and ``epochs`` timed training epochs, then seven full-sort evaluations of the validation split.

    The run is :func:`recgoat_recbole.training.run_training` (the one training path of ``recgoat run`` and
    ``recgoat bench``) with ``eval_step: 0``, so that ``fit`` trains every epoch without validating or saving."""
    import torch

    from recgoat_recbole.bench.worker import peak_memory_mib
    from recgoat_recbole.training import run_training

    def reset_peak(config, _dataset) -> None:  # the peak counts from the model build on
        if config["device"].type == "cuda":
            torch.cuda.reset_peak_memory_stats()

    result = run_training(model_name, dataset, config_files, {**overrides, "epochs": epochs + 1, "eval_step": 0},
                          saved=False, evaluate_test=False, show_progress=False, log_details=False,
                          before_model=reset_peak)
    config, trainer, valid = result.config, result.trainer, result.data[1]
    cuda = config["device"].type == "cuda"
    evals = []
    for _ in range(7):
        t0 = time.perf_counter()
        trainer.evaluate(valid, load_best_model=False, show_progress=False)
        if cuda:
            torch.cuda.synchronize()
        evals.append(time.perf_counter() - t0)
    return {
        "model": model_name, "device": str(config["device"]), "build_s": result.build_s,
        "epoch_s": statistics.median(result.epoch_times[1:]), "eval_s": statistics.median(evals),
        "peak_mib": peak_memory_mib(config["device"]), "params": sum(p.numel() for p in result.model.parameters()),
    }


def warm_up(dataset: str, config_files: list[str], overrides: dict) -> dict:
    """Build RecGOAT's dataset once (LM features encoded and cached), in a child: no timing, no peak."""
    import recgoat_recbole  # noqa: F401
    from recbole.config import Config
    from recbole.data import create_dataset, data_preparation

    config = Config(model="RecGOAT", dataset=dataset, config_file_list=config_files, config_dict=overrides)
    data_preparation(config, create_dataset(config))
    return {"ok": True}


def synthetic_dataset(kind: str, cache: str) -> tuple[str, str]:
    """(dataset name, config YAML) of a synthetic MMRec dataset, written and imported under ``cache``.

    Items sit in 32 clusters; each modality is its cluster centre plus noise (so the kNN graphs have structure),
    users draw ~``per_user`` items from two favourite clusters, 80/10/10 per user into train/valid/test. The
    data are the same on every call (fixed seed); the import runs every time (a few seconds), so the YAML is
    always the one today's ``recgoat data import`` writes, its RecGOAT defaults included (a cached YAML from
    an older importer measured the model defaults instead)."""
    spec = SYNTHETIC[kind]
    name = spec["name"]
    dst = os.path.join(cache, "bench_data")
    config = os.path.join(dst, name, f"{name}.yaml")
    import numpy as np

    from recgoat_recbole.importers import import_mmrec

    rng = np.random.default_rng(spec["seed"])
    n_users, n_items, dim, n_clusters = spec["users"], spec["items"], spec["dim"], 32
    cluster = rng.integers(n_clusters, size=n_items)
    rows = []
    for u in range(n_users):
        favourite = rng.choice(n_clusters, size=2, replace=False)
        pool = np.flatnonzero(np.isin(cluster, favourite))
        k = min(len(pool), max(5, int(rng.poisson(spec["per_user"]))))
        items = rng.choice(pool, size=k, replace=False)
        labels = np.zeros(k, dtype=int)
        labels[int(0.8 * k):] = 1
        labels[int(0.9 * k):] = 2
        rows += [f"{u}\t{i}\t{lab}" for i, lab in zip(items, rng.permutation(labels))]
    os.makedirs(cache, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache) as src:
        with open(os.path.join(src, f"{name}.inter"), "w", encoding="utf-8") as f:
            f.write("userID\titemID\tx_label\n" + "\n".join(rows) + "\n")
        for modality in ("text", "image"):
            centres = rng.standard_normal((n_clusters, dim)).astype(np.float32)
            feats = centres[cluster] + 0.7 * rng.standard_normal((n_items, dim)).astype(np.float32)
            np.save(os.path.join(src, f"{modality}_feat.npy"), feats)
        import_mmrec(src, dst, name=name, force=True)
    return name, config


def child_command(args: argparse.Namespace, role: str, dataset: str, configs: list[str], overrides: dict) -> list[str]:
    cmd = [sys.executable, os.path.abspath(__file__), "--child", role, "--dataset", dataset,
           "--epochs", str(args.epochs), "--overrides-json", json.dumps(overrides)]
    return cmd + sum((["--config", os.path.abspath(c)] for c in configs), [])


def run_child(cmd: list[str], tmp: str, code: str = ROOT) -> dict:
    """``cmd`` in a fresh interpreter whose ``recgoat_*`` packages come from the checkout at ``code``."""
    env = dict(os.environ, PYTHONPATH=code + os.pathsep + os.environ.get("PYTHONPATH", ""))
    out = subprocess.run(cmd, cwd=tmp, env=env, capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"{cmd[3:5]} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def per_dataset(values: list[str] | None, datasets: list[str], what: str) -> dict[str, list[str]]:
    """``--config`` / ``--data-path`` values per dataset: ``NAME=VALUE`` for one dataset, a bare ``VALUE`` for
    every dataset (the single-dataset form); an unknown ``NAME`` is an error."""
    out: dict[str, list[str]] = {d: [] for d in datasets}
    for value in values or []:
        name, sep, rest = value.partition("=")
        if sep and name in out:
            out[name].append(rest)
        elif sep and not os.path.exists(value) and "/" not in name and os.sep not in name:
            sys.exit(f"{what} {value!r}: {name!r} is not one of --dataset {' '.join(datasets)}")
        else:
            for d in datasets:
                out[d].append(value)
    return out


def measure_dataset(args: argparse.Namespace, dataset: str, configs: list[str], data_path: str | None,
                    cache: str, codes: dict[str, str], tmp: str) -> dict[tuple[str, str], dict]:
    """LightGCN and every RecGOAT variant on one dataset, for each checkout in ``codes``: ``{(code, key): row}``."""
    import yaml

    if dataset in SYNTHETIC:  # numpy / pandas in a child too: this process stays small
        cmd = [sys.executable, os.path.abspath(__file__), "--child", "make-data", "--dataset", dataset, "--cache", cache]
        dataset, generated = run_child(cmd, cache)
        configs = [generated] + configs
        # its YAML says `data_path: ..` (relative to the YAML, read so by `import recgoat_recbole`); absolute
        # here, so that a --before checkout older than that rule reads the same folder
        data_path = data_path or os.path.dirname(os.path.dirname(generated))
    elif not configs:
        configs = [os.path.join(ROOT, "recbole_configs", f"{dataset}.yaml")]
    common = {"embedding_size": args.embedding_size, "n_layers": args.n_layers,
              "train_batch_size": args.batch_size, "show_progress": False, "seed": 2020,
              "feature_cache_dir": cache, "save_dataset": False}
    if data_path:
        common["data_path"] = os.path.abspath(data_path)
    if args.device == "cpu":
        common["use_gpu"] = False
    recgoat = {"user_profile_feat": None} if args.no_profiles else {}
    for item in args.set:
        key, _, value = item.partition("=")
        recgoat[key] = yaml.safe_load(value)
    variants = list(dict.fromkeys(args.variant or ["shipped"]))
    jobs = {"LightGCN": ("LightGCN", common)}
    jobs.update({v: ("RecGOAT", {**common, **recgoat, **VARIANTS[v]}) for v in variants})
    best: dict[tuple[str, str], dict] = {}
    # LM features encoded once, in a child, so that neither this process nor any timed one holds the encoder
    for code in codes.values():
        for v in variants:
            run_child(child_command(args, "warm-up", dataset, configs, jobs[v][1]), tmp, code)
    for _ in range(args.rounds):
        for code_name, code in codes.items():
            for key, (model, overrides) in jobs.items():
                row = run_child(child_command(args, model, dataset, configs, overrides), tmp, code)
                old = best.get((code_name, key))
                if old:  # keep the fastest round of each measure: noise only ever adds time
                    for k in ("epoch_s", "eval_s", "build_s", "peak_mib"):
                        row[k] = min(row[k], old[k])
                best[(code_name, key)] = row
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", nargs="+", default=["ml-100k"],
                        help=f"RecBole datasets and/or {sorted(SYNTHETIC)}: one table row per dataset and variant")
    parser.add_argument("--config", action="append", default=None, metavar="[DATASET=]FILE",
                        help="RecBole YAML for both models, repeatable; DATASET= for one of several datasets "
                             "(default: recbole_configs/<dataset>.yaml)")
    parser.add_argument("--data-path", action="append", default=None, metavar="[DATASET=]DIR",
                        help="override the YAML's data_path (an imported dataset); DATASET= as for --config")
    parser.add_argument("--variant", action="append", default=None, choices=sorted(VARIANTS),
                        help="RecGOAT configuration(s) to measure, repeatable (default: shipped)")
    parser.add_argument("--before", default=None, metavar="CHECKOUT",
                        help="also measure the code of another checkout (e.g. a `git worktree` of an older "
                             "commit), same settings, alternating with this one: a 'before' ratio column")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=YAML",
                        help="extra override for RecGOAT in every variant (value parsed as YAML), repeatable")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--embedding-size", type=int, default=64)
    parser.add_argument("--n-layers", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=2048)
    parser.add_argument("--device", default=None, help="cpu or cuda (default: RecBole's choice)")
    parser.add_argument("--out", default=None, help="also write the Markdown table here")
    parser.add_argument("--rounds", type=int, default=3,
                        help="alternate the models this many times and keep each one's best (default 3)")
    parser.add_argument("--no-profiles", action="store_true", help="drop the config's user profiles")
    parser.add_argument("--cache", default="recgoat_cache", help="feature (and synthetic dataset) cache folder")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--overrides-json", default="{}", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        sys.argv = sys.argv[:1]  # RecBole's Config parses sys.argv
        configs, overrides, dataset = args.config or [], json.loads(args.overrides_json), args.dataset[0]
        if args.child == "warm-up":
            print(json.dumps(warm_up(dataset, configs, overrides)))
        elif args.child == "make-data":
            print(json.dumps(synthetic_dataset(dataset, os.path.abspath(args.cache))))
        else:
            print(json.dumps(measure(args.child, dataset, configs, overrides, args.epochs)))
        return

    cache = os.path.abspath(args.cache)
    os.makedirs(cache, exist_ok=True)
    datasets = list(dict.fromkeys(args.dataset))
    configs = per_dataset(args.config, datasets, "--config")
    data_paths = per_dataset(args.data_path, datasets, "--data-path")
    if any(len(v) > 1 for v in data_paths.values()):
        sys.exit("--data-path: one folder per dataset")
    codes = {"after": ROOT}
    if args.before:
        if not os.path.isdir(os.path.join(args.before, "recgoat_recbole")):
            sys.exit(f"--before {args.before!r}: no recgoat_recbole/ there (pass a checkout's root)")
        codes["before"] = os.path.abspath(args.before)
    rows: dict[str, dict[tuple[str, str], dict]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for dataset in datasets:
            rows[dataset] = measure_dataset(args, dataset, [os.path.abspath(c) for c in configs[dataset]],
                                            (data_paths[dataset] or [None])[0], cache, codes, tmp)
    device = next(iter(next(iter(rows.values())).values()))["device"]
    before = "before" in codes
    lines = [
        f"d={args.embedding_size}, LightGCN layers={args.n_layers}, batch={args.batch_size}, seed 2020, device "
        f"{device}, each model in its own process, best of {args.rounds} rounds"
        + (f"; before = the checkout at {args.before}" if before else "")
        + f"; command: `{shlex.join(['python', 'benchmarks/bench_speed.py', *sys.argv[1:]])}`",
        "",
        "| dataset | RecGOAT variant | LightGCN epoch (s) | RecGOAT epoch (s) |"
        + (" epoch / LightGCN before |" if before else "")
        + " epoch / LightGCN | eval / LightGCN | peak / LightGCN | RecGOAT parameters |",
        "| --- | --- | --- | --- |" + (" --- |" if before else "") + " --- | --- | --- | --- |",
    ]
    for dataset, best in rows.items():
        base = best[("after", "LightGCN")]
        for (code, key), r in best.items():
            if code != "after" or key == "LightGCN":
                continue
            ratio = f" {best[('before', key)]['epoch_s'] / best[('before', 'LightGCN')]['epoch_s']:.2f}x |" \
                if before else ""
            lines.append(f"| {dataset} | {key} | {base['epoch_s']:.2f} | {r['epoch_s']:.2f} |{ratio}"
                         f" {r['epoch_s'] / base['epoch_s']:.2f}x | {r['eval_s'] / base['eval_s']:.2f}x |"
                         f" {r['peak_mib'] / base['peak_mib']:.2f}x | {r['params']:,} |")
    text = "\n".join(lines)
    print(text)
    if args.out:
        with open(args.out, "w", encoding="utf-8") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
