"""``recgoat bench`` and ``recgoat demo``: RecGOAT against RecBole's built-in recommenders, fairly.

Every model sees the same dataset YAML (split, full-ranking evaluation, metrics), the same epoch budget,
early stopping on validation NDCG@10, batch size and seeds; test metrics are read once, from the checkpoint
selected on validation.

The package has one module per concern:

- :mod:`~recgoat_recbole.bench.names` -- the default baselines and metrics (no heavy import; the CLI's help);
- :mod:`~recgoat_recbole.bench.design` -- which runs there are: :class:`RunSpec`, :func:`build_specs`,
  the ablations, :func:`find_config`;
- :mod:`~recgoat_recbole.bench.execute` -- running them, each in a subprocess, resuming and reusing finished runs;
- :mod:`~recgoat_recbole.bench.worker` -- one run in that subprocess (:func:`recgoat_recbole.training.run_training`);
- :mod:`~recgoat_recbole.bench.report` -- the CSV, Markdown and PNG outputs;
- :mod:`~recgoat_recbole.bench.tuning` -- the grid search of ``recgoat tune``.
"""
from __future__ import annotations

from typing import Sequence

from recgoat_recbole.bench.design import ABLATIONS, RunSpec, build_specs, find_config
from recgoat_recbole.bench.execute import run_all
from recgoat_recbole.bench.names import BUILTIN_BASELINES, METRICS
from recgoat_recbole.bench.report import markdown_table, summarise, write_outputs

__all__ = ["find_config", "build_specs", "run_benchmark", "ABLATIONS", "BUILTIN_BASELINES", "METRICS", "RunSpec"]


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
