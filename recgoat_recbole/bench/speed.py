"""The speed benchmark's records and tables (``benchmarks/bench_speed.py``): results as code, as for ``recgoat
bench`` (:mod:`~recgoat_recbole.bench.execute`, :mod:`~recgoat_recbole.bench.docs`).

Every measurement is one JSON record in ``OUT/runs/`` (the commands that made them: ``OUT/commands.txt``), and
every table is rebuilt from those records alone (:func:`render`; ``bench_speed.py --report-only``, and
``recgoat results`` for a committed folder named by a ``<!-- results NAME -->`` block of the docs). Two kinds:

- ``speed-run``: one model (the baseline: RecBole's LightGCN, or another RecBole model with ``--baseline``; or a
  RecGOAT variant) on one dataset, in its own fresh process: the
  dataset's shape, the settings (d, layers, batch, the timed epochs and evaluations, the device asked for, the
  overrides and YAML files with their sha256), the device, cores and torch threads, the torch / RecBole /
  numpy / Python versions, the code (``code``: ``after`` = this checkout, ``before`` = ``--before``; its
  ``git_commit``), every timed epoch (``epoch_s``, after one warm-up epoch: ``warmup_s``), every full-sort pass
  over the validation split (``eval_s``), the model build (``build_s``), the peak memory (``peak_mib``: the
  process's peak RSS on the CPU, ``torch.cuda.max_memory_allocated`` from the model build on on a GPU), the
  parameters, each kNN graph built while the model was built (``knn``: rows, width, k, seconds, whether it was
  the alignment gate's) and the gate (``gate``: seconds, including its kNN graph, and each modality's weight);
- ``speed-import``: one ``recgoat data import --format mmrec`` of a synthetic dataset
  (:mod:`~recgoat_recbole.bench.synthetic`) in its own process: seconds, peak RSS, the counts it imported.

Records are signed and loaded as ``recgoat bench``'s are (:mod:`~recgoat_recbole.bench.records`, with this
module's field check): a resumed ``--out`` reuses a record only when its signature verifies and its
settings are the ones asked for; ``--report-only`` also tables unsigned records, marked ``†``.

A table's numbers: per (dataset, code, model) the best of its rounds (noise only adds time): the median of its
timed epochs, the median of its evaluations, its peak, its kNN and gate seconds, each the minimum over rounds.
Ratios are to each baseline of the same table (same device, d, layers, batch): a row per baseline and RecGOAT
variant. At the paper's shapes (the synthetic Baby, Sports and Electronics at full size) each ratio to LightGCN
is marked against the goals of issue 28 (:data:`GOALS`): ✓ within, ✗ beyond.
"""

from __future__ import annotations

import numbers
import os
import statistics
from typing import Any, Iterable, Sequence

__all__ = ["RUN", "IMPORT", "GOALS", "malformed", "load", "save", "load_folder", "render", "is_speed_record",
           "settings_problem"]

RUN, IMPORT = "speed-run", "speed-import"
#: issue 28's goals, at the paper's shapes with the alignment on: ratios to RecBole's LightGCN at equal d,
#: layers and batch (the epoch's with GAT views: the paper's configuration), and the seconds of an import with
#: its kNN graphs and gate for the Electronics shape on 2 cores
GOALS = {"epoch": 1.2, "epoch_gat": 1.5, "eval": 1.1, "peak": 1.3, "prepare_s": 600.0}
#: the shape whose preparation (import, kNN graphs, gate) the ``prepare_s`` goal is about
PREPARE_GOAL_SHAPE = "synthetic-electronics"


def _has_shape(shape: dict, name: str) -> bool:
    """Whether ``shape`` has the counts of ``SHAPES[name]`` (:mod:`~recgoat_recbole.bench.synthetic`)."""
    from recgoat_recbole.bench.synthetic import SHAPES

    s = SHAPES[name]
    return (shape.get("users"), shape.get("items"), shape.get("interactions")) == (s.users, s.items, s.interactions)

_REAL = numbers.Real
_COMMON = {"kind": str, "key": str, "dataset": str, "code": str, "round": int, "settings": dict, "shape": dict,
           "peak_mib": _REAL, "device": str}
