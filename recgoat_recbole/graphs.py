"""Moved to :mod:`recgoat_core.graphs` (framework-free); this name stays an alias of that module."""
import sys

import recgoat_core.graphs

sys.modules[__name__] = recgoat_core.graphs
