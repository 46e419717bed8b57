"""The ``recgoat`` parser and dispatch, importing nothing heavy.

``recgoat --help``, ``recgoat SUB --help`` and argument errors are answered by this package alone: it imports
the standard library only (no torch, RecBole, numpy, pandas), and it lives outside :mod:`recgoat_recbole`
because importing that package applies the RecBole fixes and registers RecGOAT. The commands themselves are
:mod:`recgoat_cli.commands` (``cmd_run``, ``cmd_bench``, ...), imported once the arguments are parsed.

Errors a user can fix (a missing file, an unknown model, a bad feature file or config value) are printed as
one line, ``recgoat: error: ...``, with exit status 2, instead of a traceback from inside RecBole.
"""

from __future__ import annotations

import argparse
import logging
import re
import sys
from typing import Callable, Sequence

from recgoat_cli.errors import UserError

__all__ = ["main", "build_parser", "UserError"]


# --------------------------------------------------------------------------------------- argument blocks
def _add_config_args(p: argparse.ArgumentParser) -> None:
    """The RecBole config options of the commands that build one RecBole ``Config`` (run, features profiles)."""
    p.add_argument("--config", "-c", nargs="+", action="extend", default=[], metavar="FILE",
                   help="RecBole YAML file(s), later ones win (the option may be repeated)")
    p.add_argument("--dataset", "-d", default=None, help="dataset name (default: the config's)")
    p.add_argument("--set", nargs="*", action="extend", metavar="KEY=VALUE",
                   help="override config keys (YAML values); RecBole's --KEY=VALUE works too")


def _add_verbose(p: argparse.ArgumentParser) -> None:
    """``--verbose``: every library warning, progress bar and RecBole log line (quiet by default)."""
    p.add_argument("--verbose", "-v", action="store_true",
                   help="show everything: library warnings, progress bars, RecBole's full log")


def _add_encoder_args(p: argparse.ArgumentParser, batch_size: int | None) -> None:
    """The options of the commands that run an encoder (features text, image, profiles; the last has no
    ``--device`` / ``--batch-size``: ``batch_size=None``)."""
    if batch_size is not None:
        p.add_argument("--device", default=None)
        p.add_argument("--batch-size", type=int, default=batch_size)
    p.add_argument("--allow-download", action="store_true", help="allow downloading the named model(s)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def _add_suite_args(p: argparse.ArgumentParser, models: list[str] | None, models_help: str | None,
                    report_only_help: str) -> None:
    """The options of the commands that train many runs over datasets and models (bench, tune)."""
    p.add_argument("--datasets", nargs="+", action="extend", default=None, help="default: ml-100k")
    p.add_argument("--models", nargs="+", action="extend", default=models, help=models_help)
    p.add_argument("--config", nargs="*", action="extend", metavar="DATASET=FILE[,FILE]",
                   help="YAML per dataset (default: its data YAML, recbole_configs/data/DATASET.yaml or "
                        "recgoat_data/DATASET/DATASET.yaml); several, comma-separated, are layered in order "
                        "(e.g. a data YAML and recbole_configs/paper.yaml)")
    p.add_argument("--report-only", action="store_true", help=report_only_help)
    p.add_argument("--jobs", type=int, default=1, help="runs trained at once, each in its own process")
    p.add_argument("--align", action="store_true",
                   help="add <Backbone>+Align after LightGCN, NGCF, SGL, NCL, BPR and SimpleX (docs/plugin.md)")


def _add_budget(p: argparse.ArgumentParser, epochs: int, out: str, learning_rate: float | None = None) -> None:
    """The training budget, the same for every run (bench, tune, demo)."""
    p.add_argument("--seeds", type=int, nargs="+", action="extend", default=None, help="default: 2020")
    p.add_argument("--epochs", type=int, default=epochs, help="epoch budget per run (early stopping on valid)")
    p.add_argument("--stopping-step", type=int, default=None,
                   help="early-stopping patience for every run (default: the dataset YAML's, else RecBole's 10)")
    p.add_argument("--learning-rate", type=float, default=learning_rate,
                   help=f"same for every model (default: {learning_rate if learning_rate else 'each its own'})")
    p.add_argument("--device", default=None, help="cpu to force the CPU")
    p.add_argument("--set", nargs="*", action="extend", metavar="KEY=VALUE",
                   help="override config keys for every run; RecBole's --KEY=VALUE works too")
    p.add_argument("--out", default=out, help="output folder (runs/, results.csv/.md/.png); reruns resume")


