"""The ``recgoat`` command line. ``recgoat --help`` lists every subcommand; ``recgoat SUB --help`` its options.

Errors a user can fix (a missing file, an unknown model, a bad feature file) are printed as one line,
``recgoat: error: ...``, with exit status 2, instead of a traceback from inside RecBole.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import Any, Callable, Sequence

import yaml

from recgoat_recbole.bench.runner import BUILTIN_BASELINES
from recgoat_recbole.config_check import ConfigError
from recgoat_recbole.dataset_cache import CacheError
from recgoat_recbole.features.store import FeatureFileError

__all__ = ["main", "build_parser", "UserError"]


class UserError(Exception):
    """An error in what the user asked for; printed as one line."""


# ------------------------------------------------------------------------------------------------ helpers
def _parse_value(text: str) -> Any:
    import yaml

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def _overrides(pairs: Sequence[str] | None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for pair in pairs or []:
        if "=" not in pair:
            raise UserError(f"--set expects KEY=VALUE, got {pair!r}")
        key, value = pair.split("=", 1)
        out[key.strip()] = _parse_value(value)
    return out


def _check_files(paths: Sequence[str] | None) -> list[str]:
    files = list(paths or [])
    for path in files:
        if not os.path.isfile(path):
            raise UserError(f"config file not found: {path}")
    return files


def _resolve_model(name: str) -> Any:
    import recgoat_recbole  # noqa: F401  (registers RecGOAT)
    from recbole.utils import get_model

    try:
        return get_model(name)
    except ValueError as exc:
        raise UserError(str(exc)) from None


def _config_model(files: list[str], model: str | None) -> str:
    if model:
        return model
    import yaml

    for path in reversed(files):
        with open(path, encoding="utf-8") as f:
            data = yaml.safe_load(f) or {}
        if isinstance(data, dict) and data.get("model"):
            return str(data["model"])
    return "RecGOAT"


# -------------------------------------------------------------------------------------------- subcommands
def cmd_run(args: argparse.Namespace) -> int:
    """Train, select on validation and test one model, exactly like ``run_recbole``."""
    files = _check_files(args.config)
    model = _resolve_model(_config_model(files, args.model))
    from recbole.quick_start import run_recbole

    result = run_recbole(model=model, dataset=args.dataset, config_file_list=files or None,
                         config_dict=_overrides(args.set), saved=not args.no_save)
    for label, key in (("best valid", "best_valid_result"), ("test", "test_result")):
        print(f"{label}: " + "  ".join(f"{k} {float(v):.4f}" for k, v in result[key].items()))
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
    config = Config(model=model, dataset=args.dataset, config_file_list=files or None,
                    config_dict=_overrides(args.set))
    try:
        path = extract_profile_features(config, args.output, args.item_table, args.columns, args.id_column,
                                        args.backend, args.model, args.url, args.encoder, args.max_items,
                                        not args.quiet, args.allow_download)
    except KeyError as exc:  # a column that the item table lacks
        raise UserError(str(exc.args[0])) from None
    print(path)
    return 0


def cmd_data_import(args: argparse.Namespace) -> int:
    from recgoat_recbole.datasets.importers import ImportError_, import_lightgcn, import_mmrec

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
        features[modality] = path
    try:
        if args.format == "mmrec":
            import_mmrec(args.src, args.dst, args.name, force=args.force)  # logs its report
        else:
            import_lightgcn(args.src, args.dst, args.name, features, force=args.force)
    except ImportError_ as exc:
        raise UserError(str(exc)) from None
    return 0


def _bench_common(args: argparse.Namespace) -> dict[str, Any]:
    common: dict[str, Any] = {"epochs": args.epochs, "stopping_step": args.stopping_step,
                              "show_progress": False, "save_dataset": False}
    if args.learning_rate is not None:
        common["learning_rate"] = args.learning_rate
    if args.device == "cpu":
        common["use_gpu"] = False
    common.update(_overrides(args.set))
    return common


def cmd_bench(args: argparse.Namespace) -> int:
    """Train RecGOAT and RecBole's built-ins on the same split with the same budget; tables, CSV and a plot."""
    from recgoat_recbole.bench import build_specs, run_benchmark

    configs = _dataset_configs(args)
    for model in args.models:
        _resolve_model(model)
    tuned = _load_tuned(args.tuned) if args.tuned else None
    specs = build_specs(args.datasets, args.models, args.seeds, _bench_common(args), configs, args.ablations,
                        args.gamma or (), tuned)
    flags = [f"--datasets {' '.join(args.datasets)}", f"--models {' '.join(args.models)}",
             f"--seeds {' '.join(map(str, args.seeds))}", f"--epochs {args.epochs}"]
    if args.learning_rate is not None:
        flags.append(f"--learning-rate {args.learning_rate:g}")
    if args.ablations:
        flags.append("--ablations")
    if args.gamma:
        flags.append(f"--gamma {' '.join(f'{g:g}' for g in args.gamma)}")
    if args.set:
        flags.append(f"--set {' '.join(args.set)}")
    if args.tuned:
        flags.append(f"--tuned {args.tuned}")
    title = f"`recgoat bench {' '.join(flags)}`"
    if args.report_only:
        title += " (tables from the finished runs: `--report-only`)"
    reuse = [os.path.dirname(os.path.abspath(args.tuned))] if args.tuned else []
    reuse += args.reuse or []
    paths = run_benchmark(specs, args.out, title, train=not args.report_only, jobs=args.jobs, reuse_from=reuse)
    print("\n".join(f"{k}: {v}" for k, v in paths.items()))
    return 0


