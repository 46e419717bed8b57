"""The commands of the ``recgoat`` command line (``cmd_run``, ``cmd_bench``, ...).

The parser and the dispatch are :mod:`recgoat_cli`, which imports nothing heavy, so that ``recgoat --help``
and argument errors never wait for torch or RecBole; it imports this module once the arguments are parsed.
Each command imports what it needs when it runs.
"""

from __future__ import annotations

import argparse
import logging
import os
import shlex
import sys
from typing import Any, Callable, Sequence

import yaml

from recgoat_cli.errors import UserError
from recgoat_recbole.bench.names import BUILTIN_BASELINES

__all__ = ["fixable_errors"]


# ------------------------------------------------------------------------------------------------ helpers
def _parse_value(text: str) -> Any:
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def _overrides(pairs: Sequence[str] | None) -> dict[str, Any]:
    """``--set`` / ``--key=value`` pairs as config values: YAML scalars, never evaluated (a value that is
    Python code is one :class:`ConfigError`, see :mod:`recgoat_recbole.patches.safe_config_values`)."""
    from recgoat_recbole.patches.safe_config_values import convert_value

    out: dict[str, Any] = {}
    for pair in pairs or []:
        if "=" not in pair:
            raise UserError(f"--set expects KEY=VALUE, got {pair!r}")
        key, value = pair.split("=", 1)
        out[key.strip()] = convert_value(key.strip(), _parse_value(value))
    return out


def _read_yaml(path: str) -> Any:
    """A YAML file this command reads itself (``--tuned``, ``--grid``): plain data, bounded, and no value in it
    that is Python code (each is one error naming the file and the key)."""
    from recgoat_recbole.patches.safe_config_values import check_data, load_yaml

    data = load_yaml(_check_files([path])[0])
    check_data(data, path)
    return data


def _check_files(paths: Sequence[str] | None) -> list[str]:
    files = list(paths or [])
    for path in files:
        if not os.path.isfile(path):
            raise UserError(f"config file not found: {path}")
    return files


def _progress(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _log_file() -> str | None:
    """The log file RecBole's ``init_logger`` opened for this run, if any."""
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.FileHandler):
            return os.path.relpath(handler.baseFilename)
    return None


def _resolve_model(name: str) -> Any:
    from recbole.utils import get_model

    import recgoat_recbole.registry  # noqa: F401  (importing any part of the package registers its models)

    try:
        return get_model(name)
    except ValueError as exc:
        raise UserError(str(exc)) from None


def _config_model(files: list[str], model: str | None) -> str:
    if model:
        return model
    from recgoat_recbole.patches.safe_config_values import load_yaml

    for path in reversed(files):
        data = load_yaml(path) or {}
        if isinstance(data, dict) and data.get("model"):
            return str(data["model"])
    return "RecGOAT"