# ------------------------------------------------------------------------------------------- subcommands
def _add_run(sub) -> None:
    run = sub.add_parser("run", help="train and evaluate a model from RecBole YAML config(s), like run_recbole",
                         description='Train, select on validation and test one model, exactly like ``run_recbole``.')
    _add_config_args(run)
    run.add_argument("--model", "-m", default=None,
                     help="model name (RecGOAT or any RecBole model); default: the config's model, else RecGOAT")
    run.add_argument("--no-save", action="store_true", help="do not write checkpoints to saved/")
    device = run.add_argument_group("device and processes (RecBole's gpu_id / use_gpu keys and run_recbole.py's "
                                    "--nproc, --world_size, --ip, --port, --group_offset)")
    device.add_argument("--device", default=None, metavar="cpu|cuda|cuda:N",
                        help="cpu (gpu_id '' and use_gpu false), cuda (use_gpu true) or cuda:N (also gpu_id N)")
    device.add_argument("--gpu-id", "--gpu_id", dest="gpu_id", default=None, metavar="ID[,ID...]",
                        help="RecBole's gpu_id: the GPU(s) to use, e.g. 0 or 0,1 (one per process with --nproc)")
    device.add_argument("--nproc", type=_positive_int, default=1,
                        help="train in this many processes on this machine (RecBole's DDP: NCCL with CUDA, "
                             "else gloo on the CPU)")
    device.add_argument("--world-size", "--world_size", dest="world_size", type=int, default=-1,
                        help="processes over all machines (default: --nproc)")
    device.add_argument("--ip", default="localhost", help="address of the machine of rank 0 (default: localhost)")
    device.add_argument("--port", default="5678", help="its port (default: 5678, as RecBole)")
    device.add_argument("--group-offset", "--group_offset", dest="group_offset", type=int, default=0,
                        help="rank of this machine's first process (machine k of nproc each: k * nproc)")
    run.set_defaults(func="cmd_run")


def _add_recommend(sub) -> None:
    rec = sub.add_parser("recommend", help="top-k items per user from a checkpoint, as MMRec writes them (TSV)",
                         description="Rank every item for every user with a saved model (RecBole's full-sort "
                                     "scoring, the training interactions excluded) and write each user's top k, "
                                     "with the dataset's own tokens, in MMRec's layout: a tab-separated file, "
                                     "header `id top_0 ... top_{k-1}`, one line per user.")
    rec.add_argument("checkpoint", help="a RecBole checkpoint, e.g. saved/RecGOAT-<time>.pth (loaded safely)")
    rec.add_argument("--output", "-o", required=True, help="output TSV (written atomically)")
    rec.add_argument("--k", "-k", "--topk", dest="k", type=_positive_int, default=None,
                     help="items per user (default: the checkpoint's largest topk, as MMRec writes max(topk))")
    rec.add_argument("--users", default=None, metavar="FILE",
                     help="only these users: one user token per line (default: every user of the dataset)")
    rec.add_argument("--exclude", choices=["train", "train+valid", "all", "none"], default="train",
                     help="a user's interactions in these splits are never recommended to them (default: train; "
                          "train+valid is RecBole's mask when it ranks for test)")
    rec.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (default: cuda if there is one, else cpu)")
    rec.set_defaults(func="cmd_recommend")


