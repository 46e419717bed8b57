"""The benchmark's outputs: ``results.csv`` (one row per run), ``results.md`` (mean ± std over seeds) and
``results.png`` (an NDCG bar chart), from the run records that :mod:`recgoat_recbole.bench.execute` saves.
"""

from __future__ import annotations

import os
import statistics
from typing import Any, Iterable, Sequence

__all__ = ["summarise", "markdown_table", "write_outputs"]


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
