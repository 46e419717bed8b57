"""The benchmark's outputs: ``results.csv`` (one row per run), ``results.md`` (mean ± std over seeds) and
``results.png`` (Recall@10 and NDCG@10 bars), from the run records that :mod:`recgoat_recbole.bench.execute` saves.

Every table and plot says where its numbers come from: the test split, each run's model chosen on the
validation split; how many seeds; and what the ± and the error bars are (the standard deviation over seeds).
A row of one seed shows its value alone, never ``± 0.0000``.

Every table also says where its runs come from (:func:`provenance`, the lines under it): the code that trained
them (``recgoat_version``, ``git_commit`` of the records), how many runs were copied from which ``--reuse``
folder, and how many records are not signed by this user's runs. Those are the records that ``--report-only``
keeps although their signature is missing or does not verify (:mod:`~recgoat_recbole.bench.execute`: a report
may be re-derived from someone else's output folder, but its numbers are then as the files say): their rows
are marked ``†``. ``results.csv`` has the same per run: ``reused_from`` (the folder) and ``signed``.

Every table tests its differences (:mod:`~recgoat_recbole.bench.stats`): per dataset, each model against the
best other one on test NDCG@10 (the best row against the runner-up, every other row against the best), a
two-sided Wilcoxon signed-rank test over the test users of each user's NDCG@10 averaged over the model's seeds.
The column gives the difference and its p-value; the plot marks a significant one (p < 0.05) with ``*``.
Every table also says where the epoch budget binds: a run that trained all its epochs with its best validation
among the last ``stopping_step`` validations was still improving when the cap stopped it (``‡``).

When the runs' test split has cold items (items without a train interaction; the records' ``cold``,
:func:`recgoat_recbole.bench.worker.cold_record`), a second table follows (:func:`cold_table`): per model, the
test NDCG@10 and Recall@20 of the cold items under full ranking, among the cold items only, and of the warm
items (:data:`recgoat_recbole.training.COLD_SLICES`), each with its paired test against the best other model on
that column. Without cold items there is no such table, and ``results.csv`` has no such columns.
"""

from __future__ import annotations

import math
import os
import statistics
from typing import Any, Iterable, Sequence

__all__ = ["summarise", "markdown_table", "caption", "write_outputs", "plot", "provenance", "budget_notes",
           "cap_binds", "SIGNIFICANCE", "cold_table", "COLD_METRICS", "SLICE_TITLES"]

#: the metric the paired test compares, and the level a difference counts as significant at
SIGNIFICANCE = ("ndcg@10", 0.05)
#: the cold-item table's metrics per slice: those whose per-user values a record keeps
COLD_METRICS = ("ndcg@10", "recall@20")
#: the cold-item table's name of each slice (:data:`recgoat_recbole.training.COLD_SLICES`)
SLICE_TITLES = {"cold": "cold", "among_cold": "among cold", "warm": "warm"}


def cap_binds(record: dict) -> bool | None:
    """Whether the epoch budget stopped this run while it was still improving: it trained ``epochs_cap``
    epochs and its best validation is among the last ``stopping_step`` validations. ``None`` when the record
    does not say (older records) or the model has no epoch budget (closed form: Pop, ItemKNN, EASE)."""
    curve, cap = record.get("valid_curve"), record.get("epochs_cap")
    if record.get("model_type") == "TRADITIONAL" or not curve or not isinstance(cap, int):
        return None
    if int(record["epochs"]) < cap:
        return False
    scores = [v for _, v in curve]
    best = max(range(len(scores)), key=lambda i: (scores[i], i))
    return best >= len(scores) - int(record.get("stopping_step") or 1)


