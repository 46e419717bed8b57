"""Moved to :mod:`recgoat_core.layers` (framework-free); this name stays an alias of that module."""
import sys

import recgoat_core.layers

sys.modules[__name__] = recgoat_core.layers
