"""Grid search on the validation split, with the same budget for every model (``recgoat tune``).

Every point of a model's grid is one run (:mod:`recgoat_recbole.bench.execute`) per seed. The search reads
validation NDCG@10 only: RecBole also evaluates the test split at the end of each run, and that number stays in
the run's JSON, unprinted and unused. The best point per (dataset, model) goes to ``best.yaml``. From there
``recgoat bench --tuned best.yaml`` trains every seed with those settings. A finished grid run with the same
config is reused there, not trained again.

The default grids have nine points for every model with knobs: two knobs with three values each, or one knob
with nine values. Each grid contains the default of every knob it varies (RecBole's model YAML, or
recgoat_recbole/keys.py). Pop has no knob. A choice on the edge of its grid (the smallest or largest value of a
knob) is named under the tuning table (:func:`on_edges`): extend the grid before using it. ``recgoat tune
--extend-edges`` does that itself (:func:`extend_edges`): it adds the value one step past each such edge
(:func:`beyond`) to that dataset's grid, trains the new points, chooses again, up to :data:`EXTEND_ROUNDS` times.

A grid file may also list a model's candidates one by one (``RecGOAT: [{}, {backbone: SGL}, ...]``: each entry
one point, not a product). ``recgoat tune --across`` chooses one point per model for every dataset together
(:func:`choose_across`): the one whose validation score, as a ratio to the model's first point on the same
dataset, is highest on average over the datasets. That is how RecGOAT's defaults are chosen (docs/protocol.md).
"""

from __future__ import annotations

import itertools
import os
from typing import Any, Callable, Mapping, Sequence, Union

from recgoat_recbole.bench.design import RunSpec, config_files, models_for_dataset, with_aligned
from recgoat_recbole.bench.names import ALIGN_SUFFIX, DEFAULT_MODELS

__all__ = ["GRIDS", "TUNE_PREFIX", "ALIGN_KNOB", "Grid", "grid_for", "grid_points", "grid_specs", "choose",
           "choose_across", "across_table", "load_grids", "write_choice", "tuning_table", "GridRun", "on_edges",
           "EXTEND_ROUNDS", "beyond", "extend_edges"]

#: the start of a grid point's ``variant`` (its label): how a record says it is a grid point
TUNE_PREFIX = "tune: "

#: a grid: knob -> values (every combination is a point), or the list of its points (candidates)
Grid = Union[Mapping[str, Sequence[Any]], Sequence[Mapping[str, Any]]]

#: knob -> values per model: RecBole 1.2.1's config keys, 9 points each (the default of every knob included)
GRIDS: dict[str, dict[str, list[Any]]] = {
    "ItemKNN": {"k": [50, 100, 200], "shrink": [0.0, 10.0, 100.0]},
    "EASE": {"reg_weight": [25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2000.0, 4000.0, 8000.0]},
    "BPR": {"learning_rate": [0.001, 0.005, 0.01], "weight_decay": [0.0, 1e-5, 1e-4]},
    "LightGCN": {"n_layers": [1, 2, 3], "reg_weight": [1e-5, 1e-4, 1e-3]},
    "NGCF": {"message_dropout": [0.0, 0.1, 0.3], "reg_weight": [1e-5, 1e-4, 1e-3]},
    "SGL": {"ssl_tau": [0.1, 0.2, 0.5], "ssl_weight": [0.02, 0.05, 0.1]},
    "NCL": {"ssl_temp": [0.05, 0.1, 0.2], "ssl_reg": [1e-7, 1e-6, 1e-5]},
    "SimpleX": {"margin": [0.5, 0.7, 0.9], "negative_weight": [1, 10, 50]},
    # the ID branch's depth, as LightGCN's grid, and λ_c, the weight of RecGOAT's contrastive alignment.
    # Where the gate aligns no modality (TikTok), the λ_c points train alike: pass a grid (`--grid`).
    "RecGOAT": {"n_layers": [1, 2, 3], "cmcl_weight": [0.016, 0.032, 0.064]},
    # MMRec's FREEDOM grid is dropout {0.8, 0.9} x reg_weight {0, 1e-5, 1e-4, 1e-3}. Our earlier 3 x 3
    # ({0.7, 0.8, 0.9} x {0, 1e-4, 1e-3}) chose dropout 0.7 and 1e-3 on Scientific validation: both on an edge
    # (no record of those runs was kept). Extended past both edges, the defaults (0.8, 1e-4) kept:
    "FREEDOM": {"dropout": [0.5, 0.7, 0.8], "reg_weight": [1e-4, 1e-3, 1e-2]},
    # LGMRec's per-dataset settings in MMRec differ most in the hyperedge count and the global weight α
    # (Baby 4 / 0.3, Sports 4 / 0.6, Clothing 64 / 0.2)
    "LGMRec": {"hyper_num": [4, 16, 64], "alpha": [0.2, 0.3, 0.6]},
}