def summarise(records: Iterable[dict], metrics: Sequence[str]) -> list[dict]:
    """Mean and standard deviation over seeds, per (dataset, label), in first-seen order. ``<metric>_std`` is
    0.0 for one seed (no spread measured): check ``seeds`` before calling it a spread."""
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
            row[f"{m}_n"] = len(values)
        for k in ("epoch_s", "total_s", "peak_mib", "epochs"):
            row[k] = statistics.mean(r[k] for r in runs)
        # where the runs come from (provenance): the code, the --reuse folders, records that are not signed
        row["unverified"] = sum(1 for r in runs if r.get("unverified"))
        row["reused"] = _count((r["reused_dir"], _code(r)) for r in runs if r.get("reused_dir"))
        row["code"] = _count(_code(r) for r in runs if r.get("recgoat_version"))
        row["adjusted"] = {k: v for r in runs for k, v in (r.get("adjusted") or {}).items()}
        binds = [cap_binds(r) for r in runs]
        row["cap_binds"] = sum(1 for b in binds if b)
        row["budget_known"] = sum(1 for b in binds if b is not None)
        row["runs"] = runs
        cold = _cold_summary(runs)
        if cold:
            row["cold"] = cold
        rows.append(row)
    _compare(rows)
    _compare_cold(rows)
    return rows


def _slice_values(record: dict, name: str) -> dict | None:
    cold = record.get("cold")
    values = cold.get("test", {}).get(name) if isinstance(cold, dict) else None
    return values if isinstance(values, dict) else None


def _cold_summary(runs: Sequence[dict]) -> dict:
    """Per slice, the mean, std and count over the runs of each :data:`COLD_METRICS` and the users (of the
    first run that has the slice); and the first run's counts of cold items. ``{}`` when no run has ``cold``."""
    with_cold = [r for r in runs if isinstance(r.get("cold"), dict)]
    if not with_cold:
        return {}
    first = with_cold[0]["cold"]
    out: dict[str, Any] = {"counts": {k: first.get(k) for k in ("items", "test_items", "test_interactions")}}
    for name in SLICE_TITLES:
        found = [v for v in (_slice_values(r, name) for r in with_cold) if v is not None]
        part: dict[str, Any] = {"users": found[0].get("users") if found else 0}
        for m in COLD_METRICS:
            values = [float(v[m]) for v in found if isinstance(v.get(m), (int, float))]
            part[m] = statistics.mean(values) if values else float("nan")
            part[f"{m}_std"] = statistics.stdev(values) if len(values) > 1 else 0.0
            part[f"{m}_n"] = len(values)
        out[name] = part
    return out


def _compare_cold(rows: list[dict]) -> None:
    """:func:`_compare` within each slice of the cold-item table (``row["cold"][slice]["test_vs"]``), on the
    slice's per-user NDCG@10."""
    from recgoat_recbole.bench.stats import paired_test, slice_records

    metric = SIGNIFICANCE[0]
    for dataset in dict.fromkeys(r["dataset"] for r in rows):
        for name in SLICE_TITLES:
            sub = [r for r in rows if r["dataset"] == dataset and "cold" in r
                   and not math.isnan(r["cold"][name].get(metric, float("nan")))]
            ranked = sorted(sub, key=lambda r: -r["cold"][name][metric])
            for row in sub:
                other = next((o for o in ranked if o is not row), None)
                test = (paired_test(slice_records(row["runs"], name), slice_records(other["runs"], name), metric)
                        if other is not None else None)
                row["cold"][name]["test_vs"] = (other["model"], test) if test is not None else None


def _compare(rows: list[dict]) -> None:
    """Per dataset: each row's paired test against the best other row (``row["test_vs"]``: (name, PairedTest)
    or None), the best row against the runner-up."""
    from recgoat_recbole.bench.stats import paired_test

    metric = SIGNIFICANCE[0]
    for dataset in dict.fromkeys(r["dataset"] for r in rows):
        sub = [r for r in rows if r["dataset"] == dataset and not math.isnan(r.get(metric, float("nan")))]
        ranked = sorted(sub, key=lambda r: -r[metric])
        for row in sub:
            other = next((o for o in ranked if o is not row), None)
            test = paired_test(row["runs"], other["runs"], metric) if other is not None else None
            row["test_vs"] = (other["model"], test) if test is not None else None


def _code(record: dict) -> str:
    commit = record.get("git_commit")
    return (f"recgoat {record.get('recgoat_version', '?')}, " +
            (f"commit {commit[:12]}" if isinstance(commit, str) and commit else "commit unknown"))


def _count(items: Iterable) -> dict:
    out: dict = {}
    for item in items:
        out[item] = out.get(item, 0) + 1
    return out


