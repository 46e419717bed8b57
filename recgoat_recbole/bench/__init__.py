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
- :mod:`~recgoat_recbole.bench.tuning` -- the grid search of ``recgoat tune``;
- :mod:`~recgoat_recbole.bench.records` -- the record files: signed, written atomically, read back safely;
- :mod:`~recgoat_recbole.bench.synthetic` and :mod:`~recgoat_recbole.bench.speed` -- the speed benchmark's
  synthetic datasets of the paper's shapes, and its records and tables (``benchmarks/bench_speed.py``).
"""
