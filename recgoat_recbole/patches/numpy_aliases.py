"""``numpy_aliases`` -- numpy 2 removed ``np.float_``, ``np.complex_`` and ``np.unicode_``. RecBole's
``Config.compatibility_settings`` reads them to recreate the *older* aliases (``np.float``, ``np.bool``, ...)
that its own metrics still use (``recbole/evaluator/metrics.py``), so every ``Config(...)`` raised
``AttributeError``. We replace that method with one that creates the same old aliases from names that
exist in numpy 1 and 2 (``np.float64``, ``np.complex128``, ``np.str_``). We do not put the removed
numpy-2 names back.
"""

from __future__ import annotations

from typing import Any

#: what :func:`install` replaced (RecBole's own functions)
ORIGINALS: dict[str, Any] = {}



_OLD_NUMPY_ALIASES = {
    "bool": "bool_",
    "int": "int_",
    "float": "float64",
    "complex": "complex128",
    "object": "object_",
    "str": "str_",
    "long": "int_",
    "unicode": "str_",
}


def _compatibility_settings(self: Any) -> None:
    """Replacement for ``Config.compatibility_settings`` that works on numpy 1 and 2."""
    import numpy as np

    for old, new in _OLD_NUMPY_ALIASES.items():
        setattr(np, old, getattr(np, new))


def install() -> None:
    from recbole.config import configurator

    ORIGINALS["compatibility_settings"] = configurator.Config.compatibility_settings
    configurator.Config.compatibility_settings = _compatibility_settings
    # also now: a Config rebuilt from a checkpoint (load_data_and_model) never runs compatibility_settings,
    # and RecBole's metrics read np.float
    _compatibility_settings(None)