# -------------------------------------------------------------------------------------------- subcommands
def cmd_run(args: argparse.Namespace) -> int:
    """Train, select on validation and test one model, exactly like ``run_recbole`` (``--nproc``: like RecBole's
    ``run(..., nproc=N)``, in N processes)."""
    files = _check_files(args.config)
    name = _config_model(files, args.model)
    model = _resolve_model(name)
    from recgoat_recbole.training import run_distributed, run_training

    overrides = _overrides(args.set)
    overrides.update(_device_overrides(args.device, args.gpu_id))  # the options win over --set
    quiet = not args.verbose
    cold = None  # (the test split's cold items: one process only)
    if args.nproc > 1 or args.world_size > 0:
        if args.world_size > 0 and args.world_size < args.nproc + args.group_offset:
            raise UserError(f"--world-size {args.world_size} is smaller than --group-offset {args.group_offset} + "
                            f"--nproc {args.nproc}")
        summary = run_distributed(name, args.dataset, files, overrides, nproc=args.nproc,
                                  world_size=args.world_size, ip=args.ip, port=str(args.port),
                                  group_offset=args.group_offset, saved=not args.no_save,
                                  show_progress=False if quiet else None, progress=_progress, quiet=quiet)
        if summary is None:  # (this machine has no local rank 0 result: nothing to print)
            return 0
        log, checkpoint = summary.get("log"), summary.get("checkpoint")
        valid, test = summary.get("best_valid_result"), summary.get("test_result")
    else:
        from recgoat_recbole.aligned import fit_ncl_clusters

        # RecBole's NCL, as `recgoat bench` runs it: its 1000 k-means clusters fitted to a small dataset (RecGOAT on
        # NCL and NCL+Align fit theirs when they are built)
        before = (lambda config, data: fit_ncl_clusters(config, data, "NCL")) if name == "NCL" else None
        result = run_training(model=model, dataset=args.dataset, config_file_list=files or None,
                              config_dict=overrides, saved=not args.no_save, before_model=before,
                              show_progress=False if quiet else None, progress=_progress, quiet=quiet)
        log, checkpoint = _log_file(), result.checkpoint
        valid, test = result.best_valid_result, result.test_result
        cold = getattr(result, "cold", None)
    if log:
        print(f"log: {os.path.relpath(log)}")
    print(f"checkpoint: {os.path.relpath(checkpoint) if checkpoint else 'none (--no-save)'}")
    for label, values in (("best valid", valid), ("test", test)):  # last: metrics
        if not values:  # e.g. a LightGCN-layout dataset without valid.txt: RecBole validates nothing
            print(f"{label}: none (no validation split: the model of the last epoch was tested)")
            continue
        print(f"{label}: " + "  ".join(f"{k} {float(v):.4f}" for k, v in values.items()))
    for line in _cold_lines(cold):
        print(line)
    return 0


def _cuda_available() -> bool:
    """``torch.cuda.is_available()`` without starting CUDA (NVML's count): a CUDA runtime started before RecBole
    sets ``CUDA_VISIBLE_DEVICES`` from ``gpu_id`` would ignore it, and ``--device cuda:1`` would run on GPU 0."""
    import torch

    previous = os.environ.get("PYTORCH_NVML_BASED_CUDA_CHECK")
    os.environ["PYTORCH_NVML_BASED_CUDA_CHECK"] = "1"
    try:
        return torch.cuda.is_available()
    finally:
        if previous is None:
            os.environ.pop("PYTORCH_NVML_BASED_CUDA_CHECK", None)
        else:
            os.environ["PYTORCH_NVML_BASED_CUDA_CHECK"] = previous


def _cold_lines(cold: dict | None) -> list[str]:
    """``test (cold items, N users): ...`` and the other slices of a test split with cold items
    (:data:`recgoat_recbole.training.COLD_SLICES`; docs/usage.md says what each means)."""
    if not cold:
        return []
    titles = {"cold": "cold items", "among_cold": "among cold items", "warm": "warm items"}
    lines = []
    for name, title in titles.items():
        values = dict(cold["test"].get(name) or {})
        users = int(values.pop("users", 0))
        shown = "  ".join(f"{k} {float(v):.4f}" for k, v in values.items()) or "none"
        lines.append(f"test ({title}, {users:,} users): {shown}")
    return lines


def _device_overrides(device: str | None, gpu_id: str | None) -> dict[str, Any]:
    """``--device`` / ``--gpu-id`` as RecBole's config keys: ``cpu`` is ``gpu_id: ''`` (RecBole 1.2.1 puts the
    model on the CPU only when ``gpu_id`` is empty or there is no CUDA; ``use_gpu`` alone changes nothing there)
    and ``use_gpu: false``; ``cuda`` is ``use_gpu: true``; ``cuda:N`` also ``gpu_id: 'N'`` (RecBole sets
    ``CUDA_VISIBLE_DEVICES`` to ``gpu_id``, so that GPU is the process's ``cuda``)."""
    out: dict[str, Any] = {}
    if gpu_id is not None:
        gpu_id = str(gpu_id).strip()
        if not all(part.strip().isdigit() for part in gpu_id.split(",")):
            raise UserError(f"--gpu-id expects GPU numbers such as 0 or 0,1, got {gpu_id!r}")
        out["gpu_id"] = ",".join(part.strip() for part in gpu_id.split(","))
    if device is None:
        return out
    kind, _, index = device.strip().lower().partition(":")
    if kind == "cpu" and not index:
        if gpu_id is not None:
            raise UserError(f"--device cpu and --gpu-id {gpu_id} contradict each other")
        return {"gpu_id": "", "use_gpu": False}
    if kind != "cuda" or (index and not index.isdigit()):
        raise UserError(f"--device expects cpu, cuda or cuda:N, got {device!r}")
    if not _cuda_available():
        raise UserError(f"--device {device}: CUDA is not available here (use --device cpu)")
    out["use_gpu"] = True
    if index:
        if gpu_id is not None and out["gpu_id"] != index:
            raise UserError(f"--device {device} and --gpu-id {gpu_id} contradict each other")
        out["gpu_id"] = index
    return out


