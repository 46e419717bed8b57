"""``recgoat bench`` and ``recgoat demo``: RecGOAT against RecBole's built-in recommenders, fairly.

Every model sees the same dataset YAML (split, full-ranking evaluation, metrics), the same epoch budget,
early stopping on validation NDCG@10, batch size and seeds; test metrics are read once, from the checkpoint
selected on validation. See :mod:`recgoat_recbole.bench.runner` for what a run records.
"""
from __future__ import annotations

import os
import sys
from typing import Any, Sequence

from recgoat_recbole.bench.runner import (
    ABLATIONS,
    BUILTIN_BASELINES,
    RunSpec,
    markdown_table,
    run_all,
    summarise,
    write_outputs,
)

__all__ = ["find_config", "build_specs", "run_benchmark", "ABLATIONS", "BUILTIN_BASELINES"]

METRICS = ("recall@10", "ndcg@10", "recall@20", "ndcg@20")


def find_config(dataset: str) -> str:
    """``recbole_configs/<dataset>.yaml`` from the working directory, the source checkout or the install."""
    here = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    for folder in (os.path.join(os.getcwd(), "recbole_configs"), os.path.join(here, "recbole_configs"),
                   os.path.join(sys.prefix, "share", "recgoat-recbole", "recbole_configs")):
        path = os.path.join(folder, f"{dataset}.yaml")
        if os.path.isfile(path):
            return path
    raise FileNotFoundError(f"no config for dataset {dataset!r}: pass --config FILE (looked for "
                            f"recbole_configs/{dataset}.yaml)")


def build_specs(datasets: Sequence[str], models: Sequence[str], seeds: Sequence[int], common: dict[str, Any],
                configs: dict[str, str] | None = None, ablations: bool = False,
                gammas: Sequence[float] = (), tuned: dict[str, dict[str, dict]] | None = None) -> list[RunSpec]:
    """One spec per dataset x (model | ablation | γ) x seed. ``tuned`` (``{dataset: {model: settings}}``, as
    ``recgoat tune`` writes) adds those settings to the models it names, tagged ``tuned``."""
    specs = []
    for dataset in datasets:
        files = ((configs or {}).get(dataset) or find_config(dataset),)
        chosen = (tuned or {}).get(dataset, {})
        for seed in seeds:
            for model in models:
                if model in chosen:
                    specs.append(RunSpec(dataset, model, seed, "", files, {**common, **chosen[model]}, "tuned"))
                else:
                    specs.append(RunSpec(dataset, model, seed, "", files, dict(common)))
            if ablations:
                for name, extra in ABLATIONS.items():
                    specs.append(RunSpec(dataset, "RecGOAT", seed, f"ablation: {name}", files, {**common, **extra}))
            for gamma in gammas:
                extra = {"fusion_gamma": float(gamma)}
                specs.append(RunSpec(dataset, "RecGOAT", seed, f"gamma={gamma:g}", files, {**common, **extra}))
    return specs


def run_benchmark(specs: Sequence[RunSpec], out_dir: str, title: str, log=print, train: bool = True,
                  jobs: int = 1, reuse_from: Sequence[str] = ()) -> dict[str, str]:
    """Run (or, with ``train=False``, only collect) ``specs`` and write results.csv / .md / .png to ``out_dir``.

    ``jobs`` runs train at once; identical finished runs in ``reuse_from`` folders are copied, not trained."""
    records = run_all(specs, out_dir, log, train=train, jobs=jobs, reuse_from=reuse_from)
    if not records:
        raise FileNotFoundError(f"no finished runs in {out_dir}/runs for these settings")
    paths = write_outputs(records, out_dir, METRICS, title)
    log(markdown_table(summarise(records, METRICS), METRICS))
    return paths
