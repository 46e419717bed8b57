"""Benchmark runs: every (dataset, model, variant, seed) trains in its own subprocess, with its result saved
as JSON the moment it finishes, so an interrupted benchmark resumes without repeating finished runs.

A run is ``run_recbole`` with the dataset's YAML, the shared overrides (epochs, early stopping, batch size,
seed) and the variant's overrides: selection on the validation split, one evaluation on test, full ranking.
Per run we record the test and best-validation metrics, the number of epochs trained, the mean epoch time,
the total wall time and the peak memory of the subprocess (RSS; CUDA peak when on a GPU).
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Iterable, Sequence

__all__ = ["RunSpec", "run_all", "find_identical", "settings_differ", "summarise", "markdown_table", "write_outputs",
           "BUILTIN_BASELINES", "ABLATIONS"]

#: RecBole 1.2.1 general recommenders the benchmark compares against by default
BUILTIN_BASELINES = ("Pop", "ItemKNN", "BPR", "LightGCN", "NGCF", "SGL", "NCL", "SimpleX", "EASE")

def _default(key: str) -> Any:
    """RecGOAT's default for ``key`` (recgoat_recbole/properties/RecGOAT.yaml)."""
    import yaml

    path = os.path.join(os.path.dirname(os.path.dirname(__file__)), "properties", "RecGOAT.yaml")
    with open(path, encoding="utf-8") as f:
        return yaml.safe_load(f)[key]


#: every alignment term on at the paper's default weights (the full model); each ablation sets all of them, so
#: that a dataset YAML that turns some off (recbole_configs/tiktok.yaml) cannot leak into the table
_ALIGN_ON = {"cmcl_weight": _default("cmcl_weight"), "use_oat": True,
             "wasserstein_weight": _default("wasserstein_weight")}
_ALIGN_OFF = {"cmcl_weight": 0.0, "use_oat": False, "wasserstein_weight": 0.0}

#: the paper's ablation table, as RecGOAT config overrides on top of the dataset YAML
ABLATIONS: dict[str, dict[str, Any]] = {
    "ID-only (LightGCN)": {"id_only": True},
    "naive fusion: concat": {"fusion": "concat", **_ALIGN_OFF},
    "naive fusion: sum": {"fusion": "sum", **_ALIGN_OFF},
    "CMCL only": {**_ALIGN_ON, "use_oat": False, "wasserstein_weight": 0.0},
    "OAT only": {**_ALIGN_ON, "cmcl_weight": 0.0},
    "without user graph": {**_ALIGN_ON, "use_user_graph": False},
    "RecGOAT (full)": {**_ALIGN_ON, "use_user_graph": True},
}


@dataclass(frozen=True)
class RunSpec:
    dataset: str
    model: str
    seed: int
    variant: str = ""
    config_files: tuple[str, ...] = ()
    overrides: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)
    #: marks runs whose overrides come from elsewhere (``tuned``): part of the key and shown in the label
    tag: str = ""

    @property
    def key(self) -> str:
        label = f"{self.model}-{self.variant}" if self.variant else self.model
        if self.tag:
            label += f"-{self.tag}"
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in label)
        return f"{self.dataset}__{safe}__seed{self.seed}"

    @property
    def label(self) -> str:
        return (self.variant or self.model) + (f" ({self.tag})" if self.tag else "")