def _shown(folder: str) -> str:
    """A folder as the user would name it: relative to the working directory when inside it."""
    rel = os.path.relpath(folder)
    return folder if rel == ".." or rel.startswith(".." + os.sep) else rel


def provenance(rows: Sequence[dict], signatures: bool = True) -> list[str]:
    """The lines under a table that say where its runs come from (see the module docstring). With
    ``signatures=False`` a ``--reuse`` folder is named by its last part and unsigned records are not counted."""
    total = sum(int(r["seeds"]) for r in rows)
    code: dict = {}
    reused: dict = {}
    for r in rows:
        for k, n in r.get("code", {}).items():
            code[k] = code.get(k, 0) + n
        for k, n in r.get("reused", {}).items():
            reused[k] = reused.get(k, 0) + n
    lines = []
    if code:
        lines.append("Trained by " + "; ".join(f"{k} ({n} of {total} runs)" if len(code) > 1 or n != total
                                               else f"{k}" for k, n in code.items()) + ".")
    by_folder: dict[str, list] = {}
    for (folder, what), n in reused.items():
        by_folder.setdefault(folder, []).append((what, n))
    for folder, whats in by_folder.items():
        n = sum(k for _, k in whats)
        shown = _shown(folder) if signatures else os.path.basename(folder.rstrip(os.sep))
        lines.append(f"reused {n} run{'s' if n != 1 else ''} from {shown} (trained there by " +
                     "; ".join(w if len(whats) == 1 else f"{w}: {k}" for w, k in whats) + "), not trained here.")
    for r in rows:  # what the bench changed to fit a run (bench/worker.py): a footnote, not a silent change
        changed = r.get("adjusted") or {}
        if changed:
            lines.append(f"{r['model']} on {r['dataset']}: " + "; ".join(
                f"{k} {v}" if isinstance(v, str) else f"{k} = {v}" for k, v in changed.items()) + ".")
    unverified = sum(int(r.get("unverified", 0)) for r in rows) if signatures else 0
    if unverified:
        lines.append(f"† {unverified} of {total} runs not signed by this user's runs (edited since, written by "
                     "someone else, or by a recgoat without record signatures): their numbers are as the files say, "
                     "unchecked.")
    return lines


def _seeds_phrase(rows: Sequence[dict]) -> str:
    counts = sorted({int(r["seeds"]) for r in rows})
    if counts == [1]:
        return "1 seed: single values, no spread measured"
    if len(counts) == 1:
        return f"mean ± std over {counts[0]} seeds"
    return ("mean ± std over the seeds in the last column (" + ", ".join(map(str, counts)) +
            "); a row of 1 seed shows its value alone")


def caption(rows: Sequence[dict]) -> str:
    """What the numbers are: the split, how the model was chosen, the seeds and what ± means, the test."""
    metric, level = SIGNIFICANCE
    return (f"Test split; each run's model is the epoch chosen on the validation split (early stopping on "
            f"valid_metric); {_seeds_phrase(rows)}. \"vs best other\": the row's test {_name(metric)} minus that "
            f"of the best other model on the dataset (the best row: minus the runner-up), and the p-value of a "
            f"two-sided Wilcoxon signed-rank test over the test users, each user's {_name(metric)} averaged over "
            f"the model's seeds (uncorrected; a difference with p ≥ {level:g} is not a lead). Epoch and total "
            f"seconds are each run's wall clock on a shared machine (with --jobs N, N runs at once): relative "
            f"cost only; clean speed ratios come from benchmarks/bench_speed.py.")


def _name(metric: str) -> str:
    name, _, k = metric.partition("@")
    return {"ndcg": "NDCG", "recall": "Recall"}.get(name, name) + (f"@{k}" if k else "")


def _p(p: float) -> str:
    if math.isnan(p):
        return "p –"
    return f"p = {p:.2g}" if p >= 0.001 else f"p = {p:.1e}"


def _versus(row: dict) -> str:
    found = row.get("test_vs")  # (a row of the table, or a slice of a row of the cold-item table)
    if not found:
        return "–"
    other, test = found
    return f"{test.delta:+.4f} vs {other}, {_p(test.p)}"