#: the alignment's own knob in a ``<Backbone>+Align`` grid (next to the backbone's first knob: 3 x 3 points)
ALIGN_KNOB = {"cmcl_weight": [0.016, 0.032, 0.064]}


def grid_for(model: str, grids: Mapping[str, Grid]) -> Grid:
    """The grid of ``model``: its own, or for ``<Backbone>+Align`` without one, the backbone's first knob x
    λ_c (the same number of points as every other model)."""
    if model in grids:
        grid = grids[model]
        if not isinstance(grid, Mapping):
            return [dict(point) for point in grid]
        return {k: list(v) for k, v in grid.items()}
    if model.endswith(ALIGN_SUFFIX) and model[: -len(ALIGN_SUFFIX)] in grids:
        base = grids[model[: -len(ALIGN_SUFFIX)]]
        first = next(iter(base), None)
        return {**({first: list(base[first])} if first else {}), **ALIGN_KNOB}
    return {}


def load_grids(path: str | None) -> dict[str, Grid]:
    """:data:`GRIDS`, with the models in the YAML file at ``path`` replaced: ``{Model: {knob: [values]}}`` (every
    combination) or ``{Model: [{knob: value, ...}, ...]}`` (these points, in this order)."""
    grids: dict[str, Grid] = {m: dict(g) for m, g in GRIDS.items()}
    if path is None:
        return grids
    import yaml

    with open(path, encoding="utf-8") as f:
        data = yaml.safe_load(f) or {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected {{Model: {{knob: [values]}}}}")
    for model, grid in data.items():
        if isinstance(grid, list):
            if not grid or not all(isinstance(p, dict) and all(isinstance(k, str) for k in p) for p in grid):
                raise ValueError(f"{path}: the candidates of {model} must be a non-empty list of "
                                 "{key: value} mappings")
            points = [dict(p) for p in grid]
            repeated = [p for i, p in enumerate(points) if p in points[:i]]
            if repeated:
                raise ValueError(f"{path}: {model} lists the candidate {repeated[0]} twice")
            grids[str(model)] = points
            continue
        if not isinstance(grid, dict) or not all(isinstance(v, list) and v for v in grid.values()):
            raise ValueError(f"{path}: the grid of {model} must map each knob to a non-empty list of values")
        grids[str(model)] = {str(k): list(v) for k, v in grid.items()}
    return grids


def grid_points(grid: Grid) -> list[dict[str, Any]]:
    """Every combination of the grid's values, in order (an empty grid has one point: the defaults); a list of
    candidates is its own points."""
    if not isinstance(grid, Mapping):
        return [dict(point) for point in grid]
    keys = list(grid)
    return [dict(zip(keys, values)) for values in itertools.product(*(grid[k] for k in keys))]


def _value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{k}: {_value(v)}" for k, v in value.items()) + "}"
    return "~" if value is None else str(value)


def _label(point: Mapping[str, Any]) -> str:
    return TUNE_PREFIX + (", ".join(f"{k}={_value(v)}" for k, v in point.items()) or "defaults")


#: a grid run: its spec and the grid point (the knobs it sets) that the spec's overrides contain
GridRun = tuple[RunSpec, dict[str, Any]]


def grid_specs(datasets: Sequence[str], models: Sequence[str] | None, seeds: Sequence[int], common: dict[str, Any],
               configs: Mapping[str, str], grids: Mapping[str, Grid],
               align: bool = False) -> list[GridRun]:
    """One run per dataset x model x grid point x seed; a model without a grid runs with its defaults.

    ``models=None`` (or exactly the default selection of ``recgoat tune``: the models of
    :data:`~recgoat_recbole.bench.names.DEFAULT_MODELS` that have a grid) adds FREEDOM and LGMRec on the
    datasets whose config has item features (:func:`~recgoat_recbole.bench.design.models_for_dataset`);
    ``align`` adds ``<Backbone>+Align`` after each alignable backbone, with :func:`grid_for`'s grid."""
    default = [m for m in DEFAULT_MODELS if m in grids]
    runs = []
    for dataset in datasets:
        files = config_files(configs[dataset])
        chosen = models_for_dataset(dataset, models, files, common, default=default)
        if align:
            chosen = with_aligned(dataset, chosen, files, common)
        for model in chosen:
            for point in grid_points(grid_for(model, grids)):
                for seed in seeds:
                    runs.append((RunSpec(dataset, model, seed, _label(point), files, {**common, **point}), point))
    return runs