def _add_features(sub) -> None:
    features = sub.add_parser("features", help="extract LM features (text, image, user profiles)")
    fsub = features.add_subparsers(dest="kind", metavar="KIND")
    fsub.required = True
    text = fsub.add_parser("text", help="encode item text with sentence-transformers into a feature file")
    text.add_argument("table", help="RecBole .item file or CSV/TSV with item text")
    text.add_argument("--columns", nargs="+", action="extend", required=True, help="text columns, most important first")
    text.add_argument("--id-column", default=None, help="item token column (default: the first column)")
    text.add_argument("--output", "-o", required=True,
                      help="output .npz (ids, features, mask), or .npy: MMRec's layout, a float32 array whose "
                           "row i is item id i")
    text.add_argument("--model", default=None, help="encoder name or path (default: offline all-MiniLM-L6-v2)")
    _add_encoder_args(text, batch_size=256)
    text.set_defaults(func="cmd_features_text")

    image = fsub.add_parser("image", help="encode item images with a transformers vision backbone")
    image.add_argument("source", help="image folder (token = file name) or CSV/TSV of token,path")
    image.add_argument("--model", required=True, help="vision model name or local path (CLIP, ViT, ...)")
    image.add_argument("--output", "-o", required=True,
                       help="output .npz (ids, features, mask), or .npy: MMRec's layout, a float32 array whose "
                            "row i is item id i")
    _add_encoder_args(image, batch_size=32)
    image.set_defaults(func="cmd_features_image")

    prof = fsub.add_parser("profiles", help="per-user preference profiles from the training split, embedded")
    _add_config_args(prof)
    prof.add_argument("--output", "-o", required=True, help="output .npz keyed by user token")
    prof.add_argument("--backend", choices=["template", "transformers", "http"], default="template",
                      help="template (offline, NOT an LLM), a local transformers LM, or an OpenAI-compatible URL")
    prof.add_argument("--model", default=None, help="LM name/path (transformers) or model name (http)")
    prof.add_argument("--url", default=None, help="OpenAI-compatible endpoint, e.g. http://127.0.0.1:8000/v1")
    prof.add_argument("--item-table", default=None, help="item text table (default: the dataset's .item file)")
    prof.add_argument("--columns", nargs="+", action="extend", default=None,
                      help="item columns the profiles summarise (default: every column of the item table but the id)")
    prof.add_argument("--id-column", default=None)
    prof.add_argument("--encoder", default=None, help="text encoder for the profiles (default: offline MiniLM)")
    prof.add_argument("--max-items", type=_positive_int, default=50, help="history items per prompt (the most recent)")
    _add_encoder_args(prof, batch_size=None)
    prof.set_defaults(func="cmd_features_profiles")


def _add_data(sub) -> None:
    data = sub.add_parser("data", help="dataset tools")
    dsub = data.add_subparsers(dest="action", metavar="ACTION")
    dsub.required = True
    imp = dsub.add_parser("import", help="MMRec or LightGCN layout -> RecBole atomic files + features + YAML")
    imp.add_argument("src", help="source folder")
    imp.add_argument("dst", help="output data_path (the dataset goes to DST/NAME/)")
    imp.add_argument("--format", choices=["mmrec", "lightgcn"], required=True)
    imp.add_argument("--name", default=None, help="dataset name (default: from the source)")
    imp.add_argument("--feature", nargs="*", action="extend", metavar="NAME=FILE.npy",
                     help="lightgcn: item feature files; a relative FILE is looked up in SRC first, then in the "
                          "current directory")
    imp.add_argument("--split", default=None, metavar="TRAIN,VALID,TEST|loo",
                     help="mmrec without x_label: split each user's interactions, by ratios (e.g. 0.8,0.1,0.1, "
                          "RecBole's RS rule) or leave-one-out (loo), in timestamp order if there is one, else in a "
                          "seeded random order; recorded in the YAML. Refused when the .inter has x_label")
    imp.add_argument("--cold-items", default=None, metavar="SHARE",
                     help="mmrec, with or without x_label: hold this share of the items (e.g. 0.2) out of training "
                          "entirely; the interactions with half of them go to valid, with the other half to test "
                          "(item cold-start); recorded in the YAML")
    imp.add_argument("--seed", type=int, default=None,
                     help="seed of --split's random order and of the --cold-items draw (default: 2020, RecBole's "
                          "default seed)")
    imp.add_argument("--force", action="store_true",
                     help="overwrite DST/NAME/NAME.yaml even if it was edited since the last import")
    imp.set_defaults(func="cmd_data_import")


def _add_bench(sub) -> None:
    bench = sub.add_parser("bench", help="benchmark RecGOAT against RecBole built-ins (tables, CSV, plot)",
                           description="Train RecGOAT and RecBole's built-ins on the same split with the same budget; tables, CSV and a plot.")
    _add_suite_args(bench, None, "default: RecGOAT and RecBole's built-ins (recgoat_recbole.bench.names)",
                    "train nothing: rebuild the tables from the runs already finished in --out")
    bench.add_argument("--ablations", action="store_true", help="also run the paper's ablation table")
    bench.add_argument("--gamma", type=float, nargs="*", action="extend", help="γ sensitivity sweep: modality weight values")
    bench.add_argument("--tuned", default=None, metavar="BEST.yaml",
                       help="per dataset and model settings from `recgoat tune` (those rows are labelled tuned)")
    bench.add_argument("--tag", default="", metavar="NAME",
                       help="name this command's settings (e.g. its --set): part of each run's key and label, so "
                            "variants of one model share an --out as rows of their own")
    bench.add_argument("--reuse", nargs="*", action="extend", metavar="DIR",
                       help="earlier --out folders: a finished run there with identical settings is copied, not trained")
    _add_budget(bench, epochs=300, out="bench_runs")
    bench.set_defaults(func="cmd_bench")