def _dataset_configs(args: argparse.Namespace) -> dict[str, str]:
    """``--config DATASET=FILE`` pairs, checked; other datasets use recbole_configs/<dataset>.yaml."""
    configs = {}
    for pair in args.config or []:
        if "=" not in pair:
            raise UserError(f"--config expects DATASET=FILE, got {pair!r}")
        dataset, path = pair.split("=", 1)
        configs[dataset] = _check_files([path])[0]
    return configs


def _load_tuned(path: str) -> dict[str, dict[str, dict[str, Any]]]:
    import yaml

    _check_files([path])
    with open(path, encoding="utf-8") as f:
        data = yaml.safe_load(f) or {}
    if not isinstance(data, dict) or not all(isinstance(m, dict) and all(isinstance(p, dict) for p in m.values())
                                             for m in data.values()):
        raise UserError(f"{path}: expected {{dataset: {{model: {{key: value}}}}}}, as `recgoat tune` writes")
    return data


def cmd_tune(args: argparse.Namespace) -> int:
    """Grid search on the validation split, the same nine-point budget per model; writes OUT/best.yaml."""
    from recgoat_recbole.bench import find_config
    from recgoat_recbole.bench.tuning import choose, grid_specs, load_grids, run_grid, tuning_table, write_choice

    configs = _dataset_configs(args)
    for dataset in args.datasets:
        if dataset not in configs:
            configs[dataset] = find_config(dataset)
    try:
        grids = load_grids(args.grid)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    models = args.models or [m for m in ("RecGOAT", *BUILTIN_BASELINES) if m in grids]
    for model in models:
        _resolve_model(model)
    grid = grid_specs(args.datasets, models, args.seeds, _bench_common(args), configs, grids)
    records = run_grid(grid, args.out, jobs=args.jobs, train=not args.report_only)
    if not records:
        raise FileNotFoundError(f"no finished grid runs in {args.out}/runs for these settings")
    choice = choose(records, grid)
    flags = (f"--datasets {' '.join(args.datasets)} --models {' '.join(models)} --seeds "
             f"{' '.join(map(str, args.seeds))} --epochs {args.epochs}"
             + (f" --learning-rate {args.learning_rate:g}" if args.learning_rate is not None else "")
             + (f" --grid {args.grid}" if args.grid else "") + (f" --set {' '.join(args.set)}" if args.set else ""))
    best = os.path.join(args.out, "best.yaml")
    write_choice(choice, best, f"chosen on validation NDCG@10 by: recgoat tune {flags}")
    table = tuning_table(records, grid, choice)
    with open(os.path.join(args.out, "tuning.md"), "w", encoding="utf-8") as f:
        f.write(f"`recgoat tune {flags}` (validation only; the chosen point in bold)\n\n{table}\n")
    print(table)
    print(f"best: {best}\ntable: {os.path.join(args.out, 'tuning.md')}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """MovieLens-100k end to end: text features + template profiles, RecGOAT and LightGCN on one split."""
    import shutil

    from recgoat_recbole.bench import build_specs, run_benchmark

    if args.fresh and os.path.isdir(os.path.join(args.out, "runs")):
        shutil.rmtree(os.path.join(args.out, "runs"))  # re-train; the feature cache (./recgoat_cache) stays
    specs = build_specs(["ml-100k"], ["RecGOAT", "LightGCN"], args.seeds, _bench_common(args))
    paths = run_benchmark(specs, args.out, f"`recgoat demo --epochs {args.epochs} --learning-rate "
                                           f"{args.learning_rate:g}` (ml-100k, RecBole's RS 8:1:1 split, seeds "
                                           f"{' '.join(map(str, args.seeds))})")
    print("\n".join(f"{k}: {v}" for k, v in paths.items()))
    return 0


def _add_config_args(p: argparse.ArgumentParser) -> None:
    """The RecBole config options shared by the commands that build a RecBole ``Config``."""
    p.add_argument("--config", "-c", nargs="+", default=[], metavar="FILE", help="RecBole YAML file(s)")
    p.add_argument("--dataset", "-d", default=None, help="dataset name (default: the config's)")
    p.add_argument("--set", nargs="*", metavar="KEY=VALUE", help="override config keys (YAML values)")


def _add_budget(p: argparse.ArgumentParser, epochs: int, out: str, learning_rate: float | None = None) -> None:
    p.add_argument("--seeds", type=int, nargs="+", default=[2020])
    p.add_argument("--epochs", type=int, default=epochs, help="epoch budget per run (early stopping on valid)")
    p.add_argument("--stopping-step", type=int, default=10)
    p.add_argument("--learning-rate", type=float, default=learning_rate,
                   help=f"same for every model (default: {learning_rate if learning_rate else 'each its own'})")
    p.add_argument("--device", default=None, help="cpu to force the CPU")
    p.add_argument("--set", nargs="*", metavar="KEY=VALUE", help="override config keys for every run")
    p.add_argument("--out", default=out, help="output folder (runs/, results.csv/.md/.png); reruns resume")


# ------------------------------------------------------------------------------------------------- parser
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="recgoat",
        description="RecGOAT (LLM-enhanced multimodal recommendation) on RecBole 1.2.1.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    run = sub.add_parser("run", help="train and evaluate a model from RecBole YAML config(s), like run_recbole",
                         description=cmd_run.__doc__)
    _add_config_args(run)
    run.add_argument("--model", "-m", default=None,
                     help="model name (RecGOAT or any RecBole model); default: the config's model, else RecGOAT")
    run.add_argument("--no-save", action="store_true", help="do not write checkpoints to saved/")
    run.set_defaults(func=cmd_run)

    features = sub.add_parser("features", help="extract LM features (text, image, user profiles)")
    fsub = features.add_subparsers(dest="kind", metavar="KIND")
    fsub.required = True
    text = fsub.add_parser("text", help="encode item text with sentence-transformers into a feature file")
    text.add_argument("table", help="RecBole .item file or CSV/TSV with item text")
    text.add_argument("--columns", nargs="+", required=True, help="text columns, most important first")
    text.add_argument("--id-column", default=None, help="item token column (default: the first column)")
    text.add_argument("--output", "-o", required=True, help="output .npz (ids, features, mask)")
    text.add_argument("--model", default=None, help="encoder name or path (default: offline all-MiniLM-L6-v2)")
    text.add_argument("--device", default=None)
    text.add_argument("--batch-size", type=int, default=256)
    text.add_argument("--allow-download", action="store_true", help="let sentence-transformers download --model")
    text.add_argument("--quiet", action="store_true", help="no progress bar")
    text.set_defaults(func=cmd_features_text)

    image = fsub.add_parser("image", help="encode item images with a transformers vision backbone")
    image.add_argument("source", help="image folder (token = file name) or CSV/TSV of token,path")
    image.add_argument("--model", required=True, help="vision model name or local path (CLIP, ViT, ...)")
    image.add_argument("--output", "-o", required=True, help="output .npz (ids, features, mask)")
    image.add_argument("--device", default=None)
    image.add_argument("--batch-size", type=int, default=32)
    image.add_argument("--allow-download", action="store_true")
    image.add_argument("--quiet", action="store_true")
    image.set_defaults(func=cmd_features_image)

    prof = fsub.add_parser("profiles", help="per-user preference profiles from the training split, embedded")
    _add_config_args(prof)
    prof.add_argument("--output", "-o", required=True, help="output .npz keyed by user token")
    prof.add_argument("--backend", choices=["template", "transformers", "http"], default="template",
                      help="template (offline, NOT an LLM), a local transformers LM, or an OpenAI-compatible URL")
    prof.add_argument("--model", default=None, help="LM name/path (transformers) or model name (http)")
    prof.add_argument("--url", default=None, help="OpenAI-compatible endpoint, e.g. http://127.0.0.1:8000/v1")
    prof.add_argument("--item-table", default=None, help="item text table (default: the dataset's .item file)")
    prof.add_argument("--columns", nargs="+", default=["movie_title", "class", "release_year"])
    prof.add_argument("--id-column", default=None)
    prof.add_argument("--encoder", default=None, help="text encoder for the profiles (default: offline MiniLM)")
    prof.add_argument("--max-items", type=int, default=50, help="history items per prompt (the most recent)")
    prof.add_argument("--allow-download", action="store_true")
    prof.add_argument("--quiet", action="store_true")
    prof.set_defaults(func=cmd_features_profiles)

    data = sub.add_parser("data", help="dataset tools")
    dsub = data.add_subparsers(dest="action", metavar="ACTION")
    dsub.required = True
    imp = dsub.add_parser("import", help="MMRec or LightGCN layout -> RecBole atomic files + features + YAML")
    imp.add_argument("src", help="source folder")
    imp.add_argument("dst", help="output data_path (the dataset goes to DST/NAME/)")
    imp.add_argument("--format", choices=["mmrec", "lightgcn"], required=True)
    imp.add_argument("--name", default=None, help="dataset name (default: from the source)")
    imp.add_argument("--feature", nargs="*", metavar="NAME=FILE.npy", help="lightgcn: item feature files")
    imp.add_argument("--force", action="store_true",
                     help="overwrite DST/NAME/NAME.yaml even if it was edited since the last import")
    imp.set_defaults(func=cmd_data_import)

    bench = sub.add_parser("bench", help="benchmark RecGOAT against RecBole built-ins (tables, CSV, plot)",
                           description=cmd_bench.__doc__)
    bench.add_argument("--datasets", nargs="+", default=["ml-100k"])
    bench.add_argument("--models", nargs="+", default=["RecGOAT", *BUILTIN_BASELINES])
    bench.add_argument("--config", nargs="*", metavar="DATASET=FILE", help="YAML per dataset (default: recbole_configs/)")
    bench.add_argument("--ablations", action="store_true", help="also run the paper's ablation table")
    bench.add_argument("--report-only", action="store_true",
                       help="train nothing: rebuild the tables from the runs already finished in --out")
    bench.add_argument("--gamma", type=float, nargs="*", help="γ sensitivity sweep: modality weight values")
    bench.add_argument("--tuned", default=None, metavar="BEST.yaml",
                       help="per dataset and model settings from `recgoat tune` (those rows are labelled tuned)")
    bench.add_argument("--jobs", type=int, default=1, help="runs trained at once, each in its own process")
    bench.add_argument("--reuse", nargs="*", metavar="DIR",
                       help="earlier --out folders: a finished run there with identical settings is copied, not trained")
    _add_budget(bench, epochs=300, out="bench_runs")
    bench.set_defaults(func=cmd_bench)

    tune = sub.add_parser("tune", help="grid search on validation, the same budget per model (writes best.yaml)",
                          description=cmd_tune.__doc__)
    tune.add_argument("--datasets", nargs="+", default=["ml-100k"])
    tune.add_argument("--models", nargs="+", default=None,
                      help="default: RecGOAT and every built-in with a grid (all but Pop)")
    tune.add_argument("--config", nargs="*", metavar="DATASET=FILE", help="YAML per dataset (default: recbole_configs/)")
    tune.add_argument("--grid", default=None, metavar="FILE.yaml",
                      help="{Model: {key: [values]}}, replacing the built-in grid of the models it names")
    tune.add_argument("--report-only", action="store_true", help="train nothing: choose from the finished runs")
    tune.add_argument("--jobs", type=int, default=1, help="runs trained at once, each in its own process")
    _add_budget(tune, epochs=300, out="bench_runs/tune")
    tune.set_defaults(func=cmd_tune)

    demo = sub.add_parser("demo", help="MovieLens-100k end to end: features, profiles, RecGOAT vs LightGCN",
                          description=cmd_demo.__doc__)
    # lr 0.005 for both: chosen on ml-100k validation for LightGCN (docs/results.md, "Tuning")
    _add_budget(demo, epochs=30, out="bench_runs/demo", learning_rate=0.005)
    demo.add_argument("--fresh", action="store_true", help="re-train (features stay cached)")
    demo.set_defaults(func=cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    # RecBole's Config reads sys.argv for --key=value overrides: hide ours from it.
    saved_argv, sys.argv = sys.argv, sys.argv[:1]
    try:
        func: Callable[[argparse.Namespace], int] = args.func
        return func(args)
    except (UserError, FileNotFoundError, FileExistsError, FeatureFileError, ConfigError, CacheError) as exc:
        print(f"recgoat: error: {exc}", file=sys.stderr)
        return 2
    except yaml.YAMLError as exc:  # a config file that is not valid YAML
        print(f"recgoat: error: invalid YAML: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2
    finally:
        sys.argv = saved_argv


if __name__ == "__main__":
    sys.exit(main())
