"""The dataset hook: RecGOAT's feature files load once, with the data, aligned to RecBole's ids by token.

``create_dataset(config)`` builds :class:`FeatureDataset` for ``model: RecGOAT`` (registered in
:mod:`recgoat_recbole.models`). After RecBole has loaded, filtered and remapped the atomic files, it reads

- ``item_modalities`` -- ``{name: file}``, any number of item modalities (a list ``[text, image]`` means
  MMRec's ``text_feat.npy``, ``image_feat.npy``);
- ``user_profile_feat`` -- one optional file of user-profile vectors;

and exposes ``item_features: dict[str, np.ndarray]`` ([n_items, dim_m], row 0 = padding) and
``user_features: np.ndarray | None`` ([n_users, dim], row 0 = padding). Relative paths are looked up in the
dataset folder (``data_path/dataset``) first, then in the working directory. A modality given as
``auto:col1,col2`` is the text of those columns of the dataset's ``.item`` file, encoded once with
``text_encoder`` (default: the offline MiniLM) and cached under ``feature_cache_dir``.
User profiles are attached in one place, :meth:`FeatureDataset.build`, after the split:
``user_profile_feat: auto:template[:col1,col2]`` builds the offline template profiles (not an LLM, see
:mod:`recgoat_recbole.features.profiles`) from the *training* split only, and a profile file that records
another training split's fingerprint is refused.
"""

from __future__ import annotations

import logging
import os
from functools import partial
from typing import Any

import numpy as np
from recbole.data.dataset import Dataset

from recgoat_core.feature_files import FeatureFile, FeatureFileError, align_rows, normalise_rows, read_features
from recgoat_recbole.config_check import ConfigError, config_value
from recgoat_recbole.feature_paths import modality_files, resolve_feature_path
from recgoat_recbole.features.text import cached_text_features
from recgoat_recbole.knn_cache import knn_edges

__all__ = ["FeatureDataset", "features_for_model", "FeatureContractError",
           "modality_gate"]

_TEMPLATE = "auto:template"

logger = logging.getLogger(__name__)


class FeatureContractError(ConfigError):
    """The config asks for features that the dataset handed to the model does not carry."""


def features_for_model(config, dataset) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
    """The model–dataset contract: the item modalities and user profiles that ``dataset`` carries for a model
    built from ``config``, checked against what the config asks for.

    A RecGOAT-style model reads ``dataset.item_features`` (``{modality: [n_items, dim]}``) and
    ``dataset.user_features`` (``[n_users, dim]`` or ``None``), which :class:`FeatureDataset` sets -- the item
    features when it loads, the profiles in :meth:`FeatureDataset.build` (so the model must get a built split,
    as RecBole's ``train_data.dataset``). With ``id_only`` nothing is read. Otherwise every configured modality
    must be there, and configured profiles too: a plain RecBole ``Dataset`` (or an unbuilt one) is one clear
    error instead of a model that silently ignores the features.
    """
    if config["id_only"]:
        return {}, None
    wanted = set(modality_files(config["item_modalities"]))
    items = getattr(dataset, "item_features", None)
    how = (f"build the dataset with recbole's create_dataset(config) for model {config['model']!r}, which makes "
           f"a FeatureDataset, and pass the model a built split (train_data.dataset)")
    if wanted and items is None:
        raise FeatureContractError(f"item_modalities {sorted(wanted)} are configured but the dataset "
                                   f"({type(dataset).__name__}) loaded no features: {how}")
    items = dict(items or {})
    if set(items) != wanted:
        raise FeatureContractError(f"the dataset carries modalities {sorted(items)} but item_modalities asks for "
                                   f"{sorted(wanted)}: {how}")
    users = getattr(dataset, "user_features", None)
    if config["user_profile_feat"] and users is None:
        raise FeatureContractError(f"user_profile_feat is configured but the dataset carries no user profiles "
                                   f"(they are attached by FeatureDataset.build()): {how}")
    return items, users


