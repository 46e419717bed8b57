"""RecGOAT vs RecBole's LightGCN: epoch time, full-sort evaluation time and peak memory at equal settings, and
what each part costs as the data grow (import, kNN graphs, gate, model build, epoch, evaluation, peak).

    python benchmarks/bench_speed.py --dataset synthetic-paper --variant shipped --variant all-terms \\
        --variant paper --out results/speed-cpu
    python benchmarks/bench_speed.py --dataset synthetic-baby --scale 0.01 --epochs 1 --rounds 1 --out /tmp/s
    python benchmarks/bench_speed.py --report-only --out results/speed-cpu
    python benchmarks/bench_speed.py --dataset ml-100k tiktok --config tiktok=recgoat_data/tiktok/tiktok.yaml \\
        --before /tmp/old-checkout --out /tmp/speed-tiktok

The baseline is RecBole's LightGCN (issue 28's reference), or the RecBole model ``--baseline`` names (e.g. the
one RecGOAT's default ``backbone`` is: what the alignment costs over its own ID branch). Both models get the
same embedding size, layers, batch size, split and seed. RecGOAT runs each
``--variant``: *shipped* (the YAML files as they are, user profiles included; ``--no-profiles`` drops them; the
alignment on, with its gate), *all-terms* (every alignment term on: GAT views, OAT map, CMCL, W term, γ = 0.5)
and *paper* (the paper's configuration, GAT views: ``recbole_configs/<shape>.yaml`` for a synthetic shape of the
paper, else ``recbole_configs/paper.yaml``; d, layers and batch still the command's). ``--before CHECKOUT``
measures another checkout's training code the same way (its ``recgoat_*`` packages on the children's path,
alternating with this one), for a before/after column from one command.

Datasets: RecBole datasets (``--config`` / ``--data-path``, as for ``recgoat bench``) and the synthetic shapes
of :mod:`recgoat_recbole.bench.synthetic`: ``synthetic-512`` (2,900 users, 1,600 items, two 512-d modalities),
``synthetic-baby``, ``synthetic-sports`` and ``synthetic-electronics`` (MMRec's exact user / item / interaction
counts, 384-d text and 4096-d image features); ``synthetic-paper`` names the last three. A synthetic set is
generated once into ``--cache`` (fixed seed; reused while the generator, shape and seed are the same) and
imported with :func:`recgoat_recbole.importers.import_mmrec` in every round, each import timed in its own
process. ``--scale F`` multiplies every count of the synthetic sets by F (``0.01``: a smoke test in seconds).

Every measurement runs in a fresh interpreter (``subprocess.run``), and so do the data generation, each import
and the feature warm-up (which encodes LM features once, before timing): this parent builds no data, model or
encoder and never touches the device, and a child's peak memory is its own
(:func:`recgoat_recbole.bench.worker.peak_memory_mib`: ``VmHWM``, which starts afresh at ``exec``, on the CPU;
the CUDA peak from the model build on a GPU). Epoch time: every one of ``--epochs`` training epochs after one warm-up epoch; evaluation:
every one of ``--evals`` full-sort passes over the validation split. Inside the measuring process the kNN graph
builds and the alignment gate are timed where the model build calls them; each measurement has a fresh feature
cache (the warm-up's, without its kNN graphs), so every graph is built cold. The models alternate for
``--rounds`` rounds; the tables keep each measure's best round (noise only adds time).

Results as code: every measurement (and every timed import) is a signed JSON record in ``OUT/runs/``
(:mod:`recgoat_recbole.bench.speed`) and ``OUT/commands.txt`` holds the commands that completed; the tables
(``OUT/speed.md``, also printed) are rebuilt from the records alone, and ``--report-only`` rebuilds them,
byte for byte, without measuring. A rerun with the same ``--out`` measures only what has no record yet.

``--device cuda`` runs the same tables on a GPU (e.g. at the paper's settings: ``--embedding-size 800
--n-layers 3 --batch-size 4096``); on a machine without CUDA it is refused with one line, before anything runs.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
#: ``--dataset`` names of the synthetic shapes (:data:`recgoat_recbole.bench.synthetic.SHAPES`)
SYNTHETIC = ["synthetic-512", "synthetic-baby", "synthetic-sports", "synthetic-electronics"]

VARIANTS: dict[str, dict] = {
    "shipped": {},
    "all-terms": {"use_gat": True, "use_oat": True, "cmcl_weight": 0.032, "wasserstein_weight": 0.001,
                  "fusion_gamma": 0.5},
    "paper": {},  # + the paper's YAML (variant_configs)
}
#: ``--dataset synthetic-paper``: the shapes of the paper's three datasets
PAPER_SETS = ["synthetic-baby", "synthetic-sports", "synthetic-electronics"]
#: the RecGOAT settings a record keeps (what was on), where the config has them
RECGOAT_KEYS = ("backbone", "use_gat", "use_oat", "cmcl_weight", "wasserstein_weight", "align_gate",
                "align_gate_min_lift", "fusion_gamma", "knn_k", "gat_heads", "gat_layers", "user_profile_feat",
                "oat_plan_every", "align_max_items", "knn_search")


# ------------------------------------------------------------------------------------------------ children
def _versions() -> dict:
    import platform

    import numpy
    import recbole
    import torch

    try:  # the CPU kNN backend when it imports (recgoat_core.graphs.knn_graph)
        import faiss

        faiss_version = getattr(faiss, "__version__", "?")
    except ImportError:
        faiss_version = None
    return {"torch": torch.__version__, "recbole": recbole.__version__, "numpy": numpy.__version__,
            "faiss": faiss_version, "python": platform.python_version(), "threads": torch.get_num_threads(),
            "cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()}


class Phases:
    """Times the kNN graph builds and the alignment gate where the model build calls them (the functions of
    :mod:`recgoat_recbole.knn_cache` and ``modality_gate`` as the model modules imported it), in this process."""

    def __init__(self) -> None:
        self.knn: list[dict] = []
        self.gate: dict | None = None
        self._in_gate = 0
        self._undo: list = []

    def _sync(self) -> None:
        import torch

        if torch.cuda.is_available() and torch.cuda.is_initialized():
            torch.cuda.synchronize()

    def install(self) -> "Phases":
        import importlib

        knn_cache = importlib.import_module("recgoat_recbole.knn_cache")
        build = getattr(knn_cache, "cached_knn_graph", None)
        if build is not None:
            def timed_knn(features, k, folder, label, *args, **kwargs):
                before = set(os.listdir(folder)) if os.path.isdir(folder) else set()
                t0 = time.perf_counter()
                edges = build(features, k, folder, label, *args, **kwargs)
                self._sync()
                seconds = time.perf_counter() - t0
                after = set(os.listdir(folder)) if os.path.isdir(folder) else set()
                self.knn.append({"label": label, "rows": int(len(features)),
                                 "dim": int(features.shape[1]) if getattr(features, "ndim", 1) > 1 else 0,
                                 "k": int(k), "edges": int(edges.shape[1]), "seconds": seconds,
                                 "built": bool(after - before), "in_gate": self._in_gate > 0})
                return edges

            self._patch(knn_cache, "cached_knn_graph", timed_knn)
        for name in ("recgoat_recbole.model", "recgoat_recbole.aligned"):
            module = importlib.import_module(name)
            gate = getattr(module, "modality_gate", None)
            if gate is None:
                continue

            def timed_gate(*args, _gate=gate, **kwargs):
                self._in_gate += 1
                t0 = time.perf_counter()
                try:
                    weights = _gate(*args, **kwargs)
                finally:
                    self._in_gate -= 1
                seconds = time.perf_counter() - t0
                self.gate = {"seconds": seconds + (self.gate or {}).get("seconds", 0.0),
                             "weights": {str(m): float(w) for m, w in sorted(weights.items())}}
                return weights

            self._patch(module, "modality_gate", timed_gate)
        return self

    def _patch(self, module, name: str, value) -> None:
        self._undo.append((module, name, getattr(module, name)))
        setattr(module, name, value)

    def remove(self) -> None:
        for module, name, value in reversed(self._undo):
            setattr(module, name, value)
        self._undo.clear()


def measure(model_name: str, dataset: str, config_files: list[str], overrides: dict, epochs: int,
            evals: int = 7) -> dict:
    """One warm-up and ``epochs`` timed training epochs, then ``evals`` full-sort evaluations of the validation
    split, with the kNN graph builds and the gate timed (:class:`Phases`).

    The run is :func:`recgoat_recbole.training.run_training` (the one training path of ``recgoat run`` and
    ``recgoat bench``) with ``eval_step: 0``, so that ``fit`` trains every epoch without validating or saving."""
    import torch

    from recgoat_recbole.bench import worker
    from recgoat_recbole.bench.worker import peak_memory_mib
    from recgoat_recbole.training import run_training

    shape: dict = {}
    fit = getattr(worker, "_fit_to_dataset", None)  # what `recgoat bench` fits (NCL's clusters on small data)

    def before_model(config, data) -> dict | None:  # the shape as RecBole sees it; the CUDA peak counts from here
        if data is not None:
            features = getattr(data, "item_features", None) or {}
            shape.update(users=int(data.user_num - 1), items=int(data.item_num - 1), interactions=int(data.inter_num),
                         dims={str(m): int(x.shape[1]) for m, x in sorted(features.items())})
        if config["device"].type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        return fit(config, data) if fit is not None and data is not None else None

    phases = Phases().install()
    try:
        result = run_training(model_name, dataset, config_files, {**overrides, "epochs": epochs + 1, "eval_step": 0},
                              saved=False, evaluate_test=False, show_progress=False, log_details=False,
                              before_model=before_model)
    finally:
        phases.remove()
    config, trainer, valid = result.config, result.trainer, result.data[1]
    cuda = config["device"].type == "cuda"
    eval_s = []
    for _ in range(evals):
        t0 = time.perf_counter()
        trainer.evaluate(valid, load_best_model=False, show_progress=False)
        if cuda:
            torch.cuda.synchronize()
        eval_s.append(time.perf_counter() - t0)
    recgoat = {}
    for key in RECGOAT_KEYS:
        try:
            value = config[key]
        except KeyError:
            continue
        recgoat[key] = value if value is None or isinstance(value, (bool, int, float, str)) else str(value)
    return {
        "model": model_name, "device": str(config["device"]),
        "device_name": torch.cuda.get_device_name(config["device"]) if cuda else None,
        "build_s": result.build_s, "warmup_s": result.epoch_times[0], "epoch_s": result.epoch_times[1:],
        "eval_s": eval_s, "peak_mib": peak_memory_mib(config["device"]),
        "peak_kind": "cuda max_memory_allocated from the model build" if cuda else "process peak RSS (VmHWM)",
        "params": sum(p.numel() for p in result.model.parameters()),
        "knn": phases.knn, "gate": phases.gate, "shape": shape,
        "recgoat": recgoat if model_name == "RecGOAT" else {}, **_versions(),
    }


def warm_up(dataset: str, config_files: list[str], overrides: dict) -> dict:
    """Build RecGOAT's dataset once (LM features encoded and cached), in a child: no timing, no peak."""
    import recgoat_recbole  # noqa: F401
    from recbole.config import Config
    from recbole.data import create_dataset, data_preparation

    config = Config(model="RecGOAT", dataset=dataset, config_file_list=config_files, config_dict=overrides)
    data_preparation(config, create_dataset(config))
    return {"ok": True}


