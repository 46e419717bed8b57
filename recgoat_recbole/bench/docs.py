"""Results as code: the tables and figures of the docs, rebuilt from committed run records (``recgoat results``).

A results folder is what ``recgoat bench`` / ``recgoat tune`` write to ``--out``, committed under
``results/<name>/``: ``runs/*.json`` (one record per run: settings, commit, seed, epochs, validation curve, test
metrics and every test user's NDCG@10 / Recall@20) and ``commands.txt`` (the commands that trained them, one a
line, as typed). A *speed folder* (``benchmarks/bench_speed.py --out``: records of kind ``speed-*``) is one too;
its block is its tables (:func:`recgoat_recbole.bench.speed.render`), without a figure. A *tune folder*
(``recgoat tune --out``: every record a grid point, ``variant`` "tune: ...") is one too: its block is the grid's
validation table (and with ``--across``, the rule's ratios), rebuilt from its records and the grid that its
committed command names; the test metrics the records hold are not shown. A Markdown file names a folder with a
generated block::

    <!-- results NAME -->
    (everything here is generated: the commands, the table, the notes and the figure link)
    <!-- /results -->

:func:`regenerate` rebuilds every block from ``results/NAME`` alone (nothing is trained, nothing else read),
writes the figure ``docs/img/results-NAME.png``, and keeps the prose around the blocks as it is. With
``check=True`` it writes nothing and returns the blocks that differ from what the records give (the test that
keeps docs and records in step). Rows are ordered by test NDCG@10, best first.

The records' signatures are not checked here: a committed record's provenance is the repository's history, and
anyone regenerating the docs holds a different signing key (:mod:`recgoat_recbole.signing`).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

__all__ = ["BLOCK", "Block", "find_blocks", "render", "regenerate", "load_folder", "image_path", "ResultsError",
           "tune_grid"]

#: a generated block: ``<!-- results NAME -->`` ... ``<!-- /results -->``
BLOCK = re.compile(r"<!-- results (?P<name>[A-Za-z0-9][A-Za-z0-9._-]*) -->\n(?P<body>.*?)<!-- /results -->",
                   re.DOTALL)


class ResultsError(ValueError):
    """A block that names no results folder, or a folder whose records cannot make a table."""


@dataclass(frozen=True)
class Block:
    path: str
    name: str
    body: str


def find_blocks(path: str) -> list[Block]:
    with open(path, encoding="utf-8") as f:
        text = f.read()
    return [Block(path, m.group("name"), m.group("body")) for m in BLOCK.finditer(text)]


def load_folder(folder: str) -> tuple[list[dict], list[str]]:
    """The records of ``folder/runs`` (sorted by file name) and the commands of ``folder/commands.txt``."""
    from recgoat_recbole.bench.execute import load_record

    runs = os.path.join(folder, "runs")
    if not os.path.isdir(runs):
        raise ResultsError(f"{folder}: no runs/ folder (a results folder is a committed `recgoat bench --out`)")
    records = []
    for name in sorted(os.listdir(runs)):
        if not name.endswith(".json"):
            continue
        record, problem = load_record(os.path.join(runs, name), check_signature=False)
        if record is None:
            raise ResultsError(f"{os.path.join(runs, name)}: {problem}")
        record.pop("unverified", None)
        records.append(record)
    if not records:
        raise ResultsError(f"{folder}: no records in runs/")
    return records, _commands(folder)


def _commands(folder: str) -> list[str]:
    """The lines of ``folder/commands.txt`` (none when there is no such file)."""
    commands_file = os.path.join(folder, "commands.txt")
    commands = []
    if os.path.isfile(commands_file):
        with open(commands_file, encoding="utf-8") as f:
            commands = [line.rstrip("\n") for line in f if line.strip()]
    return commands


def _speed_records(folder: str) -> list[dict]:
    """The records of a speed folder (``benchmarks/bench_speed.py --out``), else ``[]``: a folder is one when
    its first record says ``kind: speed-*`` (:mod:`recgoat_recbole.bench.speed`)."""
    import json

    from recgoat_recbole.bench.speed import is_speed_record, load_folder as load_speed

    runs = os.path.join(folder, "runs")
    names = sorted(n for n in os.listdir(runs) if n.endswith(".json")) if os.path.isdir(runs) else []
    if not names:
        return []
    try:
        with open(os.path.join(runs, names[0]), encoding="utf-8") as f:
            first = json.load(f)
    except (OSError, ValueError):
        return []
    if not is_speed_record(first):
        return []
    problems: list[str] = []
    records = load_speed(folder, check_signature=False, log=problems.append)
    if problems:
        raise ResultsError(problems[0].removeprefix("warning: "))
    return records


def _is_tune(records: list[dict]) -> bool:
    """Whether ``records`` are the grid runs of ``recgoat tune`` (every variant a grid point's label)."""
    from recgoat_recbole.bench.tuning import TUNE_PREFIX

    return bool(records) and all(str(r.get("variant", "")).startswith(TUNE_PREFIX) for r in records)


def _options(argv: list[str]) -> dict[str, list[str]]:
    """``--name v1 v2 --flag --other=v`` -> ``{"name": ["v1", "v2"], "flag": [], "other": ["v"]}`` (a committed
    command's options, read without the CLI's parser, which this package does not import)."""
    options: dict[str, list[str]] = {}
    current: list[str] | None = None
    for token in argv:
        if token.startswith("--"):
            name, eq, value = token[2:].partition("=")
            current = options.setdefault(name, [])
            if eq:
                current.append(value)
        elif current is not None:
            current.append(token)
    return options


def tune_grid(root: str, records: list[dict], commands: list[str]) -> tuple[list, bool]:
    """The grid of a tune folder, as its committed ``recgoat tune`` commands made it (their ``--grid`` file read
    from ``root``, their datasets, models and seeds; without ``--models``, the records' models; with
    ``--extend-edges``, extended as the command extended it from the same records), and whether one of them
    chose ``--across``: ``([(RunSpec, point), ...], across)`` in the grid's order."""
    import shlex

    from recgoat_recbole.bench.design import RunSpec
    from recgoat_recbole.bench.tuning import EXTEND_ROUNDS, _label, extend_edges, grid_for, grid_points, load_grids

    tunes = [argv[2:] for argv in map(shlex.split, commands) if argv[:2] == ["recgoat", "tune"]]
    if not tunes:
        raise ResultsError("a tune folder's commands.txt names no `recgoat tune` command: its grid is unknown")
    models = list(dict.fromkeys(r["model"] for r in records))
    grid, keys, across = [], set(), False
    for argv in tunes:
        options = _options(argv)
        across = across or "across" in options
        grid_file = (options.get("grid") or [None])[-1]
        path = os.path.join(root, grid_file) if grid_file else None
        if path and not os.path.isfile(path):
            raise ResultsError(f"the tune command's grid {grid_file} is not in the repository")
        if not options.get("datasets") or not options.get("seeds"):
            raise ResultsError(f"the tune command names no --datasets or no --seeds: {' '.join(argv)}")
        chosen_models, seeds = options.get("models") or models, list(map(int, options["seeds"]))

        def grid_of(per_dataset) -> list:
            return [(RunSpec(dataset, model, seed, _label(point)), point) for dataset in options["datasets"]
                    for model in chosen_models for point in grid_points(grid_for(model, per_dataset[dataset]))
                    for seed in seeds]

        rounds = EXTEND_ROUNDS if "extend-edges" in options else 0
        for spec, point in extend_edges(options["datasets"], load_grids(path), grid_of, lambda _: records, rounds)[0]:
            if spec.key not in keys:
                keys.add(spec.key)
                grid.append((spec, point))
    return grid, across


def _render_tune(root: str, records: list[dict], commands: list[str]) -> str:
    """The tables of a tune folder, as ``recgoat tune`` prints them, from its records and its grid
    (:func:`tune_grid`): every point's mean validation NDCG@10 ± std over its seeds, the choice in bold, and with
    ``--across`` the rule's ratios. Only validation is read."""
    from recgoat_recbole.bench.tuning import across_table, choose, choose_across, tuning_table

    grid, across = tune_grid(root, records, commands)
    choice = choose_across(records, grid) if across else choose(records, grid)
    parts = [tuning_table(records, grid, choice)]
    if across:
        parts.append("Across the datasets (validation NDCG@10 as a ratio to each model's first point; the rule of "
                     "`--across`):\n\n" + across_table(records, grid, choice))
    return "\n\n".join(parts)


def image_path(root: str, name: str) -> str:
    return os.path.join(root, "docs", "img", f"results-{name}.png")


def _rows(records: list[dict]) -> list[dict]:
    from recgoat_recbole.bench.names import METRICS
    from recgoat_recbole.bench.report import summarise

    rows = summarise(records, METRICS)
    order = {d: i for i, d in enumerate(dict.fromkeys(r["dataset"] for r in rows))}
    return sorted(rows, key=lambda r: (order[r["dataset"]], -r["ndcg@10"] if r["ndcg@10"] == r["ndcg@10"] else 0))


def render(root: str, name: str, doc_path: str) -> str:
    """The body of block ``name`` for the Markdown file at ``doc_path``: the commands, the table with its
    caption and notes (:func:`recgoat_recbole.bench.report.markdown_table`), the figure."""
    from recgoat_recbole.bench.names import METRICS
    from recgoat_recbole.bench.report import markdown_table

    folder = os.path.join(root, "results", name)
    runs_link = os.path.relpath(os.path.join(folder, 'runs'), os.path.dirname(os.path.abspath(doc_path)))
    speed = _speed_records(folder)
    if speed:  # a speed folder: its tables, no figure
        from recgoat_recbole.bench.speed import render as render_speed

        return (f"Records: [`results/{name}/runs/`]({runs_link}) ({len(speed)} measurements); rebuilt by "
                f"`recgoat results`.\n\n" + render_speed(speed, _commands(folder), signatures=False))
    records, commands = load_folder(folder)
    if _is_tune(records):  # a tune folder: validation tables, no test number, no figure
        parts = [f"Records: [`results/{name}/runs/`]({runs_link}) ({len(records)} runs; validation only: the test "
                 f"metrics the records hold are not shown); rebuilt by `recgoat results`."]
        if commands:
            parts.append("```bash\n" + "\n".join(commands) + "\n```")
        parts.append(_render_tune(root, records, commands))
        return "\n\n".join(parts) + "\n"
    rows = _rows(records)
    image = os.path.relpath(image_path(root, name), os.path.dirname(os.path.abspath(doc_path)))
    parts = [f"Records: [`results/{name}/runs/`]({runs_link}) "
             f"({len(records)} runs); rebuilt by `recgoat results`."]
    if commands:
        parts.append("```bash\n" + "\n".join(commands) + "\n```")
    parts.append(markdown_table(rows, METRICS, signatures=False))
    parts.append(f"![results/{name}]({image.replace(os.sep, '/')})")
    return "\n\n".join(parts) + "\n"


def regenerate(paths: list[str], root: str, check: bool = False) -> list[str]:
    """Rebuild every generated block of the Markdown files ``paths`` from ``root/results/NAME``; returns
    ``"FILE: NAME"`` for each block that differed (with ``check``: that differs, and nothing is written; a
    missing figure counts). Raises :class:`ResultsError` for a block whose folder is missing or broken."""
    from recgoat_recbole.bench.names import METRICS
    from recgoat_recbole.bench.report import plot

    changed: list[str] = []
    for path in paths:
        with open(path, encoding="utf-8") as f:
            text = f.read()
        bodies: dict[str, str] = {}
        for block in find_blocks(path):
            if block.name not in bodies:
                bodies[block.name] = render(root, block.name, path)
            fresh = bodies[block.name]
            png = image_path(root, block.name)
            folder = os.path.join(root, "results", block.name)
            # (a speed folder's and a tune folder's blocks have tables only); the records read once, for the plot too
            records = None if _speed_records(folder) else load_folder(folder)[0]
            figure = records is not None and not _is_tune(records)
            if fresh != block.body or (figure and not os.path.isfile(png)):
                changed.append(f"{path}: {block.name}")
            if not check and figure:
                os.makedirs(os.path.dirname(png), exist_ok=True)
                plot(_rows(records), METRICS, png)
        if not check and bodies:
            new = BLOCK.sub(lambda m: f"<!-- results {m.group('name')} -->\n{bodies[m.group('name')]}"
                                      "<!-- /results -->", text)
            if new != text:
                from recgoat_core.feature_files import atomic_write

                atomic_write(path, lambda f: f.write(new.encode("utf-8")), suffix=".tmp")
    return changed