def peak_memory_mib(device) -> float:
    """Peak memory of this process: CUDA's peak allocation on a GPU, else the peak RSS."""
    import resource

    import torch

    if device.type == "cuda":
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _fit_to_dataset(config, dataset) -> dict[str, Any]:
    """Defaults of RecBole built-ins that cannot work on a small dataset, changed (and recorded) before the model.

    NCL clusters users and items with k-means into ``num_clusters`` (default 1000); faiss refuses more
    clusters than points, and ml-100k has 944 users. It gets a tenth of the smaller side instead.
    """
    adjusted: dict[str, Any] = {}
    if config["model"] == "NCL":
        smaller = min(dataset.user_num, dataset.item_num)
        if config["num_clusters"] >= smaller:
            adjusted["num_clusters"] = max(2, smaller // 10)
    for key, value in adjusted.items():
        config[key] = value
    return adjusted


def _worker(spec: dict) -> dict:
    """Run one spec in this process (called in the subprocess)."""
    import recgoat_recbole  # noqa: F401  (compat + registration)
    from recbole.config import Config
    from recbole.data import create_dataset, data_preparation
    from recbole.utils import get_model, get_trainer, init_logger, init_seed

    overrides = dict(spec["overrides"])
    overrides["seed"] = spec["seed"]
    config = Config(model=spec["model"], config_file_list=list(spec["config_files"]) or None,
                    config_dict=overrides)
    init_seed(config["seed"], config["reproducibility"])
    init_logger(config)  # RecBole's per-epoch log on stderr (shown live by the parent) and in log/
    start = time.perf_counter()
    dataset = create_dataset(config)
    train, valid, test = data_preparation(config, dataset)
    adjusted = _fit_to_dataset(config, dataset)
    init_seed(config["seed"] + config["local_rank"], config["reproducibility"])
    model = get_model(config["model"])(config, train._dataset).to(config["device"])
    trainer = get_trainer(config["MODEL_TYPE"], config["model"])(config, model)
    epoch_times: list[float] = []
    original = trainer._train_epoch

    def timed(*args, **kwargs):
        t0 = time.perf_counter()
        out = original(*args, **kwargs)
        epoch_times.append(time.perf_counter() - t0)
        return out

    trainer._train_epoch = timed
    best_valid, best_valid_result = trainer.fit(train, valid, saved=True, show_progress=False)
    test_result = trainer.evaluate(test, load_best_model=True, show_progress=False)
    if os.path.isfile(trainer.saved_model_file):
        os.remove(trainer.saved_model_file)  # the metrics are kept; the checkpoint is not needed
    peak = peak_memory_mib(config["device"])
    return {
        "test": {k: float(v) for k, v in test_result.items()},
        "valid": {k: float(v) for k, v in best_valid_result.items()},
        "epochs": len(epoch_times),
        "epoch_s": statistics.mean(epoch_times) if epoch_times else 0.0,
        "total_s": time.perf_counter() - start,
        "peak_mib": peak,
        "device": str(config["device"]),
        "adjusted": adjusted,
    }


#: config keys holding folders that a user writes relative to where they run ``recgoat bench``
PATH_KEYS = ("data_path", "feature_cache_dir")


def _absolute_paths(spec: RunSpec) -> dict[str, str]:
    """Relative ``data_path`` / ``feature_cache_dir`` from the spec's YAML files or overrides, made absolute.

    Runs execute in ``out_dir/work/<key>``; without this, ``data_path: recgoat_data`` would be looked up there.
    """
    import yaml

    found: dict[str, Any] = {}
    for path in spec.config_files:
        with open(path, encoding="utf-8") as f:
            found.update({k: v for k, v in (yaml.safe_load(f) or {}).items() if k in PATH_KEYS})
    found.update({k: v for k, v in spec.overrides.items() if k in PATH_KEYS})
    found.setdefault("feature_cache_dir", "recgoat_cache")  # RecGOAT's default; ignored by other models
    return {k: os.path.abspath(v) for k, v in found.items() if isinstance(v, str) and not os.path.isabs(v)}


def run_one(spec: RunSpec, out_dir: str, timeout: float | None = None, verbose: bool = True) -> dict:
    """Run ``spec`` in a subprocess (working directory ``out_dir/work/<key>``) and save its result JSON.

    Each run has its own working directory because RecBole names a checkpoint ``saved/<model>-<time to the
    second>.pth``: two runs of one model started in the same second (``--jobs``) would share, overwrite and
    delete each other's best model.

    With ``verbose`` the subprocess's RecBole log (one line per epoch) streams to this process's stderr.
    """
    os.makedirs(os.path.join(out_dir, "runs"), exist_ok=True)
    work = os.path.join(out_dir, "work", spec.key)
    os.makedirs(work, exist_ok=True)
    fields = {**asdict(spec), "config_files": [os.path.abspath(f) for f in spec.config_files]}
    fields["overrides"] = {**spec.overrides, **_absolute_paths(spec)}
    payload = json.dumps(fields)
    cmd = [sys.executable, "-m", "recgoat_recbole.bench.runner", payload]
    proc = subprocess.run(cmd, cwd=work, stdout=subprocess.PIPE, stderr=None if verbose else subprocess.PIPE,
                          text=True, timeout=timeout, env=dict(os.environ, PYTHONUNBUFFERED="1"))
    if proc.returncode != 0:
        tail = "\n".join((proc.stderr or "").strip().splitlines()[-15:])
        raise RuntimeError(f"run {spec.key} failed (exit {proc.returncode}); see the log above or in "
                           f"{work}/log\n{tail}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    record = {**asdict(spec), "label": spec.label, "key": spec.key, **result,
              "config_sha": config_digest(fields["config_files"])}
    return _save(record, os.path.join(out_dir, "runs", f"{spec.key}.json"))


def config_digest(files: Sequence[str]) -> str:
    """SHA-256 over the contents of the YAML files, in order: a run records the exact config it trained with."""
    import hashlib

    digest = hashlib.sha256()
    for path in files:
        with open(path, "rb") as f:
            digest.update(f.read())
        digest.update(b"\0")
    return digest.hexdigest()


def settings_differ(record: dict, spec: RunSpec) -> str:
    """Why a finished run's settings differ from ``spec`` ('' when they match). Runs recorded before the
    config digest existed are checked on their overrides and file names only."""
    if record.get("overrides", spec.overrides) != spec.overrides:
        changed = sorted(k for k in {*record["overrides"], *spec.overrides}
                         if record["overrides"].get(k) != spec.overrides.get(k))
        return "overrides differ: " + ", ".join(f"{k} {record['overrides'].get(k)!r} -> {spec.overrides.get(k)!r}"
                                                for k in changed)
    files = [os.path.abspath(p) for p in spec.config_files]
    if [os.path.abspath(p) for p in record.get("config_files", files)] != files:
        return f"config files differ: {record['config_files']} -> {files}"
    if "config_sha" in record and all(os.path.isfile(p) for p in files) and \
            record["config_sha"] != config_digest(files):
        return "the YAML files changed since"
    return ""


def find_identical(spec: RunSpec, folder: str) -> dict | None:
    """A finished run in ``folder/runs`` with the same dataset, model, seed, config files and overrides."""
    runs = os.path.join(folder, "runs")
    if not os.path.isdir(runs):
        return None
    for name in sorted(os.listdir(runs)):
        if not name.endswith(".json") or not name.startswith(f"{spec.dataset}__{spec.model}"):
            continue
        with open(os.path.join(runs, name), encoding="utf-8") as f:
            record = json.load(f)
        if (record["dataset"], record["model"], record["seed"]) != (spec.dataset, spec.model, spec.seed):
            continue
        if "overrides" in record and "config_files" in record and not settings_differ(record, spec):
            return record
    return None


def _save(record: dict, path: str) -> dict:
    """Write ``record`` to ``path`` atomically (a run is either finished on disk or absent)."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path + ".tmp", "w", encoding="utf-8") as f:
        json.dump(record, f, indent=1)
    os.replace(path + ".tmp", path)
    return record


def run_all(specs: Sequence[RunSpec], out_dir: str, log=print, verbose: bool = True,
            show_test: bool = True, train: bool = True, jobs: int = 1,
            reuse_from: Sequence[str] = ()) -> list[dict]:
    """Run every spec not already finished in ``out_dir/runs``; returns all records (old and new), in spec order.

    With ``train=False`` nothing is trained: the records are the finished runs, and the others are listed.
    ``jobs`` runs that many subprocesses at once. A spec whose identical run (same dataset, model, seed, config
    files and overrides) is finished in one of the ``reuse_from`` folders is copied from there, not trained.
    """
    from concurrent.futures import ThreadPoolExecutor

    found: dict[int, dict] = {}
    todo: list[tuple[int, RunSpec]] = []
    for n, spec in enumerate(specs, 1):
        path = os.path.join(out_dir, "runs", f"{spec.key}.json")
        if os.path.isfile(path):
            with open(path, encoding="utf-8") as f:
                found[n] = json.load(f)
            problem = settings_differ(found[n], spec)
            if problem:
                raise FileExistsError(f"{path} was trained with other settings ({problem}): use another --out, "
                                      "or delete that file to train it again")
            log(f"[{n}/{len(specs)}] {spec.key}: done earlier, reused")
            continue
        twin = next((r for r in (find_identical(spec, d) for d in reuse_from) if r is not None), None)
        if twin is not None:
            found[n] = _save({**twin, **asdict(spec), "label": spec.label, "key": spec.key,
                              "reused_from": twin["key"]}, path)
            log(f"[{n}/{len(specs)}] {spec.key}: the identical run {twin['key']} is finished, reused")
            continue
        if not train:
            log(f"[{n}/{len(specs)}] {spec.key}: not run yet, left out of the tables")
            continue
        todo.append((n, spec))
    which = "test" if show_test else "valid"
    failed: list[str] = []

    def one(item: tuple[int, RunSpec]) -> tuple[int, dict | None]:
        n, spec = item
        log(f"[{n}/{len(specs)}] {spec.key}: running ...")
        t0 = time.perf_counter()
        try:
            record = run_one(spec, out_dir, verbose=verbose and jobs == 1)
        except RuntimeError as exc:  # the other runs go on; the failures are raised together at the end
            log(f"[{n}/{len(specs)}] {exc}")
            failed.append(spec.key)
            return n, None
        log(f"[{n}/{len(specs)}] {spec.key}: {which} NDCG@10 {record[which].get('ndcg@10', float('nan')):.4f} "
            f"in {time.perf_counter() - t0:.0f} s ({record['epochs']} epochs)")
        return n, record

    if jobs <= 1:
        results = [one(item) for item in todo]
    else:  # each run is its own subprocess: threads only wait on them
        with ThreadPoolExecutor(max_workers=jobs) as pool:
            results = list(pool.map(one, todo))
    found.update((n, record) for n, record in results if record is not None)
    if failed:
        raise RuntimeError(f"{len(failed)} of {len(specs)} runs failed: {', '.join(failed)}; the others are "
                           f"saved in {out_dir}/runs, and a rerun trains only what is missing")
    return [found[n] for n in sorted(found)]


def summarise(records: Iterable[dict], metrics: Sequence[str]) -> list[dict]:
    """Mean and standard deviation over seeds, per (dataset, label), in first-seen order."""
    groups: dict[tuple[str, str], list[dict]] = {}
    for r in records:
        groups.setdefault((r["dataset"], r["label"]), []).append(r)
    rows = []
    for (dataset, label), runs in groups.items():
        row: dict[str, Any] = {"dataset": dataset, "model": label, "seeds": len(runs)}
        for m in metrics:
            values = [r["test"][m] for r in runs if m in r["test"]]
            row[m] = statistics.mean(values) if values else float("nan")
            row[f"{m}_std"] = statistics.stdev(values) if len(values) > 1 else 0.0
        for k in ("epoch_s", "total_s", "peak_mib", "epochs"):
            row[k] = statistics.mean(r[k] for r in runs)
        rows.append(row)
    return rows


def markdown_table(rows: Sequence[dict], metrics: Sequence[str]) -> str:
    head = "| dataset | model | " + " | ".join(metrics) + " | epochs | epoch (s) | total (s) | peak MiB | seeds |"
    lines = [head, "|" + " --- |" * (head.count("|") - 1)]
    for r in rows:
        cells = [f"{r[m]:.4f} ± {r[f'{m}_std']:.4f}" for m in metrics]
        lines.append(f"| {r['dataset']} | {r['model']} | " + " | ".join(cells) +
                     f" | {r['epochs']:.0f} | {r['epoch_s']:.2f} | {r['total_s']:.0f} | {r['peak_mib']:.0f} | "
                     f"{r['seeds']} |")
    return "\n".join(lines)


def write_outputs(records: Sequence[dict], out_dir: str, metrics: Sequence[str], title: str) -> dict[str, str]:
    """``results.csv`` (one row per run), ``results.md`` (mean ± std) and ``results.png`` (NDCG bar chart)."""
    import csv

    os.makedirs(out_dir, exist_ok=True)
    csv_path = os.path.join(out_dir, "results.csv")
    with open(csv_path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["dataset", "model", "seed", *metrics, "epochs", "epoch_s", "total_s", "peak_mib", "device"])
        for r in records:
            writer.writerow([r["dataset"], r["label"], r["seed"], *(f"{r['test'].get(m, float('nan')):.6f}"
                             for m in metrics), r["epochs"], f"{r['epoch_s']:.3f}", f"{r['total_s']:.1f}",
                             f"{r['peak_mib']:.0f}", r["device"]])
    rows = summarise(records, metrics)
    md_path = os.path.join(out_dir, "results.md")
    with open(md_path, "w", encoding="utf-8") as f:
        f.write(f"{title}\n\n{markdown_table(rows, metrics)}\n")
    png_path = os.path.join(out_dir, "results.png")
    _plot(rows, metrics[0] if "ndcg@10" not in metrics else "ndcg@10", png_path)
    return {"csv": csv_path, "markdown": md_path, "png": png_path}


def _plot(rows: Sequence[dict], metric: str, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    datasets = list(dict.fromkeys(r["dataset"] for r in rows))
    fig, axes = plt.subplots(1, len(datasets), figsize=(5 + 0.6 * len(rows) / max(len(datasets), 1), 3.8),
                             squeeze=False)
    for ax, dataset in zip(axes[0], datasets):
        sub = [r for r in rows if r["dataset"] == dataset]
        ax.bar(range(len(sub)), [r[metric] for r in sub], yerr=[r[f"{metric}_std"] for r in sub], capsize=3,
               color=["#c0392b" if "RecGOAT" in r["model"] else "#7f8c8d" for r in sub])
        ax.set_xticks(range(len(sub)), [r["model"] for r in sub], rotation=45, ha="right", fontsize=8)
        ax.set_title(dataset)
        ax.set_ylabel(metric)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    spec = json.loads(sys.argv[1])
    sys.argv = sys.argv[:1]  # RecBole's Config parses sys.argv
    print(json.dumps(_worker(spec)))