def cmd_recommend(args: argparse.Namespace) -> int:
    """Each user's top k from a checkpoint, in MMRec's TSV layout (:mod:`recgoat_recbole.recommend`)."""
    from recgoat_recbole.recommend import RecommendError, recommend

    try:
        report = recommend(args.checkpoint, args.output, args.k, args.users, args.exclude, args.device,
                           quiet=not args.verbose)
    except RecommendError as exc:
        raise UserError(str(exc)) from None
    log = _log_file()
    if log:
        print(f"log: {log}")
    print(report)
    return 0


def cmd_features_text(args: argparse.Namespace) -> int:
    from recgoat_recbole.features.text import extract_text_features

    try:
        path = extract_text_features(args.table, args.output, args.columns, args.id_column, args.model,
                                     args.device, args.batch_size, args.allow_download, not args.quiet)
    except KeyError as exc:
        raise UserError(str(exc.args[0])) from None
    print(path)
    return 0


def cmd_features_image(args: argparse.Namespace) -> int:
    from recgoat_recbole.features.image import extract_image_features

    print(extract_image_features(args.source, args.output, args.model, args.device, args.batch_size,
                                 args.allow_download, not args.quiet))
    return 0


def cmd_features_profiles(args: argparse.Namespace) -> int:
    files = _check_files(args.config)
    model = _resolve_model("RecGOAT")
    from recbole.config import Config

    from recgoat_recbole.features.profiles import extract_profile_features

    if args.backend == "transformers" and not args.model:
        raise UserError("--backend transformers needs --model (a local model name or path)")
    if args.backend == "http" and not args.url:
        raise UserError("--backend http needs --url (an OpenAI-compatible endpoint)")
    overrides = _overrides(args.set)
    config = Config(model=model, dataset=args.dataset, config_file_list=files or None, config_dict=overrides)
    try:
        path = extract_profile_features(config, args.output, args.item_table, args.columns, args.id_column,
                                        args.backend, args.model, args.url, args.encoder, args.max_items,
                                        not args.quiet, args.allow_download)
    except KeyError as exc:  # a column that the item table lacks
        raise UserError(str(exc.args[0])) from None
    print(path)
    return 0


def cmd_data_import(args: argparse.Namespace) -> int:
    from recgoat_recbole.importers import DataImportError, import_lightgcn, import_mmrec

    if args.format != "mmrec" and (args.split is not None or args.seed is not None):
        raise UserError("--split / --seed are for --format mmrec data without x_label; the LightGCN layout keeps "
                        "its own train.txt / valid.txt / test.txt")
    if args.format != "mmrec" and args.cold_items is not None:
        raise UserError("--cold-items is for --format mmrec (with or without x_label); the LightGCN layout keeps "
                        "its own train.txt / valid.txt / test.txt")
    if args.feature and args.format != "lightgcn":
        raise UserError("--feature is for --format lightgcn; the mmrec format reads <modality>_feat.npy "
                        "from the source folder")
    features: dict[str, str] = {}
    for pair in args.feature or []:
        modality, sep, path = pair.partition("=")
        if not sep or not modality.strip() or not path.strip():
            raise UserError(f"--feature expects NAME=FILE.npy, got {pair!r}")
        if modality in features:
            raise UserError(f"--feature {modality} is given twice")
        features[modality] = _feature_source(args.src, path)
    try:
        if args.format == "mmrec":
            import_mmrec(args.src, args.dst, args.name, force=args.force, split=args.split,
                         seed=args.seed, cold_items=args.cold_items)  # logs its report
        else:
            import_lightgcn(args.src, args.dst, args.name, features, force=args.force)
    except DataImportError as exc:
        raise UserError(str(exc)) from None
    return 0