_FIELDS = {
    RUN: {**_COMMON, "job": str, "model": str, "epoch_s": list, "eval_s": list, "build_s": _REAL, "params": int,
          "knn": list},
    IMPORT: {**_COMMON, "import_s": _REAL},
}


def is_speed_record(record: Any) -> bool:
    return isinstance(record, dict) and record.get("kind") in _FIELDS


def malformed(record: Any) -> str:
    """What makes ``record`` no speed record ('' when it is one): a field missing or of the wrong type."""
    if not is_speed_record(record):
        return "not a speed record (no kind speed-run / speed-import)"
    for field, kind in _FIELDS[record["kind"]].items():
        value = record.get(field)
        if not isinstance(value, kind) or isinstance(value, bool):
            return f"not a speed record (field {field!r} missing or not a {getattr(kind, '__name__', kind)})"
    if record["kind"] == RUN:
        for field in ("epoch_s", "eval_s"):
            values = record[field]
            if not values or not all(isinstance(v, _REAL) and not isinstance(v, bool) for v in values):
                return f"not a speed record ({field} is not a non-empty list of seconds)"
        if not all(isinstance(k, dict) and isinstance(k.get("seconds"), _REAL) for k in record["knn"]):
            return "not a speed record (knn holds something other than timed graphs)"
        gate = record.get("gate")
        if gate is not None and not (isinstance(gate, dict) and isinstance(gate.get("seconds"), _REAL)):
            return "not a speed record (gate is not a timed gate)"
    for field in ("users", "items", "interactions"):
        if not isinstance(record["shape"].get(field), int):
            return f"not a speed record (shape.{field} is not a count)"
    return ""


def load(path: str, check_signature: bool = True) -> tuple[dict | None, str]:
    """:func:`recgoat_recbole.bench.records.read_record` with this module's field check."""
    from recgoat_recbole.bench.records import read_record

    return read_record(path, malformed, check_signature)


def save(record: dict, path: str) -> dict:
    """Write ``record`` signed and atomically (as ``recgoat bench`` does); returns it as saved."""
    from recgoat_recbole.bench.records import save_record

    return save_record(record, path)


def settings_problem(record: dict, settings: dict) -> str:
    """Why ``record`` was measured with other settings than ``settings`` ('' when the same)."""
    old = record.get("settings") or {}
    changed = sorted(k for k in {*old, *settings} if old.get(k) != settings.get(k))
    return ", ".join(f"{k} {old.get(k)!r} -> {settings.get(k)!r}" for k in changed)


def load_folder(folder: str, check_signature: bool = False, log=None) -> list[dict]:
    """The speed records of ``folder/runs`` (sorted by file name). With ``check_signature`` a record whose
    signature is missing or does not verify gets ``unverified`` (the reason; marked ``†`` in the tables).
    Files that are no speed record are left out, each with one ``log`` line."""
    runs = os.path.join(folder, "runs")
    records = []
    for name in sorted(os.listdir(runs)) if os.path.isdir(runs) else []:
        if not name.endswith(".json"):
            continue
        record, problem = load(os.path.join(runs, name), check_signature=check_signature)
        if record is None:
            if log is not None:
                log(f"warning: {os.path.join(runs, name)}: {problem}; left out of the tables")
            continue
        if problem:
            record["unverified"] = problem
        records.append(record)
    return records


# ------------------------------------------------------------------------------------------------ tables
def _table_key(record: dict) -> tuple:
    s = record["settings"]
    return (record["device"], s.get("embedding_size"), s.get("n_layers"), s.get("train_batch_size"),
            s.get("epochs"), s.get("evals"))