def _scores(records: Sequence[dict], grid: Sequence[GridRun], metric: str) -> dict[tuple[str, str, str], list]:
    """(dataset, model, point label) -> [point, validation scores of its finished seeds, its runs in the grid],
    in grid order."""
    by_key = {r["key"]: r for r in records}
    scores: dict[tuple[str, str, str], list] = {}
    for spec, point in grid:
        entry = scores.setdefault((spec.dataset, spec.model, spec.variant), [point, [], 0])
        entry[2] += 1
        if spec.key in by_key:
            entry[1].append(by_key[spec.key]["valid"][metric])
    return scores


def choose(records: Sequence[dict], grid: Sequence[GridRun], metric: str = "ndcg@10") -> dict[str, dict[str, dict]]:
    """``{dataset: {model: point}}``: the grid point with the best mean *validation* ``metric`` over its seeds
    (the first in grid order on ties). Only points with every seed finished compete."""
    best: dict[tuple[str, str], tuple[float, dict]] = {}
    for (dataset, model, _), (point, values, runs) in _scores(records, grid, metric).items():
        if not values or len(values) < runs:
            continue
        score = sum(values) / len(values)
        if (dataset, model) not in best or score > best[(dataset, model)][0]:
            best[(dataset, model)] = (score, point)
    out: dict[str, dict[str, dict]] = {}
    for (dataset, model), (_, point) in best.items():
        out.setdefault(dataset, {})[model] = point
    return out


def _across(records: Sequence[dict], grid: Sequence[GridRun], metric: str
            ) -> dict[str, tuple[list[str], list[tuple[dict, dict[str, float], float | None]]]]:
    """model -> (its datasets, [(point, {dataset: mean valid score / the first point's}, mean ratio or None)])
    in grid order; the ratio is None unless every seed of the point and of the first point ran on every dataset."""
    scores = _scores(records, grid, metric)
    datasets: dict[str, list[str]] = {}
    points: dict[str, list[dict]] = {}
    for (dataset, model, _), (point, _, _) in scores.items():
        if dataset not in datasets.setdefault(model, []):
            datasets[model].append(dataset)
        if point not in points.setdefault(model, []):
            points[model].append(point)
    out = {}
    for model, names in datasets.items():
        def mean(dataset: str, point: dict) -> float | None:
            entry = scores.get((dataset, model, _label(point)))
            if entry is None or not entry[1] or len(entry[1]) < entry[2]:
                return None
            return sum(entry[1]) / len(entry[1])
        reference = points[model][0]
        rows = []
        for point in points[model]:
            ratios = {}
            for dataset in names:
                value, base = mean(dataset, point), mean(dataset, reference)
                if value is not None and base:
                    ratios[dataset] = value / base
            rows.append((point, ratios, sum(ratios.values()) / len(names) if len(ratios) == len(names) else None))
        out[model] = (names, rows)
    return out


def choose_across(records: Sequence[dict], grid: Sequence[GridRun], metric: str = "ndcg@10"
                  ) -> dict[str, dict[str, dict]]:
    """``{dataset: {model: point}}`` with *one* point per model for all its datasets: the point with the highest
    mean, over the datasets, of (its mean validation ``metric`` over seeds) / (the model's first point's, on
    the same dataset), the first in grid order on ties. Only points with every seed finished on every dataset
    compete (and only when the first point's did too)."""
    out: dict[str, dict[str, dict]] = {}
    for model, (names, rows) in _across(records, grid, metric).items():
        ranked = [(score, i) for i, (_, _, score) in enumerate(rows) if score is not None]
        if not ranked:
            continue
        best = rows[max(ranked, key=lambda t: (t[0], -t[1]))[1]][0]
        for dataset in names:
            out.setdefault(dataset, {})[model] = dict(best)
    return out


def across_table(records: Sequence[dict], grid: Sequence[GridRun], choice: Mapping[str, Mapping[str, dict]],
                 metric: str = "ndcg@10") -> str:
    """Markdown: per model and candidate, its validation ``metric`` on each dataset as a ratio to the model's
    first candidate, and their mean (the rule of :func:`choose_across`); the chosen candidate in bold."""
    lines = []
    for model, (names, rows) in _across(records, grid, metric).items():
        lines += [f"| model | setting | {' | '.join(f'{d} (valid, ×first)' for d in names)} | mean |",
                  "| --- | --- | " + "--- | " * len(names) + "--- |"]
        chosen = next(iter(choice.values()), {}).get(model) if choice else None
        for point, ratios, score in rows:
            cell = "–" if score is None else f"{score:.4f}"
            if point == chosen:
                cell = f"**{cell}**"
            values = " | ".join(f"{ratios[d]:.4f}" if d in ratios else "–" for d in names)
            lines.append(f"| {model} | {_label(point).removeprefix(TUNE_PREFIX)} | {values} | {cell} |")
        lines.append("")
    return "\n".join(lines).rstrip("\n")