def _epochs(row: dict) -> str:
    mark = " ‡" if row.get("cap_binds") else ""
    return f"{row['epochs']:.0f}{mark}"


def _cell(row: dict, metric: str) -> str:
    value = row[metric]
    if isinstance(value, float) and math.isnan(value):
        return "–"
    if row.get(f"{metric}_n", row["seeds"]) > 1:
        return f"{value:.4f} ± {row[f'{metric}_std']:.4f}"
    return f"{value:.4f}"


def markdown_table(rows: Sequence[dict], metrics: Sequence[str], signatures: bool = True) -> str:
    """The caption (:func:`caption`), then one row per (dataset, model) with Recall and NDCG side by side, the
    paired test against the best other model, and the budget notes. ``signatures=False`` (committed records,
    whose provenance is the repository's history) neither marks nor counts unsigned records."""
    metrics = _recall_next_to_ndcg(metrics)
    head = ("| dataset | model | " + " | ".join(metrics) + f" | vs best other ({_name(SIGNIFICANCE[0])}) | epochs | "
            "epoch (s) | total (s) | peak MiB | seeds |")
    lines = [caption(rows), "", head, "|" + " --- |" * (head.count("|") - 1)]
    for r in rows:
        cells = [_cell(r, m) for m in metrics]
        mark = " †" if r.get("unverified") and signatures else ""
        lines.append(f"| {r['dataset']} | {r['model']}{mark} | " + " | ".join(cells) +
                     f" | {_versus(r)} | {_epochs(r)} | {r['epoch_s']:.2f} | {r['total_s']:.0f} | "
                     f"{r['peak_mib']:.0f} | {r['seeds']} |")
    notes = provenance(rows, signatures=signatures) + budget_notes(rows)
    if notes:
        lines += [""] + notes
    cold = cold_table(rows)
    if cold:
        lines += ["", cold]
    return "\n".join(lines)


def cold_table(rows: Sequence[dict]) -> str:
    """The cold-item table (see the module docstring): its caption, what each dataset's test split holds, then
    one row per (dataset, model) whose runs have cold items. '' when none has."""
    shown = [r for r in rows if r.get("cold")]
    if not shown:
        return ""
    metric = _name(SIGNIFICANCE[0])
    caption_text = (
        "Cold-start items: the same runs, their test split cut by item. An item is cold when it has no train "
        "interaction. **cold**: ranking over every item, only a user's cold test items relevant (the test users "
        "with at least one); **among cold**: ranking among the cold items only (every warm item's score -inf), "
        "the same users and relevant items; **warm**: ranking over every item, only a user's warm test items "
        "relevant (the test users with at least one). A user's other test items stay in the ranking, not "
        f"relevant. \"vs best other\": the {metric} of the slice against the best other model's on it, each user's value "
        f"averaged over the model's seeds (two-sided Wilcoxon signed-rank over the slice's users, uncorrected). "
        f"{_seeds_phrase(shown).capitalize()}.")
    titles = []
    for title in SLICE_TITLES.values():
        titles += [f"{title} {_name(m)}" for m in COLD_METRICS] + [f"vs best other ({title} {metric})"]
    head = "| dataset | model | " + " | ".join(titles) + " | seeds |"
    lines = [caption_text, ""]
    for dataset in dict.fromkeys(r["dataset"] for r in shown):
        first = next(r for r in shown if r["dataset"] == dataset)["cold"]
        counts = first["counts"]
        lines.append(f"- {dataset}: {_count_text(counts.get('items'))} cold items, "
                     f"{_count_text(counts.get('test_items'))} of them in test "
                     f"({_count_text(counts.get('test_interactions'))} test interactions); test users with a cold "
                     f"item {_count_text(first['cold'].get('users'))}, with a warm item "
                     f"{_count_text(first['warm'].get('users'))}.")
    lines += ["", head, "|" + " --- |" * (head.count("|") - 1)]
    for r in shown:
        cells = []
        for name in SLICE_TITLES:
            part = r["cold"][name]
            cells += [_cell({**part, "seeds": r["seeds"]}, m) for m in COLD_METRICS]
            cells.append(_versus(part))
        lines.append(f"| {r['dataset']} | {r['model']} | " + " | ".join(cells) + f" | {r['seeds']} |")
    return "\n".join(lines)


