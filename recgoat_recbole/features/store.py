"""Moved to :mod:`recgoat_core.feature_files` (framework-free); this name stays an alias of that module."""
import sys

import recgoat_core.feature_files

sys.modules[__name__] = recgoat_core.feature_files
