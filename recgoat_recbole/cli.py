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

    if not os.path.isfile(args.table):
        raise UserError(f"table not found: {args.table}")
    try:
        path = extract_text_features(args.table, args.output, args.columns, args.id_column, args.model,
                                     args.device, args.batch_size, args.allow_download, not args.quiet)
    except KeyError as exc:
        raise UserError(str(exc.args[0])) from None
    print(path)
    return 0


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
    run.add_argument("--config", "-c", nargs="+", default=[], metavar="FILE", help="RecBole YAML file(s)")
    run.add_argument("--model", "-m", default=None,
                     help="model name (RecGOAT or any RecBole model); default: the config's model, else RecGOAT")
    run.add_argument("--dataset", "-d", default=None, help="dataset name (default: the config's)")
    run.add_argument("--set", nargs="*", metavar="KEY=VALUE", help="override config keys (YAML values)")
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
    except (UserError, FileNotFoundError, FeatureFileError) as exc:
        print(f"recgoat: error: {exc}", file=sys.stderr)
        return 2
    finally:
        sys.argv = saved_argv


if __name__ == "__main__":
    sys.exit(main())