def _best(records: Sequence[dict]) -> dict:
    """One (dataset, code, model) over its rounds: each measure's minimum (noise only adds time)."""
    views = [[k for k in r["knn"] if not k.get("in_gate")] for r in records]
    knn = [sum(k["seconds"] for k in v) for v in views if v]
    last = records[-1]
    # (a gate that is off returns at once: no gate to time)
    gates = [r["gate"]["seconds"] for r in records if r.get("gate") and (r.get("recgoat") or {}).get("align_gate")]
    return {
        "epoch_s": min(statistics.median(r["epoch_s"]) for r in records),
        "eval_s": min(statistics.median(r["eval_s"]) for r in records),
        "peak_mib": min(r["peak_mib"] for r in records),
        "build_s": min(r["build_s"] for r in records),
        "knn_s": min(knn) if knn else None,
        "knn": [k for k in last["knn"] if not k.get("in_gate")],
        "gate_s": min(gates) if gates else None,
        "gate": last.get("gate"),
        "params": last["params"],
        "recgoat": last.get("recgoat") or {},
        "rounds": len(records),
        "unverified": sum(1 for r in records if r.get("unverified")),
        "shape": last["shape"],
    }


def _model(runs: Sequence[dict]) -> str:
    """The model a group of measurements ran (RecGOAT for its variants, else the baseline's RecBole model)."""
    return str(runs[-1].get("model") or "")


def within(value: float, goal: float) -> bool:
    """Whether ``value`` meets ``goal`` (``≤``), compared at three decimals: a difference in the float rounding
    of a ratio is no miss."""
    return round(value, 3) <= goal


def _ratio(value: float, base: float, goal: float | None) -> str:
    """``1.15x``, with ``✓`` / ``✗`` against ``goal``; shown to three decimals where two would hide a miss."""
    ratio = value / base if base else float("nan")
    if goal is None:
        return f"{ratio:.2f}x"
    ok = within(ratio, goal)
    shown = f"{ratio:.2f}" if (round(ratio, 2) <= goal) == ok else f"{ratio:.3f}"
    return f"{shown}x {'✓' if ok else '✗'}"


def _alignment(best: dict) -> str:
    """The alignment parts a RecGOAT run had on, and what its gate decided."""
    c = best["recgoat"]
    parts = [name for name, on in (("GAT views", c.get("use_gat")), ("OAT", c.get("use_oat")),
                                   ("CMCL", (c.get("cmcl_weight") or 0) > 0),
                                   ("W", (c.get("wasserstein_weight") or 0) > 0)) if on]
    text = ", ".join(parts) or "no alignment term"
    # the speed options (docs/speed.md), where a run had one on (older records do not hold them: off)
    fast = [shown for shown, on in ((f"plan every {c.get('oat_plan_every')} steps", (c.get("oat_plan_every") or 1) > 1),
                                    (f"≤ {c.get('align_max_items')} items", c.get("align_max_items") is not None),
                                    ("HNSW kNN", c.get("knn_search") == "hnsw")) if on]
    text += "".join(f", {f}" for f in fast)
    gate = best.get("gate")
    if not c.get("align_gate"):
        return text + "; no gate"
    if gate is None:
        return text + "; gate not run"
    closed = [m for m, w in sorted((gate.get("weights") or {}).items()) if not w]
    return text + ("; gate closed: " + ", ".join(closed) if closed else "; gate open")


def _n(value: float | None, digits: int = 2) -> str:
    return "–" if value is None else f"{value:,.{digits}f}"


def _at_paper_shape(shape: dict) -> bool:
    """Whether ``shape`` has the counts of one of the paper's datasets (where the goals apply)."""
    from recgoat_recbole.bench.synthetic import SHAPES

    return any(_has_shape(shape, name) for name, s in SHAPES.items() if s.paper)


def _shapes(groups: dict[tuple[str, str, str], list[dict]], code: str | None = None) -> dict[str, dict]:
    """Each dataset's shape (its feature widths from a record that has them: LightGCN reads no features),
    ordered by interactions, items, users."""
    shapes: dict[str, dict] = {}
    for (dataset, c, _), runs in sorted(groups.items()):
        if code is not None and c != code:
            continue
        for r in runs:
            shape = shapes.setdefault(dataset, dict(r["shape"]))
            if not shape.get("dims") and r["shape"].get("dims"):
                shape["dims"] = r["shape"]["dims"]
    return dict(sorted(shapes.items(), key=_shape_sort))


def _shape_sort(item: tuple[str, dict]) -> tuple:
    shape = item[1]
    return (shape["interactions"], shape["items"], shape["users"], item[0])


