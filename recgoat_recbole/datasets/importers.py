"""Moved to :mod:`recgoat_recbole.importers` (``recgoat data import``); this name stays an alias of it."""
import sys

import recgoat_recbole.importers

sys.modules[__name__] = recgoat_recbole.importers