def _count_text(value: Any) -> str:
    return f"{value:,}" if isinstance(value, int) else "?"


def budget_notes(rows: Sequence[dict]) -> list[str]:
    """The lines under a table that say what the epoch budget was and where it binds (``‡``)."""
    runs = [r for row in rows for r in row.get("runs", [])]
    caps = sorted({(r["epochs_cap"], r.get("stopping_step")) for r in runs
                   if r.get("model_type") != "TRADITIONAL" and isinstance(r.get("epochs_cap"), int)})
    lines = []
    if caps:
        closed = sorted({row["model"] for row in rows for r in row.get("runs", [])
                         if r.get("model_type") == "TRADITIONAL"})
        lines.append("Budget: " + "; ".join(f"at most {cap} epochs, patience {patience}" for cap, patience in caps) +
                     (f" ({', '.join(closed)}: closed form, one pass)." if closed else "."))
    bound = [r for r in rows if r.get("cap_binds")]
    if bound:
        lines.append("‡ the cap binds: " + "; ".join(f"{r['model']} on {r['dataset']} ({r['cap_binds']} of "
                                                     f"{r['seeds']} runs)" for r in bound) +
                     " trained every epoch with the best validation among the last `stopping_step` validations, "
                     "still improving when stopped.")
    elif caps and all(r.get("budget_known") == r["seeds"] for r in rows if r.get("budget_known") is not None):
        lines.append("The cap binds nowhere: every run stopped early or had its best validation before its last "
                     "`stopping_step` validations.")
    unknown = sum(int(r["seeds"]) - int(r.get("budget_known", 0)) for r in rows
                  if any(x.get("model_type") != "TRADITIONAL" for x in r.get("runs", [])))
    if unknown:
        lines.append(f"{unknown} runs' records have no validation curve (older records): whether the cap binds "
                     "there is not known.")
    return lines


def _recall_next_to_ndcg(metrics: Sequence[str]) -> list[str]:
    """``recall@k`` and ``ndcg@k`` next to each other, by k (the order of first appearance otherwise)."""
    out: list[str] = []
    for m in metrics:
        if m in out:
            continue
        out.append(m)
        name, _, k = m.partition("@")
        twin = {"recall": "ndcg", "ndcg": "recall"}.get(name)
        if twin and f"{twin}@{k}" in metrics and f"{twin}@{k}" not in out:
            out.append(f"{twin}@{k}")
    return out


