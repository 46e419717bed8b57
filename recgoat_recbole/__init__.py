"""recgoat-recbole: RecGOAT (arXiv 2602.00682) as a RecBole plugin -- the RecBole adapter.

``import recgoat_recbole`` applies the RecBole 1.2.1 compatibility fixes (:mod:`recgoat_recbole.compat`) once,
installs the model registry (:mod:`recgoat_recbole.registry`) and registers :class:`RecGOAT`, so that
``run_recbole(model=RecGOAT, ...)`` and ``run_recbole(model="RecGOAT", ...)`` both work, and the alignment
plugin (:mod:`recgoat_recbole.aligned`), so that ``run_recbole(model="SGL+Align", ...)`` adds the feature
alignment to RecBole's own SGL (or LightGCN, NGCF, NCL, BPR, SimpleX). The framework-free
parts (alignment losses, graphs, layers, feature files) are the package :mod:`recgoat_core`, which imports
torch and numpy only.
"""
from __future__ import annotations

import os

from recgoat_recbole import compat as _compat
from recgoat_recbole import registry as _registry
from recgoat_recbole import yaml_paths as _yaml_paths

_compat.apply()
_registry.install()
_yaml_paths.install()  # a YAML's relative data_path is read against the YAML's folder where the data is there

from recgoat_recbole.dataset import RecGOATDataset  # noqa: E402
from recgoat_recbole.model import RecGOAT  # noqa: E402

__version__ = "0.1.0"
PROPERTIES_DIR = os.path.join(os.path.dirname(__file__), "properties")

_registry.register_model(RecGOAT, RecGOATDataset, os.path.join(PROPERTIES_DIR, "RecGOAT.yaml"))

from recgoat_recbole.peers import register_peers  # noqa: E402  (FREEDOM, LGMRec: the multimodal peers)

register_peers()

from recgoat_recbole.aligned import aligned, model_factory  # noqa: E402  (<Backbone>+Align: the plugin)

_registry.register_factory(model_factory)

__all__ = ["RecGOAT", "RecGOATDataset", "aligned", "PROPERTIES_DIR", "__version__"]