def _width(shape: dict) -> str:
    dims = shape.get("dims") or {}
    return ", ".join(f"{m} {d}" for m, d in sorted(dims.items())) if dims else "–"


def _group(records: Iterable[dict]) -> dict[tuple, dict[tuple[str, str, str], list[dict]]]:
    tables: dict[tuple, dict[tuple[str, str, str], list[dict]]] = {}
    for r in records:
        if r["kind"] == RUN:
            tables.setdefault(_table_key(r), {}).setdefault((r["dataset"], r["code"], r["job"]), []).append(r)
    for groups in tables.values():
        for runs in groups.values():
            runs.sort(key=lambda r: r["round"])
    return tables


def _imports(records: Iterable[dict]) -> dict[str, dict]:
    found: dict[str, list[dict]] = {}
    for r in records:
        if r["kind"] == IMPORT and r["code"] == "after":
            found.setdefault(r["dataset"], []).append(r)
    return {d: {"import_s": min(r["import_s"] for r in rs), "peak_mib": min(r["peak_mib"] for r in rs),
                "rounds": len(rs), "cores": rs[-1].get("cores"), "shape": rs[-1]["shape"],
                "unverified": sum(1 for r in rs if r.get("unverified"))} for d, rs in found.items()}


def _versions(records: Sequence[dict]) -> str:
    def values(field: str) -> str:
        found = sorted({str(r.get(field)) for r in records if r.get(field) is not None})
        return " / ".join(found) or "?"

    faiss = sorted({str(r.get("faiss")) for r in records if r.get("faiss")})
    return (f"torch {values('torch')}, RecBole {values('recbole')}, Python {values('python')}; CPU kNN search: "
            + (f"faiss {' / '.join(faiss)}" if faiss else "torch"))


def _provenance(records: Sequence[dict], signatures: bool) -> list[str]:
    code: dict[str, int] = {}
    for r in records:
        commit = r.get("git_commit")
        label = (f"recgoat {r.get('recgoat_version', '?')}, "
                 + (f"commit {commit[:12]}" if isinstance(commit, str) and commit else "commit unknown")
                 + (" with uncommitted changes" if r.get("git_dirty") else "")
                 + (" (the --before checkout)" if r["code"] == "before" else ""))
        code[label] = code.get(label, 0) + 1
    lines = ["Measured by " + "; ".join(f"{k} ({n} records)" for k, n in sorted(code.items())) + "."]
    unverified = sum(1 for r in records if r.get("unverified")) if signatures else 0
    if unverified:
        lines.append(f"† {unverified} of {len(records)} records not signed by this user's runs (edited since, or "
                     "written by someone else): their numbers are as the files say, unchecked.")
    return lines


def _settings_line(key: tuple, runs: Sequence[dict]) -> str:
    device, d, layers, batch, epochs, evals = key
    first = runs[0]
    name = first.get("device_name")
    cores = sorted({r.get("cores") for r in runs if r.get("cores") is not None})
    threads = sorted({r.get("threads") for r in runs if r.get("threads") is not None})
    rounds = sorted({len([x for x in runs if (x["dataset"], x["code"], x["job"]) == (r["dataset"], r["code"],
                                                                                   r["job"])]) for r in runs})
    return (f"**Device {device}**" + (f" ({name})" if name else "") +
            f", {'/'.join(map(str, cores)) or '?'} cores, {'/'.join(map(str, threads)) or '?'} torch threads; "
            f"d = {d}, layers = {layers}, batch = {batch}, seed 2020. Epoch: median of {epochs} timed "
            f"epochs after one warm-up epoch; eval: median of {evals} full-sort passes over the validation split; "
            f"each model in its own fresh process, best of {'/'.join(map(str, rounds))} rounds; kNN graphs built "
            f"cold (a fresh feature cache per measurement). {_versions(runs)}.")