def write_choice(choice: Mapping[str, Mapping[str, dict]], path: str, header: str) -> None:
    """Merge ``choice`` into the YAML file at ``path``, so that separate ``recgoat tune`` calls add up; the
    file's comment lines name every call (``header``) that contributed.

    Two calls at once (two ``recgoat tune`` with one ``--out``) both end in the file: the read-merge-write holds
    an exclusive lock (``fcntl.flock`` on the hidden ``.<name>.lock`` next to it, kept there; held only for the
    merge, released when the process ends), and the file is written to a unique temporary file in the same
    folder and renamed into place, so a reader never sees a torn file."""
    import yaml

    from recgoat_core.feature_files import atomic_write

    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    with _locked(os.path.join(folder, f".{os.path.basename(path)}.lock")):
        current: dict = {}
        comments: list[str] = []
        if os.path.isfile(path):
            with open(path, encoding="utf-8") as f:
                text = f.read()
            current = yaml.safe_load(text) or {}
            comments = [line for line in text.splitlines() if line.startswith("# ")]
        for line in header.splitlines():  # every call that contributed, oldest first
            if f"# {line}" not in comments:
                comments.append(f"# {line}")
        for dataset, models in choice.items():
            current.setdefault(dataset, {}).update({m: dict(p) for m, p in models.items()})
        text = "".join(f"{line}\n" for line in comments) + yaml.safe_dump(current, sort_keys=True)
        atomic_write(path, lambda f: f.write(text.encode("utf-8")), suffix=".tmp")  # the umask's mode, as open()


class _locked:
    """``with _locked(path):`` holds ``fcntl.flock`` on ``path`` (created if needed; a no-op without fcntl)."""

    def __init__(self, path: str) -> None:
        self.path, self.fd = path, None

    def __enter__(self) -> "_locked":
        try:
            import fcntl
        except ImportError:  # pragma: no cover  (Windows)
            return self
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o600)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX)
        except OSError:  # a file system without locks: unlocked, as before
            pass
        return self

    def __exit__(self, *exc) -> None:
        if self.fd is not None:
            os.close(self.fd)  # (closing releases the lock)
            self.fd = None


def on_edges(choice: Mapping[str, Mapping[str, dict]], grid: Sequence[GridRun]) -> dict[tuple[str, str], list[str]]:
    """``{(dataset, model): [knob, ...]}``: the knobs whose chosen value is the smallest or largest of the grid's
    values for it (grids of three values or more, numeric values): the search may have stopped short, and the
    grid must be extended past that edge before the choice is used."""
    values: dict[tuple[str, str], dict[str, set]] = {}
    for spec, point in grid:
        for knob, value in point.items():
            values.setdefault((spec.dataset, spec.model), {}).setdefault(knob, set()).add(value)
    out: dict[tuple[str, str], list[str]] = {}
    for dataset, models in choice.items():
        for model, point in models.items():
            for knob, value in point.items():
                seen = values.get((dataset, model), {}).get(knob, set())
                numeric = [v for v in seen if isinstance(v, (int, float)) and not isinstance(v, bool)]
                if len(numeric) >= 3 and len(numeric) == len(seen) and value in (min(numeric), max(numeric)):
                    out.setdefault((dataset, model), []).append(knob)
    return out


#: how many times ``recgoat tune --extend-edges`` extends a grid past the edge its choice is on
EXTEND_ROUNDS = 3