def _feature_source(src: str, path: str) -> str:
    """A ``--feature`` file: a relative path is looked up in SRC first, then in the current directory."""
    if os.path.isabs(path):
        return path
    in_src = os.path.join(src, path)
    if os.path.isfile(in_src) or not os.path.isdir(src):  # (a missing SRC: the importer says so)
        return in_src
    if not os.path.isfile(path):
        raise UserError(f"feature file not found: {path} (looked in {src} and in the current directory)")
    logging.getLogger(__name__).info(f"--feature {path}: not in {src}, using ./{path} from the current directory")
    return path


def _command(args: argparse.Namespace) -> str:
    """The command as the user typed it (the argv :func:`main` parsed), quoted for a shell: reports record it."""
    return "recgoat " + shlex.join(args.argv)


def _bench_common(args: argparse.Namespace) -> dict[str, Any]:
    common: dict[str, Any] = {"epochs": args.epochs, "show_progress": False, "save_dataset": False}
    if args.stopping_step is not None:  # else the dataset YAML's (imported data: 50), else RecBole's 10
        common["stopping_step"] = args.stopping_step
    if args.learning_rate is not None:
        common["learning_rate"] = args.learning_rate
    if args.device == "cpu":  # RecBole 1.2.1 picks the GPU whenever CUDA is there and gpu_id is not empty
        common.update(use_gpu=False, gpu_id="")
    common.update(_overrides(args.set))
    return common


def cmd_bench(args: argparse.Namespace) -> int:
    """Train RecGOAT and RecBole's built-ins on the same split with the same budget; tables, CSV and a plot."""
    from recgoat_recbole.bench.design import build_specs

    configs = _dataset_configs(args)
    for model in args.models or ():  # None: the default selection (with the multimodal peers where features exist)
        _resolve_model(model)
    tuned = _load_tuned(args.tuned) if args.tuned else None
    specs = build_specs(args.datasets, args.models, args.seeds, _bench_common(args), configs, args.ablations,
                        args.gamma or (), tuned, align=args.align, tag=args.tag)
    if tuned:
        _warn_unused_tuned(args.tuned, tuned, specs)
    title = f"`{_command(args)}`"
    if args.report_only:
        title += " (tables from the finished runs only)"
    both = sorted(set(_tuning_seeds(args.tuned)) & set(args.seeds)) if args.tuned else []
    if both:
        seeds = ", ".join(map(str, both))
        note = (f"seed{'s' if len(both) > 1 else ''} {seeds} chose the settings of {args.tuned} on validation and "
                "also count in the tuned rows' test means, which favours them: report other seeds")
        print(f"recgoat: warning: {note}", file=sys.stderr)
        title += f"\n\nWarning: {note}."
    for folder in args.reuse or []:  # only the folders named: --tuned DIR/best.yaml reuses nothing by itself
        if not os.path.isdir(folder):
            raise UserError(f"--reuse {folder}: no such folder")
    if not args.report_only:
        _record_command(args.out, _command(args))
    _run_suite(specs, args.out, title, train=not args.report_only, jobs=args.jobs, reuse_from=args.reuse or [])
    return 0


def _tuning_seeds(path: str) -> list[int]:
    """The ``--seeds`` of the ``recgoat tune`` commands that wrote ``best.yaml`` (its comment lines name them)."""
    seeds: list[int] = []
    try:
        with open(path, encoding="utf-8") as f:
            lines = [line[2:] for line in f if line.startswith("# ")]
    except OSError:
        return seeds
    for line in lines:
        _, found, command = line.partition("recgoat tune ")
        if not found:
            continue
        try:
            words = shlex.split(command)
        except ValueError:
            continue
        taking = False
        for word in words:
            if word == "--seeds":
                taking = True
            elif word.startswith("-"):
                taking = False
            elif taking and word.lstrip("-").isdigit():
                seeds.append(int(word))
    return seeds