def make_data(key: str, scale: float, cache: str) -> dict:
    """The synthetic MMRec folder of ``key`` at ``scale`` under ``cache/bench_data/source`` (written once)."""
    from recgoat_recbole.bench.synthetic import SHAPES, ensure, scaled

    folder, manifest = ensure(scaled(SHAPES[key], scale), os.path.join(cache, "bench_data", "source"))
    return {"source": folder, "manifest": manifest}


def import_data(source: str, dst: str, name: str) -> dict:
    """``recgoat data import --format mmrec SOURCE DST`` (:func:`import_mmrec`), timed, with this process's peak."""
    import types

    from recgoat_recbole.bench.worker import peak_memory_mib
    from recgoat_recbole.importers import import_mmrec

    t0 = time.perf_counter()
    report = import_mmrec(source, dst, name=name, force=True)
    seconds = time.perf_counter() - t0
    return {"import_s": seconds, "peak_mib": peak_memory_mib(types.SimpleNamespace(type="cpu")), "device": "cpu",
            "imported": {"users": report.users, "items": report.items, "interactions": report.interactions,
                         "modalities": report.modalities},
            "config": report.config, **_versions()}


def probe() -> dict:
    import torch

    return {"cuda": bool(torch.cuda.is_available()), **_versions()}


# ------------------------------------------------------------------------------------------------ parent
def child_command(args: argparse.Namespace, role: str, payload: dict) -> list[str]:
    return [sys.executable, os.path.abspath(__file__), "--child", role, "--payload", json.dumps(payload)]