def _add_tune(sub) -> None:
    tune = sub.add_parser("tune", help="grid search on validation, the same budget per model (writes best.yaml)",
                          description='Grid search on the validation split, the same nine-point budget per model; writes OUT/best.yaml.')
    _add_suite_args(tune, None, "default: RecGOAT and every built-in with a grid (all but Pop)",
                    "train nothing: choose from the finished runs")
    tune.add_argument("--grid", default=None, metavar="FILE.yaml",
                      help="{Model: {key: [values]}} (every combination) or {Model: [{key: value}, ...]} (these "
                           "candidates), replacing the built-in grid of the models it names")
    tune.add_argument("--across", action="store_true",
                      help="one choice per model for all --datasets: the point whose validation NDCG@10, as a ratio to "
                           "the grid's first point on each dataset, is best on average (docs/protocol.md)")
    tune.add_argument("--extend-edges", action="store_true",
                      help="where a dataset's choice is on an edge of its grid, add the value one step past it, train "
                           "those points and choose again (up to 3 times; the rule: docs/usage.md)")
    _add_budget(tune, epochs=300, out="bench_runs/tune")
    tune.set_defaults(func="cmd_tune")


def _add_demo(sub) -> None:
    demo = sub.add_parser("demo", help="MovieLens-100k end to end: features, profiles, RecGOAT vs LightGCN",
                          description='MovieLens-100k end to end: text features + template profiles, RecGOAT and LightGCN on one split.')
    # lr 0.005 for both (RecBole's default is 0.001): a larger step, so that a 30-epoch CPU demo gets somewhere; it
    # was chosen for LightGCN on ml-100k in an earlier round whose runs were not kept, and is no claim of the docs
    _add_budget(demo, epochs=30, out="bench_runs/demo", learning_rate=0.005)
    demo.add_argument("--fresh", action="store_true", help="re-train (features stay cached)")
    demo.set_defaults(func="cmd_demo")


def _add_results(sub) -> None:
    results = sub.add_parser("results", help="rebuild the docs' result tables and figures from committed records",
                             description="Rebuild every <!-- results NAME --> block of the Markdown files, and its "
                                         "figure docs/img/results-NAME.png, from the run records in "
                                         "results/NAME/runs (recgoat_recbole.bench.docs). Nothing is trained.")
    results.add_argument("files", nargs="*", default=None, metavar="FILE.md",
                         help="default: README.md and every docs/*.md under --root")
    results.add_argument("--root", default=".", help="the repository root holding results/ and docs/ (default: .)")
    results.add_argument("--check", action="store_true",
                         help="write nothing; exit 1 and name each block that differs from what its records give")
    results.set_defaults(func="cmd_results")


# ------------------------------------------------------------------------------------------------- parser
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="recgoat",
        description="RecGOAT (LLM-enhanced multimodal recommendation) on RecBole 1.2.1.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for add in (_add_run, _add_recommend, _add_features, _add_data, _add_bench, _add_tune, _add_demo, _add_results):
        add(sub)
    for command in _subparsers(parser):
        _add_verbose(command)
    return parser