def _warn_unused_tuned(path: str, tuned: dict[str, dict[str, dict[str, Any]]], specs: Sequence[Any]) -> None:
    """One line per dataset/model entry of ``--tuned`` that no run of this command uses."""
    used = {(spec.dataset, spec.model) for spec in specs}
    for dataset, models in tuned.items():
        for model in models:
            if (dataset, model) not in used:
                print(f"recgoat: warning: {path}: the settings for {model} on {dataset} are not used (that run is "
                      "not in --datasets / --models)", file=sys.stderr)


def _run_suite(specs: Sequence[Any], out: str, title: str, train: bool = True, jobs: int = 1,
               reuse_from: Sequence[str] = (), keep_checkpoints: bool = False) -> dict[str, str]:
    """Run (or collect) the specs, write results.csv / .md / .png, and print one final block: the table, and
    where the logs, the CSV, the Markdown and the PNG are."""
    from recgoat_recbole.bench.names import METRICS
    from recgoat_recbole.bench.execute import run_all
    from recgoat_recbole.bench.report import markdown_table, summarise, write_outputs

    records = run_all(specs, out, train=train, jobs=jobs, reuse_from=reuse_from, keep_checkpoints=keep_checkpoints)
    if not records:
        raise FileNotFoundError(f"no finished runs in {out}/runs for these settings")
    paths = write_outputs(records, out, METRICS, title)
    rule = "=" * 100
    print(f"\n{rule}\n{markdown_table(summarise(records, METRICS), METRICS)}\n")
    print(f"logs:        {os.path.join(out, 'work', '<run>', 'log', '<model>')}/*.log (RecBole's log of each run)")
    kept = [r["checkpoint"] for r in records if r.get("checkpoint")]
    if kept:
        print("checkpoints: " + "\n             ".join(kept) + "  (recbole's load_data_and_model reads them)")
    else:
        print("checkpoints: not kept by benchmark runs (only their metrics, in "
              f"{os.path.join(out, 'runs')}/*.json); `recgoat run` saves one to saved/")
    print(f"csv:         {paths['csv']}\nmarkdown:    {paths['markdown']}\npng:         {paths['png']}\n{rule}")
    return paths


def _dataset_configs(args: argparse.Namespace) -> dict[str, tuple[str, ...]]:
    """``--config DATASET=FILE[,FILE...]`` pairs, checked (several files: layered in order, later ones win, e.g.
    an imported data YAML and recbole_configs/paper.yaml); other datasets use their data YAML (find_config)."""
    configs = {}
    for pair in args.config or []:
        if "=" not in pair:
            raise UserError(f"--config expects DATASET=FILE[,FILE...], got {pair!r}")
        dataset, paths = pair.split("=", 1)
        configs[dataset] = tuple(_check_files([p for p in paths.split(",") if p]))
        if not configs[dataset]:
            raise UserError(f"--config {dataset}= names no file")
    return configs


def _load_tuned(path: str) -> dict[str, dict[str, dict[str, Any]]]:
    data = _read_yaml(path) or {}
    if not isinstance(data, dict) or not all(isinstance(m, dict) and all(isinstance(p, dict) for p in m.values())
                                             for m in data.values()):
        raise UserError(f"{path}: expected {{dataset: {{model: {{key: value}}}}}}, as `recgoat tune` writes")
    return data


