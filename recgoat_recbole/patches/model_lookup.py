"""``model_lookup`` -- RecBole finds models, trainers and model YAMLs through the registry.

RecBole 1.2.1's ``get_model(name)`` searches only ``recbole.model.*``, ``get_trainer`` only RecBole's trainers,
and ``Config`` loads only ``recbole/properties/model/<name>.yaml``. :func:`install` makes each consult
:mod:`recgoat_recbole.registry` first (a registered name, or a ``<Backbone>+Align`` made on first use), and
layers a registered model's defaults (dicts from :mod:`recgoat_recbole.keys`, YAML files, or a callable that picks
them from the user's configs: RecGOAT's backbone) exactly where RecBole layers its own (after ``overall.yaml``, before the
dataset YAML, below the user's files and dict). A name nobody registered is RecBole's, unchanged.
"""

from __future__ import annotations

import difflib
import os
from typing import Any

from recgoat_recbole.registry import _REGISTRY, registered

__all__ = ["recbole_model", "install", "ORIGINALS"]

#: what :func:`install` replaced (RecBole's own functions)
ORIGINALS: dict[str, Any] = {}


def _get_model(model_name: str) -> type:
    if registered(model_name) is not None:
        return _REGISTRY[model_name].model_class
    return recbole_model(model_name)


def recbole_model(model_name: str) -> type:
    """RecBole's own class named ``model_name``, or one clear ``ValueError``."""
    try:
        return ORIGINALS["get_model"](model_name)
    except (ValueError, AttributeError, ImportError) as exc:
        names = known_model_names()
        if isinstance(exc, ImportError) and model_name in names:  # e.g. lightgbm, xgboost: RecBole's, not installed
            raise ValueError(f"RecBole's model {model_name!r} needs a package that is not installed ({exc})") from None
        # (RecBole's search for an unknown name ends importing recbole.model.exlib_recommender, which needs
        # lightgbm / xgboost: that ImportError says nothing about the name, so it is not shown)
        lower = {n.lower(): n for n in names}
        close = [lower[model_name.lower()]] if model_name.lower() in lower else \
            [lower[n] for n in difflib.get_close_matches(model_name.lower(), list(lower), n=3, cutoff=0.6)]
        hint = f"; did you mean {' or '.join(repr(n) for n in close)}?" if close else \
            f" (RecBole 1.2.1's models, {', '.join(sorted(_REGISTRY))} and <Backbone>+Align)"
        raise ValueError(f"unknown model {model_name!r}{hint}") from None


def known_model_names() -> list[str]:
    """Every model name a run accepts: RecBole 1.2.1's (one YAML each in ``recbole/properties/model``), the
    registered ones, and ``<Backbone>+Align`` for RecBole's general graph and embedding backbones."""
    from recgoat_recbole.registry import registered_models

    folder = os.path.join(os.path.dirname(os.path.realpath(_recbole_file())), "properties", "model")
    names = {f[:-5] for f in os.listdir(folder) if f.endswith(".yaml")} if os.path.isdir(folder) else set()
    names.update(registered_models())
    from recgoat_recbole.keys import BACKBONE_NAMES  # (the plugin's backbones)

    names.update(f"{b}+Align" for b in BACKBONE_NAMES)
    return sorted(names)


def _recbole_file() -> str:
    import recbole

    return recbole.__file__


def _load_internal_config_dict(self: Any, model: str, model_class: type, dataset: str) -> None:
    ORIGINALS["_load_internal_config_dict"](self, model, model_class, dataset)
    registration = registered(model)
    if registration is None or not registration.defaults:
        return
    # RecBole's order is overall < model < sample < dataset; re-layer the last two above our model file.
    from recbole.config import configurator

    base = os.path.join(os.path.dirname(os.path.realpath(configurator.__file__)), "..", "properties", "dataset")
    model_type = self.internal_config_dict["MODEL_TYPE"]
    layers = [part for layer in registration.defaults
              for part in (layer(self.external_config_dict) if callable(layer) else [layer])]
    for layer in layers:
        if isinstance(layer, dict):
            self.internal_config_dict.update(layer)
        else:
            self._update_internal_config_dict(layer)
    for later in (os.path.join(base, "sample.yaml"), os.path.join(base, f"{dataset}.yaml")):
        if os.path.isfile(later):
            self._update_internal_config_dict(later)
    self.internal_config_dict["MODEL_TYPE"] = model_type


def _get_trainer(model_type: Any, model_name: str) -> type:
    registration = registered(model_name)  # (a <Backbone>+Align is made on first use, here too)
    if registration is not None and registration.trainer_class is not None:
        return registration.trainer_class
    if registration is not None and registration.trainer_name:
        model_name = registration.trainer_name
    return ORIGINALS["get_trainer"](model_type, model_name)


def install() -> None:
    """Route RecBole's model lookup and model-YAML layering through the registry (once)."""
    import recbole.config.configurator as configurator
    import recbole.quick_start.quick_start as qs
    import recbole.utils
    import recbole.utils.utils as utils_mod

    if ORIGINALS:
        return
    ORIGINALS.update({
        "get_model": utils_mod.get_model,
        "_load_internal_config_dict": configurator.Config._load_internal_config_dict,
        "get_trainer": utils_mod.get_trainer,
    })
    for module in (utils_mod, recbole.utils, configurator, qs):
        module.get_model = _get_model
    for module in (utils_mod, recbole.utils, qs):
        module.get_trainer = _get_trainer
    configurator.Config._load_internal_config_dict = _load_internal_config_dict