def run_child(cmd: list[str], tmp: str, code: str = ROOT) -> dict:
    """``cmd`` in a fresh interpreter whose ``recgoat_*`` packages come from the checkout at ``code``."""
    env = dict(os.environ, PYTHONPATH=code + os.pathsep + os.environ.get("PYTHONPATH", ""))
    out = subprocess.run(cmd, cwd=tmp, env=env, capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"{cmd[3]} failed:\n{out.stderr[-3000:]}")
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


def git_state(root: str) -> tuple[str | None, bool]:
    """``(commit, uncommitted changes)`` of the checkout at ``root`` (``(None, False)`` without git)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, env=env, capture_output=True, text=True,
                              timeout=10)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root, env=env,
                               capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None, False
    commit = head.stdout.strip() if head.returncode == 0 else None
    return commit, bool(dirty.stdout.strip()) if dirty.returncode == 0 else False


def config_digest(files: list[str]) -> str:
    from recgoat_recbole.bench.records import config_digest as digest

    return digest(files)


def variant_configs(variant: str, dataset: str) -> list[str]:
    """The YAML files a variant adds over the dataset's: the paper's configuration for ``paper``."""
    from recgoat_recbole.bench.synthetic import SHAPES

    if variant != "paper":
        return []
    shape = SHAPES.get(dataset)
    own = os.path.join(ROOT, "recbole_configs", f"{shape.key}.yaml") if shape else ""
    return [own if os.path.isfile(own) else os.path.join(ROOT, "recbole_configs", "paper.yaml")]


def fresh_feature_cache(cache: str, dataset: str, tmp: str) -> str:
    """A feature cache for one measurement: a copy of ``cache/<dataset>`` (the warm-up's encoded features)
    without its kNN graphs, so that the measurement builds them cold."""
    folder = tempfile.mkdtemp(prefix="features-", dir=tmp)
    source = os.path.join(cache, dataset)
    if os.path.isdir(source):
        shutil.copytree(source, os.path.join(folder, dataset), ignore=shutil.ignore_patterns("knn-*"))
    return folder


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-._" else "_" for c in text)


class Recorder:
    """The ``OUT/runs`` folder: what is recorded already (reused when signed and measured with the same
    settings), and saving new records."""

    def __init__(self, out: str) -> None:
        from recgoat_recbole.bench import speed

        self.speed = speed
        self.runs = os.path.join(out, "runs")
        os.makedirs(self.runs, exist_ok=True)

    def done(self, key: str, settings: dict) -> bool:
        path = os.path.join(self.runs, f"{key}.json")
        if not os.path.lexists(path):
            return False
        record, problem = self.speed.load(path)
        if record is None or problem:
            print(f"warning: {path}: {problem}; measuring it again", file=sys.stderr)
            return False
        changed = self.speed.settings_problem(record, settings)
        if changed:
            sys.exit(f"{path} was measured with other settings ({changed}): use another --out, or delete that "
                     "file to measure it again")
        print(f"{key}: recorded earlier, reused", file=sys.stderr)
        return True

    def save(self, key: str, record: dict) -> None:
        self.speed.save({**record, "key": key}, os.path.join(self.runs, f"{key}.json"))


def measure_dataset(args: argparse.Namespace, dataset: str, configs: list[str], data_path: str | None,
                    cache: str, codes: dict[str, str], commits: dict, tmp: str, recorder: Recorder) -> None:
    """The baseline (``--baseline``: LightGCN) and every RecGOAT variant on one dataset, for each checkout in ``codes``, ``--rounds`` times;
    every measurement a record (a synthetic dataset's imports too)."""
    import yaml

    from recgoat_recbole.bench.synthetic import SHAPES, scaled

    shape = scaled(SHAPES[dataset], args.scale) if dataset in SHAPES else None
    label = shape.label if shape else dataset
    name = shape.name if shape else dataset
    data_digest = None
    if shape:  # generated in a child too: its memory is never this process's
        made = run_child(child_command(args, "make-data", {"key": dataset, "scale": args.scale, "cache": cache}),
                         tmp)
        source, manifest = made["source"], made["manifest"]
        data_digest = hashlib.sha256(json.dumps(manifest["files"], sort_keys=True).encode()).hexdigest()
        dst = os.path.join(cache, "bench_data")
        generated = os.path.join(dst, name, f"{name}.yaml")
        configs = [generated] + configs
        # its YAML says `data_path: ..` (relative to the YAML); absolute here, so that a --before checkout older
        # than that rule reads the same folder
        data_path = data_path or dst
    elif not configs:
        from recgoat_recbole.bench.design import find_config

        configs = [find_config(dataset)]
    settings_common = {"embedding_size": args.embedding_size, "n_layers": args.n_layers,
                       "train_batch_size": args.batch_size}
    common = {**settings_common, "show_progress": False, "seed": 2020, "save_dataset": False}
    if data_path:
        common["data_path"] = os.path.abspath(data_path)
    if args.device == "cpu":  # RecBole 1.2.1 picks the GPU whenever CUDA is there and gpu_id is not empty
        common.update(use_gpu=False, gpu_id="")
    elif args.device == "cuda":
        common["use_gpu"] = True
    recgoat = {"user_profile_feat": None} if args.no_profiles else {}
    for item in args.set:
        key, _, value = item.partition("=")
        recgoat[key] = yaml.safe_load(value)
    variants = list(dict.fromkeys(args.variant or ["shipped"]))
    jobs = {args.baseline: (args.baseline, configs, common)}
    jobs.update({v: ("RecGOAT", configs + variant_configs(v, dataset), {**common, **recgoat, **VARIANTS[v]})
                 for v in variants})
    device_tag = f"{args.device or 'auto'}-d{args.embedding_size}-l{args.n_layers}-b{args.batch_size}"
    base_shape = ({"users": shape.users, "items": shape.items, "interactions": shape.interactions,
                   "dims": dict(shape.dims), "scale": shape.scale, "seed": shape.seed, "synthetic": shape.key}
                  if shape else {})
    warmed: set[tuple[str, str]] = set()
    for round_ in range(1, args.rounds + 1):
        if shape:  # the import, timed in its own process (this checkout's importer)
            key = f"{_slug(label)}__import__r{round_}"
            settings = {"dataset": label, "data": data_digest}
            if not (recorder.done(key, settings) and os.path.isfile(generated)):
                got = run_child(child_command(args, "import", {"source": source, "dst": dst, "name": name}), tmp)
                imported = got.pop("imported")
                recorder.save(key, {"kind": "speed-import", "dataset": label, "code": "after", "round": round_,
                                    "settings": settings, "shape": base_shape, "imported": imported,
                                    "git_commit": commits["after"][0], "git_dirty": commits["after"][1], **got})
        for code_name, code in codes.items():
            for job, (model, files, overrides) in jobs.items():
                key = f"{_slug(label)}__{device_tag}__{code_name}__{job}__r{round_}"
                settings = {**settings_common, "dataset": label, "model": model, "job": job, "epochs": args.epochs,
                            "evals": args.evals, "device": args.device or "auto", "overrides": overrides,
                            "config_files": files, "config_sha": config_digest(files), "data": data_digest}
                if recorder.done(key, settings):
                    continue
                if model == "RecGOAT" and (code_name, job) not in warmed:
                    # LM features encoded once, in a child, so that neither this process nor a timed one holds
                    # the encoder
                    run_child(child_command(args, "warm-up", {"dataset": name, "configs": files, "overrides": {
                        **overrides, "feature_cache_dir": cache}}), tmp, code)
                    warmed.add((code_name, job))
                features = fresh_feature_cache(cache, name, tmp)
                try:
                    got = run_child(child_command(args, model, {
                        "dataset": name, "configs": files, "overrides": {**overrides, "feature_cache_dir": features},
                        "epochs": args.epochs, "evals": args.evals}), tmp, code)
                finally:
                    shutil.rmtree(features, ignore_errors=True)
                measured = got.pop("shape")
                record_shape = {**measured, **{k: v for k, v in base_shape.items() if k not in measured or
                                               (k == "dims" and not measured.get("dims"))}}
                recorder.save(key, {"kind": "speed-run", "dataset": label, "job": job, "code": code_name,
                                    "round": round_, "settings": settings, "shape": record_shape,
                                    "feature_cache": "fresh per measurement: kNN graphs built cold",
                                    "git_commit": commits[code_name][0], "git_dirty": commits[code_name][1], **got})
                print(f"{label} {code_name} {job} round {round_}: epoch {statistics.median(got['epoch_s']):.2f} s, "
                      f"eval {statistics.median(got['eval_s']):.2f} s, peak {got['peak_mib']:.0f} MiB",
                      file=sys.stderr)


def report(out: str, log=print) -> str:
    """The tables of ``out``'s records (:func:`recgoat_recbole.bench.speed.render`), written to ``out/speed.md``;
    what a measuring run ends with and all that ``--report-only`` does."""
    from recgoat_recbole.bench import speed
    from recgoat_recbole.signing import KeyFileError, secret_key

    try:
        secret_key()
        check = True
    except KeyFileError as exc:
        log(f"warning: {exc}; the records' signatures are not checked: every record is marked unverified")
        check = False
    records = speed.load_folder(out, check_signature=check, log=lambda line: log(line))
    if not check:
        for record in records:
            record["unverified"] = "signature not checked"
    commands = []
    if os.path.isfile(os.path.join(out, "commands.txt")):
        with open(os.path.join(out, "commands.txt"), encoding="utf-8") as f:
            commands = [line.rstrip("\n") for line in f if line.strip()]
    text = speed.render(records, commands)
    with open(os.path.join(out, "speed.md"), "w", encoding="utf-8") as f:
        f.write(text)
    return text


def record_command(out: str, argv: list[str]) -> None:
    """Append the command, as typed, to ``out/commands.txt`` (once; when all its measurements are recorded)."""
    from recgoat_recbole.bench.records import record_command as record

    record(out, shlex.join(["python", "benchmarks/bench_speed.py", *argv]))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", nargs="+", default=["ml-100k"],
                        help=f"RecBole datasets and/or {', '.join(SYNTHETIC)} (synthetic-paper: the last three): a "
                             "table row per dataset and variant, a scaling column per dataset")
    parser.add_argument("--config", action="append", default=None, metavar="[DATASET=]FILE",
                        help="RecBole YAML for both models, repeatable; DATASET= for one of several datasets "
                             "(default: the dataset's data YAML, recbole_configs/data/<dataset>.yaml, as recgoat bench)")
    parser.add_argument("--data-path", action="append", default=None, metavar="[DATASET=]DIR",
                        help="override the YAML's data_path (an imported dataset); DATASET= as for --config")
    parser.add_argument("--variant", action="append", default=None, choices=sorted(VARIANTS),
                        help="RecGOAT configuration(s) to measure, repeatable (default: shipped)")
    parser.add_argument("--baseline", default="LightGCN", metavar="MODEL",
                        help="the RecBole model every RecGOAT variant is compared with, at the same d, layers and "
                             "batch (default LightGCN: issue 28's reference); e.g. RecGOAT's backbone's own "
                             "model, for what the alignment costs over it")
    parser.add_argument("--before", default=None, metavar="CHECKOUT",
                        help="also measure the code of another checkout (e.g. a `git worktree` of an older "
                             "commit), same settings, alternating with this one: a 'before' ratio column")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=YAML",
                        help="extra override for RecGOAT in every variant (value parsed as YAML), repeatable")
    parser.add_argument("--epochs", type=int, default=3, help="timed epochs, after one warm-up (default 3)")
    parser.add_argument("--evals", type=int, default=7, help="timed full-sort evaluations (default 7)")
    parser.add_argument("--embedding-size", type=int, default=64)
    parser.add_argument("--n-layers", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=2048)
    parser.add_argument("--device", default=None, choices=["cpu", "cuda"], help="default: RecBole's choice")
    parser.add_argument("--scale", type=float, default=1.0,
                        help="multiply every count of the synthetic datasets by this (e.g. 0.01 for a smoke test)")
    parser.add_argument("--out", default="bench_speed_out",
                        help="output folder: runs/ (one record per measurement), commands.txt, speed.md; a rerun "
                             "measures only what has no record yet (default: bench_speed_out)")
    parser.add_argument("--report-only", action="store_true",
                        help="measure nothing: rebuild speed.md from the records in --out")
    parser.add_argument("--rounds", type=int, default=3,
                        help="alternate the models this many times and keep each one's best (default 3)")
    parser.add_argument("--no-profiles", action="store_true", help="drop the config's user profiles")
    parser.add_argument("--cache", default="recgoat_cache",
                        help="feature cache (warm-up) and synthetic dataset folder (default: recgoat_cache)")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--payload", default="{}", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    for name in ("epochs", "evals", "rounds"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be at least 1")
    return args