def write_outputs(records: Sequence[dict], out_dir: str, metrics: Sequence[str], title: str,
                  signatures: bool = True) -> dict[str, str]:
    """``results.csv`` (one row per run), ``results.md`` (mean ± std, the paired tests) and ``results.png``
    (Recall/NDCG bars, significance marks)."""
    import csv

    os.makedirs(out_dir, exist_ok=True)
    csv_path = os.path.join(out_dir, "results.csv")
    with open(csv_path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        # the cold-item slices' columns only when a run's test split has cold items
        slices = [(name, m) for name in SLICE_TITLES for m in COLD_METRICS] if any(
            isinstance(r.get("cold"), dict) for r in records) else []
        writer.writerow(["dataset", "model", "seed", *metrics, "epochs", "epochs_cap", "best_epoch", "cap_binds",
                         "epoch_s", "total_s", "peak_mib", "device", "reused_from", "signed",
                         *(f"{name} {m}" for name, m in slices)])
        for r in records:
            binds = cap_binds(r)
            writer.writerow([r["dataset"], r["label"], r["seed"], *(f"{r['test'].get(m, float('nan')):.6f}"
                             for m in metrics), r["epochs"], r.get("epochs_cap", ""), r.get("best_epoch", ""),
                             "" if binds is None else binds, f"{r['epoch_s']:.3f}", f"{r['total_s']:.1f}",
                             f"{r['peak_mib']:.0f}", r["device"], r.get("reused_dir") or "",
                             not r.get("unverified"),
                             *(f"{(_slice_values(r, name) or {}).get(m, float('nan')):.6f}" for name, m in slices)])
    rows = summarise(records, metrics)
    md_path = os.path.join(out_dir, "results.md")
    with open(md_path, "w", encoding="utf-8") as f:
        f.write(f"{title}\n\n{markdown_table(rows, metrics, signatures=signatures)}\n")
    png_path = os.path.join(out_dir, "results.png")
    plot(rows, metrics, png_path)
    return {"csv": csv_path, "markdown": md_path, "png": png_path}


def plot(rows: Sequence[dict], metrics: Sequence[str], path: str) -> None:
    """:func:`_plot` of Recall@10 and NDCG@10 (else the first metric)."""
    shown = [m for m in ("recall@10", "ndcg@10") if m in metrics] or list(metrics[:1])
    _plot(rows, shown, path)


def _plot(rows: Sequence[dict], metrics: Sequence[str], path: str) -> None:
    """Grouped bars per dataset (one group per model, one bar per metric) with the value on each bar, error
    bars of the std over seeds where there are several, and a footnote saying so."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    datasets = list(dict.fromkeys(r["dataset"] for r in rows))
    per = max(len([r for r in rows if r["dataset"] == d]) for d in datasets)
    fig, axes = plt.subplots(1, len(datasets), figsize=(len(datasets) * (2.5 + 0.9 * per * len(metrics)), 4.4),
                             squeeze=False)
    from matplotlib.patches import Patch

    width = 0.8 / len(metrics)
    hatches = ("", "//", "..", "xx")
    for ax, dataset in zip(axes[0], datasets):
        sub = [r for r in rows if r["dataset"] == dataset]
        colours = ["#c0392b" if "RecGOAT" in r["model"] else "#7f8c8d" for r in sub]
        top = 0.0
        for k, metric in enumerate(metrics):
            xs = [i + (k - (len(metrics) - 1) / 2) * width for i in range(len(sub))]
            values = [r[metric] for r in sub]
            errors = [r[f"{metric}_std"] if r.get(f"{metric}_n", r["seeds"]) > 1 else 0.0 for r in sub]
            bars = ax.bar(xs, values, width, yerr=errors if any(errors) else None, capsize=3, color=colours,
                          hatch=hatches[k % len(hatches)], edgecolor="white")
            marks = [""] * len(sub)
            if metric == SIGNIFICANCE[0]:
                marks = [" *" if r.get("test_vs") and r["test_vs"][1].significant else "" for r in sub]
            ax.bar_label(bars, labels=[f"{v:.3f}{m}" for v, m in zip(values, marks)], padding=2, fontsize=7)
            top = max(top, *(v + e for v, e in zip(values, errors) if not math.isnan(v)))
        ax.set_ylim(0, top * 1.3 if top > 0 else 1)  # (the top band: the values and the legend)
        ax.set_xticks(range(len(sub)), [r["model"] for r in sub], rotation=45, ha="right", fontsize=8)
        ax.set_title(dataset)
        ax.set_ylabel("test metric")
        ax.legend(handles=[Patch(facecolor="#bdc3c7", edgecolor="white", hatch=hatches[k % len(hatches)], label=m)
                           for k, m in enumerate(metrics)], fontsize=7, loc="upper center",
                  ncol=len(metrics), frameon=False)
    note = ("Test split, model chosen on validation; " +
            ("1 seed: single values, no error bars" if all(r["seeds"] == 1 for r in rows)
             else "error bars: std over seeds (" + _seeds_phrase(rows) + ")") +
            f"; * {_name(SIGNIFICANCE[0])} differs from the best other model's, p < {SIGNIFICANCE[1]:g} "
            "(paired Wilcoxon over test users)")
    import textwrap

    lines = textwrap.wrap(note, width=max(60, int(fig.get_figwidth() * 15)))
    fig.text(0.5, 0.01, "\n".join(lines), ha="center", va="bottom", fontsize=8)
    fig.tight_layout(rect=(0, 0.035 * (len(lines) + 0.5), 1, 1))
    fig.savefig(path, dpi=120, metadata={"Software": None})  # (no version stamp: the same records, the same file)
    plt.close(fig)
