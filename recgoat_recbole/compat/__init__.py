"""RecBole 1.2.1 on today's stack: one small module per version fix, each with its test in
``tests/test_compat.py`` that fails without it (docs/compat.md is the table of them).

:func:`apply` installs them once, in the order of :data:`FIXES`; ``import recgoat_recbole`` (the adapter) calls
it. Two fixes wrap the same function, ``Trainer.evaluate``, on purpose and in this order: ``safe_checkpoints``
lists the globals of the checkpoint file and loads it safely, and ``ddp_cpu`` wraps that with a barrier, so
that no rank reads the file before rank 0 has finished writing it. :data:`ORIGINALS` always holds RecBole's
own functions (unwrapped), so tests can show that each fix is needed.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["apply", "FIXES", "APPLIED", "ORIGINALS", "recbole_original", "recbole_checkpoint_globals"]

#: names of the fixes that :func:`apply` has installed, in order
APPLIED: list[str] = []
#: RecBole's functions that each fix replaced, by fix name
ORIGINALS: dict[str, Any] = {}

#: every fix, in the order :func:`apply` installs them (each a module of this package with ``install()``)
FIXES = ("numpy_aliases", "ray_import", "scipy_dok_update", "safe_config_values", "safe_checkpoints",
         "safe_dataset_cache", "ddp_cpu", "pop_counts")


def apply() -> list[str]:
    """Install every fix once (later calls do nothing); returns the names of the fixes applied."""
    if not APPLIED:
        for name in FIXES:
            importlib.import_module(f"{__name__}.{name}").install()
            APPLIED.append(name)
    return list(APPLIED)


def recbole_original(fn: Any) -> Any:
    """``fn`` without the wrappers our fixes put around it (marked ``__recgoat_compat__``): RecBole's own."""
    while getattr(fn, "__recgoat_compat__", False):
        fn = fn.__wrapped__
    return fn


def recbole_checkpoint_globals(path: Any):  # noqa: ANN201 -- a context manager
    """See :func:`recgoat_recbole.compat.safe_checkpoints.recbole_checkpoint_globals`."""
    from recgoat_recbole.compat.safe_checkpoints import recbole_checkpoint_globals as context

    return context(path)


def __getattr__(name: str) -> Any:
    """``compat._build_pkg_resources_shim`` and the like: names of the fix modules, for tests and tools."""
    for fix in FIXES:
        module = importlib.import_module(f"{__name__}.{fix}")
        if hasattr(module, name):
            return getattr(module, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