def _ratio_table(groups: dict[tuple[str, str, str], list[dict]], signatures: bool) -> list[str]:
    datasets = _shapes(groups)
    before = any(code == "before" for _, code, _ in groups)
    head = ("| dataset | RecGOAT variant | alignment | baseline | baseline epoch (s) | RecGOAT epoch (s) | "
            "epoch / baseline |" + (" epoch / baseline before |" if before else "")
            + " eval / baseline | peak / baseline | RecGOAT parameters |")
    lines = [head, "|" + " --- |" * (head.count("|") - 1)]
    for dataset, shape in datasets.items():
        after = {job: runs for (d, code, job), runs in groups.items() if d == dataset and code == "after"}
        baselines = [job for job, runs in after.items() if _model(runs) != "RecGOAT"]
        for base_job in sorted(baselines, key=lambda j: (j != "LightGCN", j)):
            b = _best(after[base_job])
            # issue 28's goals are ratios to RecBole's LightGCN, at the paper's shapes
            at_goal = _at_paper_shape(shape) and base_job == "LightGCN"
            for job, runs in after.items():
                if job in baselines:
                    continue
                r = _best(runs)
                gat = bool(r["recgoat"].get("use_gat"))
                epoch_goal = GOALS["epoch_gat" if gat else "epoch"] if at_goal else None
                cells = [_ratio(r["epoch_s"], b["epoch_s"], epoch_goal)]
                if before:
                    old, old_base = groups.get((dataset, "before", job)), groups.get((dataset, "before", base_job))
                    cells.append(_ratio(_best(old)["epoch_s"], _best(old_base)["epoch_s"], None)
                                 if old and old_base else "–")
                cells += [_ratio(r["eval_s"], b["eval_s"], GOALS["eval"] if at_goal else None),
                          _ratio(r["peak_mib"], b["peak_mib"], GOALS["peak"] if at_goal else None)]
                mark = " †" if signatures and (r["unverified"] or b["unverified"]) else ""
                backbone = r["recgoat"].get("backbone")
                variant = job + (f" ({backbone} branch)" if backbone and backbone != "LightGCN" else "")
                lines.append(f"| {dataset}{mark} | {variant} | {_alignment(r)} | {base_job} | {b['epoch_s']:.2f} | "
                             f"{r['epoch_s']:.2f} | " + " | ".join(cells) + f" | {r['params']:,} |")
    return lines


def _grow(values: list[float | None], digits: int = 2) -> list[str]:
    """Each value, and after the first column its factor over the first column's (how it grows)."""
    first = values[0] if values else None
    out = []
    for k, v in enumerate(values):
        if v is None:
            out.append("–")
        elif k == 0 or not first:
            out.append(_n(v, digits))
        else:
            out.append(f"{_n(v, digits)} (×{v / first:.1f})")
    return out


def _scaling_table(groups: dict[tuple[str, str, str], list[dict]], imports: dict[str, dict], cpu: bool,
                   signatures: bool) -> list[str]:
    datasets = _shapes(groups, "after")
    names = list(datasets)
    jobs = list(dict.fromkeys(j for (_, code, j) in groups if code == "after"))
    best = {(d, j): _best(runs) for (d, code, j), runs in groups.items() if code == "after"}

    def row(label: str, values: list[float | None], digits: int = 2) -> str:
        return f"| {label} | " + " | ".join(_grow(values, digits)) + " |"

    lines = ["| part | " + " | ".join(n + (" †" if signatures and any(
        b["unverified"] for (d, _), b in best.items() if d == n) else "") for n in names) + " |",
             "| --- |" + " --- |" * len(names)]
    for field, label in (("users", "users"), ("items", "items"), ("interactions", "interactions")):
        lines.append(row(label, [float(datasets[n][field]) for n in names], 0))
    lines.append("| feature widths | " + " | ".join(_width(datasets[n]) for n in names) + " |")
    if any(n in imports for n in names):
        lines.append(row("import (s)", [imports[n]["import_s"] if n in imports else None for n in names]))
        lines.append(row("import peak RSS (MiB)", [imports[n]["peak_mib"] if n in imports else None for n in names],
                         0))
    models = {j: _model(runs) for (_, code, j), runs in groups.items() if code == "after"}
    for job in jobs:
        if models.get(job) != "RecGOAT":  # (a baseline builds no kNN graph)
            continue
        if any(best.get((n, job), {}).get("knn_s") is not None for n in names):
            lines.append(row(f"kNN graphs, cold (s): {job}", [best.get((n, job), {}).get("knn_s") for n in names]))
        if any(best.get((n, job), {}).get("gate_s") is not None for n in names):
            lines.append(row(f"gate, with its kNN graph (s): {job}",
                             [best.get((n, job), {}).get("gate_s") for n in names]))
        if any(n in imports for n in names):
            prepared = []
            for n in names:
                b = best.get((n, job))
                prepared.append(None if b is None or n not in imports else
                                imports[n]["import_s"] + (b["knn_s"] or 0.0) + (b["gate_s"] or 0.0))
            cells = _grow(prepared)
            for k, n in enumerate(names):  # the goal: Electronics' shape on 2 cores (the CPU)
                if (_has_shape(datasets[n], PREPARE_GOAL_SHAPE) and prepared[k] is not None and cpu
                        and imports[n].get("cores") == 2):
                    cells[k] += " ✓" if within(prepared[k], GOALS["prepare_s"]) else " ✗"
            lines.append(f"| import + kNN graphs + gate (s): {job} | " + " | ".join(cells) + " |")
    for field, label, digits in (("build_s", "model build (s)", 2), ("epoch_s", "epoch (s)", 2),
                                 ("eval_s", "full-sort eval (s)", 2), ("peak_mib", "peak memory (MiB)", 0)):
        for job in jobs:
            lines.append(row(f"{label}: {job}", [best[(n, job)][field] if (n, job) in best else None
                                                 for n in names], digits))
    return lines