def cmd_tune(args: argparse.Namespace) -> int:
    """Grid search on the validation split, the same nine-point budget per model; writes OUT/best.yaml."""
    from recgoat_recbole.bench.design import find_config
    from recgoat_recbole.bench.execute import run_all
    from recgoat_recbole.bench.tuning import (EXTEND_ROUNDS, across_table, choose, choose_across, extend_edges,
                                              grid_specs, load_grids, tuning_table, write_choice)

    configs = _dataset_configs(args)
    for dataset in args.datasets:
        if dataset not in configs:
            configs[dataset] = find_config(dataset)
    if args.grid:
        _read_yaml(args.grid)  # bounded, and no value that is code, before the grid is read
    try:
        grids = load_grids(args.grid)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    models = args.models  # None: every model with a grid (the multimodal peers where the dataset has features)
    for model in models or ():
        _resolve_model(model)
    if args.extend_edges and args.across:
        raise UserError("--extend-edges extends each dataset's grid apart; --across chooses one point for all "
                        "datasets: use one of them")
    common = _bench_common(args)

    def grid_of(per_dataset) -> list:
        return [run for dataset in args.datasets
                for run in grid_specs([dataset], models, args.seeds, common, configs, per_dataset[dataset],
                                      align=args.align)]

    def records_for(grid: list) -> list[dict]:  # the grid's runs (resuming), printing validation metrics only
        if not args.report_only:  # (once the grid is made: a command whose grid cannot be made is not recorded)
            _record_command(args.out, _command(args))
        return run_all([spec for spec, _ in grid], args.out, show_test=False, train=not args.report_only,
                       jobs=args.jobs)

    grid, records = extend_edges(args.datasets, grids, grid_of, records_for,
                                 rounds=EXTEND_ROUNDS if args.extend_edges else 0)
    if not records:
        raise FileNotFoundError(f"no finished grid runs in {args.out}/runs for these settings")
    choice = choose_across(records, grid) if args.across else choose(records, grid)
    best = os.path.join(args.out, "best.yaml")
    how = "one point for every dataset, by the mean ratio to the first point" if args.across else "per dataset"
    write_choice(choice, best, f"chosen on validation NDCG@10 ({how}) by: {_command(args)}")
    table = tuning_table(records, grid, choice)
    if args.across:
        table += "\n\nAcross the datasets (validation NDCG@10 as a ratio to each model's first point):\n\n" + \
            across_table(records, grid, choice)
    with open(os.path.join(args.out, "tuning.md"), "w", encoding="utf-8") as f:
        f.write(f"`{_command(args)}` (validation only; the chosen point in bold)\n\n{table}\n")
    print(table)
    print(f"best: {best}\ntable: {os.path.join(args.out, 'tuning.md')}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """MovieLens-100k end to end: text features + template profiles, RecGOAT and LightGCN on one split."""
    import shutil

    from recgoat_recbole.bench.design import build_specs

    if args.fresh and os.path.isdir(os.path.join(args.out, "runs")):
        shutil.rmtree(os.path.join(args.out, "runs"))  # re-train; the feature cache (./recgoat_cache) stays
    specs = build_specs(["ml-100k"], ["RecGOAT", "LightGCN"], args.seeds, _bench_common(args))
    _run_suite(specs, args.out, f"`{_command(args)}` (ml-100k, RecBole's RS 8:1:1 split, seeds "
                                f"{' '.join(map(str, args.seeds))})", keep_checkpoints=True)
    return 0


def cmd_results(args: argparse.Namespace) -> int:
    """Rebuild (or with --check, compare) the generated result blocks of the docs from committed records."""
    import glob

    from recgoat_recbole.bench.docs import regenerate

    root = args.root
    files = args.files or [p for p in [os.path.join(root, "README.md"),
                                       *sorted(glob.glob(os.path.join(root, "docs", "*.md")))] if os.path.isfile(p)]
    for path in files:
        if not os.path.isfile(path):
            raise UserError(f"{path}: no such file")
    changed = regenerate(files, root, check=args.check)
    if args.check:
        for item in changed:
            print(f"differs from its records: {item} (run `recgoat results` to rebuild it)", file=sys.stderr)
        return 1 if changed else 0
    print("\n".join(f"rebuilt: {item}" for item in changed) or "every block already matches its records")
    return 0


def _record_command(out: str, command: str) -> None:
    """Append the command to ``OUT/commands.txt`` (once): what a committed results folder says it ran."""
    from recgoat_recbole.bench.records import record_command

    record_command(out, command)


def fixable_errors() -> tuple[type[BaseException], ...]:
    """The exceptions printed as one ``recgoat: error:`` line (imported once a command runs, not for --help)."""
    from recgoat_core.feature_files import FeatureFileError
    from recgoat_recbole.config_check import ConfigError
    from recgoat_recbole.dataset_cache import CacheError
    from recgoat_recbole.bench.docs import ResultsError
    from recgoat_recbole.signing import KeyFileError

    return ResultsError, UserError, FileNotFoundError, FileExistsError, FeatureFileError, ConfigError, CacheError, KeyFileError
