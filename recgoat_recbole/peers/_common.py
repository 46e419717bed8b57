"""What the multimodal peers (FREEDOM, LGMRec) share: the model–dataset contract and the training pairs;
with RecGOAT, the CSR graph buffers (:mod:`recgoat_recbole.graph_buffers`) and the parameter-keyed evaluation
cache (:mod:`recgoat_recbole.scoring`).

Nothing here builds a graph or reads a feature file: the features come from
:func:`recgoat_recbole.dataset.features_for_model` (rows aligned to RecBole's item ids by token, normalised by
``feature_norm``) and the graphs from :mod:`recgoat_core.graphs`.
"""

from __future__ import annotations

import logging
from typing import Any, Mapping

import numpy as np
import torch
from recbole.model.abstract_recommender import GeneralRecommender
from recbole.utils import InputType

from recgoat_recbole.config_check import ConfigError, validate
from recgoat_recbole.dataset import FeatureContractError, features_for_model
from recgoat_recbole.graph_buffers import GraphBuffers
from recgoat_recbole.keys import rules
from recgoat_recbole.scoring import CachedScoring

__all__ = ["MultimodalPeer"]

logger = logging.getLogger(__name__)


class MultimodalPeer(CachedScoring, GraphBuffers, GeneralRecommender):
    """Base of the peers: PAIRWISE input (BPR), the item features of the dataset, and cached eval embeddings.

    A subclass implements :meth:`scoring_embeddings` (all users' and items' scoring vectors, deterministic)
    and ``calculate_loss`` (which may call :meth:`_invalidate` to free the cached vectors).
    """

    input_type = InputType.PAIRWISE
    def __init__(self, config, dataset) -> None:
        super().__init__(config, dataset)
        validate(config, rules(type(self).__name__))  # its keys (recgoat_recbole.keys) in range

    # ------------------------------------------------------------------------------------------ set-up
    def _item_features(self, config, dataset) -> dict[str, torch.Tensor]:
        """The configured item modalities, as float32 tensors [n_items, dim_m] (row = RecBole item id); one
        clear error when there is none (these models are defined by their item features)."""
        name = type(self).__name__
        if config["id_only"]:
            raise ConfigError(f"{name} is a multimodal model: id_only: true leaves it no item features "
                              f"(train LightGCN for an ID-only model)")
        features, profiles = features_for_model(config, dataset)  # the model–dataset contract
        if not features:
            raise FeatureContractError(
                f"{name} needs item features: set item_modalities ({{name: file}}, e.g. "
                f"{{text: text.npz, image: image.npz}}, or [text, image] for MMRec's <name>_feat.npy) in the "
                f"config; the dataset {config['dataset']!r} has none configured")
        if profiles is not None:
            logger.warning(f"{name} does not use user profiles: user_profile_feat is ignored")
        out = {}
        for modality in sorted(features):
            x = torch.as_tensor(np.asarray(features[modality]), dtype=torch.float32)
            if x.ndim != 2 or len(x) != self.n_items:
                raise FeatureContractError(f"modality {modality!r}: expected [{self.n_items}, dim] features, "
                                           f"got {tuple(x.shape)}")
            out[modality] = x
        return out

    def _training_pairs(self, dataset) -> tuple[torch.Tensor, torch.Tensor]:
        """The training split's distinct (user, item) pairs (a binary interaction matrix, as MMRec's)."""
        inter = dataset.inter_feat
        users = inter[dataset.uid_field].long()
        items = inter[dataset.iid_field].long()
        pairs = torch.unique(users * self.n_items + items)
        return pairs // self.n_items, pairs % self.n_items