def render(records: Sequence[dict], commands: Sequence[str] = (), signatures: bool = True) -> str:
    """The Markdown of a speed folder's records: the commands, then per (device, d, layers, batch, epochs,
    evaluations) a settings line, the ratio table (with the goals' marks) and the scaling table. The same
    records give the same bytes (nothing but the records and ``commands`` is read)."""
    parts = []
    if commands:
        parts.append("```bash\n" + "\n".join(commands) + "\n```")
    tables = _group(records)
    imports = _imports(records)
    if not tables:
        parts.append("No measurement recorded yet.")
    for key in sorted(tables, key=lambda k: tuple(str(x) for x in k)):
        groups = tables[key]
        runs = [r for rs in groups.values() for r in rs]
        parts.append(_settings_line(key, runs))
        parts.append("\n".join(_ratio_table(groups, signatures)))
        parts.append(
            f"Ratios to the baseline of each row (RecBole's model, in the same table). ✓ / ✗: within / beyond issue "
            f"28's goal, marked for the ratios to LightGCN at the paper's "
            f"shapes only (the synthetic Baby, Sports and Electronics at full size): epoch ≤ {GOALS['epoch']:g}x "
            f"(≤ {GOALS['epoch_gat']:g}x with GAT views, the paper's configuration), full-sort eval ≤ "
            f"{GOALS['eval']:g}x, peak memory ≤ {GOALS['peak']:g}x. The goals are for the alignment on: the "
            f"alignment column says which terms a run had and what its gate decided (a modality the gate closed "
            f"had no alignment terms). Peak memory: "
            + ("the process's peak RSS (data, features and model)." if key[0] == "cpu" else
               "torch.cuda.max_memory_allocated from the model build on."))
        parts.append("How each part grows with the shape (the factor: over the first column):\n\n"
                     + "\n".join(_scaling_table(groups, imports, key[0] == "cpu", signatures)))
        parts.append(
            "Import: `recgoat data import --format mmrec` of the generated folder, in its own process, on the "
            "CPU, by this checkout's code. kNN graphs: the views' item–item graphs built while the model is "
            "built; gate: the alignment gate's co-occurrence lift (with its own kNN graph over the items with "
            "training interactions); both inside the model build, which also counts them. "
            f"import + kNN graphs + gate: what a prepared import would do before training (the goal: ≤ "
            f"{GOALS['prepare_s']:g} s for the Electronics shape on 2 cores, marked only for a CPU table on 2 "
            f"cores).")
    parts.append("\n".join(_provenance(list(records), signatures)) if records else "")
    return "\n\n".join(p for p in parts if p) + "\n"
