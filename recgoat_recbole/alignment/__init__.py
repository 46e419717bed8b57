"""Moved to :mod:`recgoat_core.alignment` (framework-free). This name stays an alias of it, submodules too."""
import sys

import recgoat_core.alignment as _core
from recgoat_core.alignment import *  # noqa: F401,F403
from recgoat_core.alignment import __all__, cmcl, oat, sinkhorn, wasserstein  # noqa: F401

for _name in ("cmcl", "oat", "sinkhorn", "wasserstein"):
    sys.modules[f"{__name__}.{_name}"] = getattr(_core, _name)