class FeatureDataset(Dataset):
    """RecBole's general ``Dataset`` plus the LM feature matrices RecGOAT needs (see the module docstring)."""

    item_features: dict[str, np.ndarray]
    user_features: np.ndarray | None

    def _feature_path(self, spec: str) -> str:
        """A feature file for ``spec``: a path, or ``auto:col1,col2`` = text of those ``.item`` columns."""
        if isinstance(spec, str) and spec.startswith("auto:"):
            columns = [c.strip() for c in spec[len("auto:"):].split(",") if c.strip()]
            item_file = os.path.join(self.config["data_path"], f"{self.dataset_name}.item")
            if not columns or not os.path.isfile(item_file):
                raise FeatureFileError(f"{spec!r} needs item columns and the item file {item_file}")
            cache = os.path.join(self.config["feature_cache_dir"] or "recgoat_cache", self.dataset_name)
            return cached_text_features(item_file, columns, cache, self.config["text_encoder"])
        return resolve_feature_path(spec, self.config["data_path"])

    def _from_scratch(self) -> None:
        super()._from_scratch()
        self._load_lm_features()

    def _load_lm_features(self) -> None:
        config = self.config
        missing = config["missing_features"] or "error"
        how = config["feature_norm"] or "l2"
        self.item_features = {}
        self.user_features = None
        if config["id_only"]:  # the model ignores every feature file: do not read or build any
            return
        for name, file in modality_files(config["item_modalities"]).items():
            data = read_features(self._feature_path(file))
            path = data.path
            aligned = align_rows(data, self.field2id_token[self.iid_field], missing, "item")
            del data  # the file's own rows: one copy of the matrix less while it is normalised (in place)
            self.item_features[name] = normalise_rows(aligned, how, path, out=aligned)
            logger.info(f"modality {name!r}: {path} -> {aligned.shape} aligned by item token")

    def _set_user_features(self, targets: list, data: FeatureFile, missing: str) -> None:
        aligned = align_rows(data, self.field2id_token[self.uid_field], missing, "user")
        features = normalise_rows(aligned, self.config["feature_norm"] or "l2", data.path, out=aligned)
        for target in targets:
            target.user_features = features
        logger.info(f"user profiles: {data.path} -> {aligned.shape} aligned by user token")

    def build(self) -> list:
        """RecBole's split; then the user profiles (``user_profile_feat``), the one place they are attached,
        set on every split. Profiles must come from the *training* split only: ``auto:template[:cols]`` builds
        them from it (users without training items get a zero row); a profile file that records the
        fingerprint of another training split (another seed, ratio or filtering: this run's validation or
        test items could be in it) is refused."""
        datasets = super().build()
        spec = self.config["user_profile_feat"]
        for split in datasets:
            split.user_features = None
        if not spec or self.config["id_only"]:
            return datasets
        from recgoat_recbole.features.profiles import split_fingerprint

        fingerprint = split_fingerprint(datasets[0])
        if str(spec).startswith(_TEMPLATE):
            from recgoat_recbole.features.profiles import cached_template_profiles

            columns = [c for c in str(spec)[len(_TEMPLATE):].lstrip(":").split(",") if c]
            item_file = os.path.join(self.config["data_path"], f"{self.dataset_name}.item")
            if not os.path.isfile(item_file):
                raise FeatureFileError(f"{spec!r} needs the item file {item_file}")
            if not columns:  # every column of the item file but the item id, in the file's order
                with open(item_file, encoding="utf-8") as f:
                    header = [field.split(":")[0] for field in f.readline().rstrip("\n").split("\t")]
                columns = [c for c in header if c != self.iid_field]
            cache = os.path.join(self.config["feature_cache_dir"] or "recgoat_cache", self.dataset_name)
            path = cached_template_profiles(datasets[0], item_file, columns, cache, self.config["text_encoder"])
            self._set_user_features(datasets, read_features(path), "zero")
            return datasets
        data = read_features(self._feature_path(spec))
        if data.split is None:
            logger.warning(f"{data.path} does not record which training split its profiles came from: make sure "
                           "no validation or test interaction went into them (`recgoat features profiles` records it)")
        elif data.split != fingerprint:
            raise FeatureFileError(
                f"{data.path}: these user profiles were built from another training split (fingerprint "
                f"{data.split[:12]}, this run's is {fingerprint[:12]}), so this run's validation or test items "
                "may be in them; rebuild them with `recgoat features profiles` and this run's config"
            )
        self._set_user_features(datasets, data, self.config["missing_features"] or "error")
        return datasets


def _gate_knn(config, name: str, features: "torch.Tensor", k: int, chunk_size: int,
              queries: "torch.Tensor | None" = None, symmetric: bool = True) -> "torch.Tensor":
    """The lift's kNN graph (:func:`recgoat_core.feature_signal.cooccurrence_lift`) through the run's kNN cache."""
    # (the rows are the items with training interactions: row 0 is an item, not RecBole's padding row)
    return knn_edges(config, features, k, "item", name, skip_first=False, queries=queries, symmetric=symmetric)


def modality_gate(config, features: "dict[str, Any]", dataset, owner: str) -> dict[str, float]:
    """``align_gate``: weight 1 for each modality whose co-occurrence lift on the training split
    (:func:`recgoat_core.feature_signal.cooccurrence_lift`) reaches ``align_gate_min_lift``, else 0 (its
    alignment terms off); every weight 1 when the gate is off. Each decision is logged."""
    if not config["align_gate"]:
        return {m: 1.0 for m in features}
    from recgoat_core.feature_signal import cooccurrence_lift

    inter = dataset.inter_feat
    users, items = inter[dataset.uid_field], inter[dataset.iid_field]
    threshold = float(config["align_gate_min_lift"])
    weights = {}
    for m, x in sorted(features.items()):
        knn = partial(_gate_knn, config, f"{m}, items with training interactions")
        lift = cooccurrence_lift(x, users, items, k=config["knn_k"] or 10, chunk_size=config["knn_chunk_size"] or 2048,
                                 knn=knn)
        weights[m] = 1.0 if lift >= threshold else 0.0
        if weights[m]:
            logger.info(f"{owner}: modality {m!r} co-occurrence lift {lift:.2f} (≥ {threshold:g}): aligned")
        else:  # on the console: the features of this modality no longer shape the model
            logger.warning(f"{owner}: modality {m!r} is not aligned: its co-occurrence lift on the training split is "
                           f"{lift:.2f} < align_gate_min_lift {threshold:g} (items its features call similar are "
                           "not picked by the same users much more than chance); set align_gate: false to align "
                           "it anyway")
    if weights and not any(weights.values()) and config_value(config, "fusion_gamma") == 0:
        logger.warning(f"{owner}: no modality is aligned and fusion_gamma is 0, so the features reach no warm "
                       "item's score: on warm items this run is its ID model alone; set align_gate: false or "
                       "fusion_gamma > 0 to use them")
    return weights