def _subparsers(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    """Every leaf subcommand parser (``run``, ``features text``, ``data import``, ...)."""
    leaves = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in dict.fromkeys(action.choices.values()):
                leaves += _subparsers(child) or [child]
    return leaves


def _positive_int(text: str) -> int:
    """An argparse type: an integer ≥ 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer ≥ 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer ≥ 1, got {value}")
    return value


#: defaults of the options that may be repeated (``action="extend"`` would add to a non-empty default)
_LIST_DEFAULTS = {"datasets": ["ml-100k"], "seeds": [2020]}
#: list options whose entries must differ (a repeated seed would train the same run twice and report ± 0)
_DISTINCT = ("datasets", "models", "seeds", "gamma")


def _check_lists(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Fill the defaults of repeatable options; refuse repeated entries. (A key given twice in ``--set`` /
    ``--key=value``: the last one wins, as a later config file does.)"""
    for name, default in _LIST_DEFAULTS.items():
        if hasattr(args, name) and getattr(args, name) is None:
            setattr(args, name, list(default))
    for name in _DISTINCT:
        values = getattr(args, name, None) or []
        repeated = sorted({str(v) for v in values if values.count(v) > 1})
        if repeated:
            parser.error(f"--{name}: {', '.join(repeated)} given more than once")


_RECBOLE_OVERRIDE = re.compile(r"^--([A-Za-z_][A-Za-z0-9_.]*)=(.*)$", re.S)


def _parse(parser: argparse.ArgumentParser, argv: list[str]) -> argparse.Namespace:
    """Parse ``argv``; RecBole's ``--key=value`` overrides that no option claims join ``--set`` (on the commands
    that have it), as in ``run_recbole``: ``recgoat run --epochs=50 --learning_rate=0.002``."""
    args, extra = parser.parse_known_args(argv)
    if extra:
        pairs = [_RECBOLE_OVERRIDE.match(token) for token in extra]
        if not hasattr(args, "set") or not all(pairs):
            parser.error("unrecognized arguments: " + " ".join(extra))
        args.set = list(args.set or []) + [f"{m.group(1)}={m.group(2)}" for m in pairs]
    _check_lists(parser, args)
    return args


def _quiet(command: str) -> None:
    """The quiet default: no deprecation noise from pandas / torch / runpy, no library progress bars, in this
    process and in the runs it starts (the environment is inherited). ``--verbose`` skips this."""
    import os
    import warnings

    rules = [("", FutureWarning, ""), ("", DeprecationWarning, ""), ("", RuntimeWarning, "runpy"),
             ("Sparse CSR tensor support", UserWarning, ""), ("torch.sparse.SparseTensor", UserWarning, "")]
    for message, category, module in rules:
        warnings.filterwarnings("ignore", message=message, category=category, module=module)
    os.environ["PYTHONWARNINGS"] = ",".join(f"ignore:{m}:{c.__name__}:{mod}" for m, c, mod in rules)
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    if command in ("run", "bench", "tune", "demo"):  # `features` keep their bar (--quiet turns it off)
        os.environ.setdefault("TQDM_DISABLE", "1")
    os.environ["RECGOAT_VERBOSE"] = "0"


def main(argv: Sequence[str] | None = None) -> int:
    import os
    import warnings

    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = _parse(parser, argv)
    args.argv = argv  # reports record the command exactly as given
    saved_env = {k: os.environ.get(k) for k in _ENV_KEYS}
    # RecBole's Config reads sys.argv for --key=value overrides: hide ours from it (they arrive as args.set).
    saved_argv, sys.argv = sys.argv, sys.argv[:1]
    try:
        with warnings.catch_warnings():
            if args.verbose:
                os.environ["RECGOAT_VERBOSE"] = "1"
            else:
                _quiet(args.command)
            return _dispatch(args)
    finally:
        sys.argv = saved_argv
        for key, value in saved_env.items():  # the quiet settings end with the command (tests call main often)
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


#: the environment variables :func:`_quiet` / ``--verbose`` set for the command and the runs it starts
_ENV_KEYS = ("PYTHONWARNINGS", "TRANSFORMERS_VERBOSITY", "HF_HUB_DISABLE_PROGRESS_BARS", "TQDM_DISABLE",
             "RECGOAT_VERBOSE")


def _dispatch(args: argparse.Namespace) -> int:
    """Run the parsed command; the errors a user can fix become one ``recgoat: error:`` line and exit status 2."""
    if args.command not in ("run", "recommend"):  # these let RecBole's init_logger set up its console and log file
        logging.basicConfig(level=logging.INFO, format="%(message)s")
    from recgoat_cli import commands  # the adapter (RecBole, torch) loads only now

    fixable = commands.fixable_errors()
    try:
        func: Callable[[argparse.Namespace], int] = getattr(commands, args.func)
        return func(args)
    except fixable as exc:
        print(f"recgoat: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # Ctrl-C: one line (what was finished is kept: each run's record, the best checkpoint)
        out = getattr(args, "out", None)
        resume = (f"; the finished runs are in {out}/runs, and the same command trains only what is missing"
                  if args.command in ("bench", "tune") and out else "")
        print(f"recgoat: interrupted{resume}", file=sys.stderr)
        return 130
    except commands.yaml.YAMLError as exc:  # a config file that is not valid YAML
        print(f"recgoat: error: invalid YAML: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2
    except OSError as exc:  # a full disk, a read-only or forbidden folder: what could not be written, and why
        import errno

        if exc.errno not in (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.ENOTDIR,
                             errno.EISDIR):
            raise
        where = f" {exc.filename}" if exc.filename else ""
        print(f"recgoat: error: cannot write{where}: {exc.strerror or exc}", file=sys.stderr)
        return 2
