"""The models this package adds to RecBole, registered by name (``import recgoat_recbole`` imports this).

Each is a RecBole general recommender with :class:`~recgoat_recbole.dataset.FeatureDataset` (the dataset of
every model that reads feature files) and its defaults from :mod:`recgoat_recbole.keys`, layered where RecBole
layers its own model YAMLs: RecGOAT (on the backbone your config names, with that backbone's YAML), the peers FREEDOM and LGMRec, and ``<Backbone>+Align``, made on
first use of the name (:func:`recgoat_recbole.aligned.aligned`).
"""

from __future__ import annotations

from recgoat_recbole import registry
from recgoat_recbole.aligned import aligned, model_factory
from recgoat_recbole.dataset import FeatureDataset
from recgoat_recbole.keys import defaults
from recgoat_recbole.model import BackboneTrainer, RecGOAT, recgoat_defaults
from recgoat_recbole.peers.freedom import FREEDOM
from recgoat_recbole.peers.lgmrec import LGMRec

__all__ = ["RecGOAT", "FREEDOM", "LGMRec", "FeatureDataset", "aligned", "PEER_MODELS"]

#: the multimodal peers
PEER_MODELS = ("FREEDOM", "LGMRec")

# RecGOAT: its backbone's RecBole YAML with its own keys (which backbone: your configs), its backbone's trainer
registry.register_model(RecGOAT, FeatureDataset, recgoat_defaults, trainer_class=BackboneTrainer)
for _model in (FREEDOM, LGMRec):
    registry.register_model(_model, FeatureDataset, defaults(_model.__name__))
registry.register_factory(model_factory)