def beyond(values: Sequence[Any], edge: Any, rule: Any = None) -> Any | None:
    """The value one step past ``edge``, the smallest or largest of a knob's numeric grid ``values``, by the rule
    that ``--extend-edges`` follows (written before any of its runs): evenly spaced integers go on by their step;
    other values, where the edge and its neighbour are positive, by their ratio (``edge² / neighbour``: 8000 after
    4000, 8000; 0.05 before 0.1, 0.2; an integer result rounded), else by their difference. ``None`` where no such
    value is there to try: the edge is not an end of ``values``, the next value would be ≤ 0 from positive values
    (< 0 from non-negative ones), or the knob's ``rule`` (:class:`~recgoat_recbole.config_check.Rule`, where this
    package defines it) refuses it; a knob without one (RecBole's) does not reach 1 from values in [0, 1), where
    a probability stops (a temperature there stops too: extend it by hand with ``--grid``)."""
    v = sorted(x for x in set(values) if isinstance(x, (int, float)) and not isinstance(x, bool))
    if len(v) < 2 or len(v) != len(set(values)) or edge not in (v[0], v[-1]):
        return None
    neighbour = v[-2] if edge == v[-1] else v[1]
    ints = all(isinstance(x, int) for x in v)
    evenly = ints and len({b - a for a, b in zip(v, v[1:])}) == 1
    if not evenly and edge > 0 and neighbour > 0:
        new: Any = edge * edge / neighbour
    else:
        new = 2 * edge - neighbour
    new = int(round(new)) if ints else float(f"{new:.6g}")
    if new in v or (v[0] > 0 and new <= 0) or (v[0] >= 0 and new < 0):
        return None
    if rule is None:  # a RecBole knob: what a probability allows (a dropout of 1 or more would fail the run)
        return None if v[0] >= 0 and v[-1] < 1 <= new else new
    return new if rule.ok(new) else None


def _knob_rule(model: str, knob: str) -> Any:
    """The rule of ``knob`` where this package defines ``model``'s keys (RecGOAT, the peers, the plugin)."""
    from recgoat_recbole.keys import package_models, rules

    return next((rules(name)[knob] for name in package_models(model) if knob in rules(name)), None)


def extend_edges(datasets: Sequence[str], grids: Mapping[str, Grid],
                 grid_of: Callable[[Mapping[str, Mapping[str, Grid]]], list[GridRun]],
                 records_for: Callable[[list[GridRun]], list[dict]],
                 rounds: int = EXTEND_ROUNDS) -> tuple[list[GridRun], list[dict]]:
    """The grid and its records after extending each dataset's grid past the edges its choice is on.

    ``grid_of({dataset: grids})`` makes the grid runs of every dataset from that dataset's grids;
    ``records_for(grid)`` trains what is missing (or, for the docs, reads what is there) and returns the records.
    Each round: :func:`choose`, then for every (dataset, model) whose chosen value of a knob is on an edge of
    its grid (:func:`on_edges`), that dataset's grid of the model gets :func:`beyond`'s value; the new points
    run, and the choice is made again over the whole grid. It stops when no edge moved, after ``rounds`` rounds
    (0: the grid as given), or where :func:`beyond` has no value (then the table still names the edge). A list of
    candidates is not extended. Deterministic given the records, so the docs rebuild the same grid."""
    per = {d: dict(grids) for d in datasets}
    grid = grid_of(per)
    records = records_for(grid)
    for _ in range(rounds):
        choice = choose(records, grid)
        grown = False
        for (dataset, model), knobs in on_edges(choice, grid).items():
            current = grid_for(model, per[dataset])
            if not isinstance(current, Mapping):
                continue
            for knob in knobs:
                value = beyond(current[knob], choice[dataset][model][knob], _knob_rule(model, knob))
                if value is not None:
                    current[knob] = sorted([*current[knob], value])
                    grown = True
            per[dataset][model] = current
        if not grown:
            break
        grid = grid_of(per)
        records = records_for(grid)
    return grid, records


def tuning_table(records: Sequence[dict], grid: Sequence[GridRun], choice: Mapping[str, Mapping[str, dict]],
                 metric: str = "ndcg@10") -> str:
    """Markdown: every grid point's mean *validation* ``metric`` over its finished seeds (± their sample standard
    deviation), the chosen one in bold;
    under it, each chosen point on an edge of its grid (:func:`on_edges`)."""
    import statistics

    lines = [f"| dataset | model | setting | valid {metric} | ± std | seeds |", "| --- | --- | --- | --- | --- | --- |"]
    for (dataset, model, label), (point, values, _) in _scores(records, grid, metric).items():
        if not values:
            continue
        cell = f"{sum(values) / len(values):.4f}"
        if choice.get(dataset, {}).get(model) == point:
            cell = f"**{cell}**"
        spread = f"{statistics.stdev(values):.4f}" if len(values) > 1 else "–"
        lines.append(f"| {dataset} | {model} | {label.removeprefix(TUNE_PREFIX)} | {cell} | {spread} | {len(values)} |")
    edges = on_edges(choice, grid)
    if edges:
        lines.append("")
        lines += [f"On the edge: {model} on {dataset} chose the smallest or largest value of {', '.join(knobs)}: "
                  "extend the grid past it (`--grid FILE`) before using this choice." for (dataset, model), knobs
                  in edges.items()]
    return "\n".join(lines)

