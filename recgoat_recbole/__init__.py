"""recgoat-recbole: RecGOAT (arXiv 2602.00682) as a RecBole plugin.

``import recgoat_recbole`` applies :mod:`recgoat_recbole.compat` once and registers :class:`RecGOAT`, so that
``run_recbole(model=RecGOAT, ...)`` and ``run_recbole(model="RecGOAT", ...)`` both work.
"""
from __future__ import annotations

import os

from recgoat_recbole import compat as _compat

_compat.apply()

from recgoat_recbole.dataset import RecGOATDataset  # noqa: E402
from recgoat_recbole.model import RecGOAT  # noqa: E402

__version__ = "0.1.0"
PROPERTIES_DIR = os.path.join(os.path.dirname(__file__), "properties")

_compat.register_model(RecGOAT, RecGOATDataset, os.path.join(PROPERTIES_DIR, "RecGOAT.yaml"))

__all__ = ["RecGOAT", "RecGOATDataset", "PROPERTIES_DIR", "__version__"]
