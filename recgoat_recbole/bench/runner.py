"""Where the benchmark lived before it was split by concern; the names stay importable from here.

Design: :mod:`recgoat_recbole.bench.design`; running: :mod:`recgoat_recbole.bench.execute`; one run:
:mod:`recgoat_recbole.bench.worker`; outputs: :mod:`recgoat_recbole.bench.report`.
"""

from __future__ import annotations

from recgoat_recbole.bench.design import _ALIGN_OFF, _ALIGN_ON, ABLATIONS, RunSpec, _default  # noqa: F401
from recgoat_recbole.bench.execute import (  # noqa: F401
    PATH_KEYS,
    _absolute_paths,
    _save,
    config_digest,
    find_identical,
    run_all,
    run_one,
    settings_differ,
)
from recgoat_recbole.bench.names import BUILTIN_BASELINES  # noqa: F401
from recgoat_recbole.bench.report import _plot, markdown_table, summarise, write_outputs  # noqa: F401
from recgoat_recbole.bench.worker import _fit_to_dataset, _worker, peak_memory_mib  # noqa: F401

__all__ = ["RunSpec", "run_all", "find_identical", "settings_differ", "summarise", "markdown_table", "write_outputs",
           "BUILTIN_BASELINES", "ABLATIONS"]

if __name__ == "__main__":
    from recgoat_recbole.bench.worker import main

    main()
