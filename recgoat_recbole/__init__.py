"""recgoat-recbole: RecGOAT (arXiv 2602.00682) as a RecBole plugin -- the RecBole adapter.

``import recgoat_recbole`` applies the patch table (:mod:`recgoat_recbole.patches`: RecBole 1.2.1 version
fixes, safe loading, the model lookup) once, and registers the models: :class:`RecGOAT` (so that
``run_recbole(model=RecGOAT, ...)`` and ``run_recbole(model="RecGOAT", ...)`` both work), the multimodal peers
FREEDOM and LGMRec, and the alignment plugin (:mod:`recgoat_recbole.aligned`: ``run_recbole(model="SGL+Align",
...)`` adds the feature alignment to RecBole's own SGL, LightGCN, NGCF, NCL, BPR or SimpleX). No RecBole
recommender class is changed. The framework-free parts (alignment losses, graphs, layers, feature files) are
the package :mod:`recgoat_core`, which imports torch and numpy only.
"""
from __future__ import annotations

from recgoat_recbole.patches import apply as _apply_patches
from recgoat_recbole.version import __version__

_apply_patches()

from recgoat_recbole.models import FeatureDataset, RecGOAT, aligned  # noqa: E402  (registers the models)

__all__ = ["RecGOAT", "FeatureDataset", "aligned", "__version__"]