def child_main(args: argparse.Namespace) -> None:
    sys.argv = sys.argv[:1]  # RecBole's Config parses sys.argv
    p = json.loads(args.payload)
    if args.child == "probe":
        result = probe()
    elif args.child == "make-data":
        result = make_data(p["key"], p["scale"], p["cache"])
    elif args.child == "import":
        result = import_data(p["source"], p["dst"], p["name"])
    elif args.child == "warm-up":
        result = warm_up(p["dataset"], p["configs"], p["overrides"])
    else:
        result = measure(args.child, p["dataset"], p["configs"], p["overrides"], p["epochs"], p["evals"])
    print(json.dumps(result))


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    if args.child:  # (its recgoat_* packages: the checkout on its PYTHONPATH, run_child)
        child_main(args)
        return
    if sys.path[:1] != [ROOT]:  # this checkout's records, tables and generator (not an installed package's)
        sys.path.insert(0, ROOT)
    out = os.path.abspath(args.out)
    for path in (out, os.path.join(out, "runs")):
        if os.path.lexists(path) and not os.path.isdir(path):
            sys.exit(f"--out {args.out}: {path} exists and is not a folder (--out takes a folder)")
    if args.report_only:
        if not os.path.isdir(os.path.join(out, "runs")):
            sys.exit(f"--report-only: no records in {args.out} (no runs/ folder)")
        print(report(out, log=lambda line: print(line, file=sys.stderr)), end="")
        return
    from recgoat_recbole.bench.synthetic import SHAPES, ScaleError, scaled

    datasets = list(dict.fromkeys(d for x in args.dataset for d in (PAPER_SETS if x == "synthetic-paper" else [x])))
    if args.scale != 1 and not any(d in SHAPES for d in datasets):
        sys.exit(f"--scale applies to the synthetic datasets ({', '.join(sorted(SHAPES))}); none is named")
    try:
        for d in datasets:
            if d in SHAPES:
                scaled(SHAPES[d], args.scale)
    except ScaleError as exc:
        sys.exit(f"--scale {args.scale:g}: {exc}")
    cache = os.path.abspath(args.cache)
    os.makedirs(cache, exist_ok=True)
    configs = per_dataset(args.config, datasets, "--config")
    data_paths = per_dataset(args.data_path, datasets, "--data-path")
    if any(len(v) > 1 for v in data_paths.values()):
        sys.exit("--data-path: one folder per dataset")
    codes = {"after": ROOT}
    if args.before:
        if not os.path.isdir(os.path.join(args.before, "recgoat_recbole")):
            sys.exit(f"--before {args.before!r}: no recgoat_recbole/ there (pass a checkout's root)")
        codes["before"] = os.path.abspath(args.before)
    with tempfile.TemporaryDirectory() as tmp:
        if args.device == "cuda":  # refused before anything is generated, imported or recorded
            found = run_child(child_command(args, "probe", {}), tmp)
            if not found["cuda"]:
                sys.exit(f"bench_speed.py: --device cuda: torch {found['torch']} sees no CUDA device on this "
                         "machine; run it on a GPU machine, or leave --device out")
        os.makedirs(out, exist_ok=True)
        recorder = Recorder(out)
        commits = {name: git_state(root) for name, root in codes.items()}
        for dataset in datasets:
            measure_dataset(args, dataset, [os.path.abspath(c) for c in configs[dataset]],
                            (data_paths[dataset] or [None])[0], cache, codes, commits, tmp, recorder)
    record_command(out, argv)  # once every measurement of it is recorded (a resumed command: when it completes)
    print(report(out, log=lambda line: print(line, file=sys.stderr)), end="")


if __name__ == "__main__":
    main()
