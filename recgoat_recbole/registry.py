"""The model registry: external models usable wherever RecBole takes a model name or class.

``run_recbole`` and ``load_data_and_model`` resolve a model with
``recbole.utils.get_model(name)``, which only searches ``recbole.model.*``; ``Config`` only loads
``recbole/properties/model/<name>.yaml``; ``create_dataset`` only looks in ``recbole.data.dataset``.
:func:`register_model` puts an external class (and optionally its dataset class and default YAML) in a
registry that a wrapped ``get_model`` consults first. The model's YAML is layered exactly where RecBole
layers its own model YAMLs (after ``overall.yaml``, before the dataset YAML, below the user's files and
dict).

This is part of the adapter, not a version fix: RecBole 1.2.1 has no registry to extend by subclassing, so
:func:`install` wraps its ``get_model`` and ``Config._load_internal_config_dict`` (the originals are kept in
:data:`ORIGINALS`). ``import recgoat_recbole`` installs it once.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

__all__ = ["register_model", "registered_models", "registered", "install", "ORIGINALS"]

#: what :func:`install` replaced
ORIGINALS: dict[str, Any] = {}


@dataclass(frozen=True)
class Registration:
    model_class: type
    dataset_class: type | None
    yaml_file: str | None


_REGISTRY: dict[str, Registration] = {}


def register_model(model_class: type, dataset_class: type | None = None, yaml_file: str | None = None) -> None:
    """Make ``model_class`` usable wherever RecBole takes a model name or class.

    Args:
        model_class: a RecBole recommender (subclass of ``AbstractRecommender``).
        dataset_class: the ``Dataset`` subclass ``create_dataset`` should build for it (default: RecBole's).
        yaml_file: the model's default parameters, layered like ``recbole/properties/model/<name>.yaml``.
    """
    name = model_class.__name__
    if yaml_file is not None and not os.path.isfile(yaml_file):
        raise FileNotFoundError(f"default config for {name} not found: {yaml_file}")
    _REGISTRY[name] = Registration(model_class, dataset_class, yaml_file)
    if dataset_class is not None:
        import recbole.data.dataset as dataset_module

        # create_dataset() looks up f"{config['model']}Dataset" in this module first.
        setattr(dataset_module, f"{name}Dataset", dataset_class)


def registered(name: str) -> Registration | None:
    """The registration of the external model ``name``, if any."""
    return _REGISTRY.get(name)


def registered_models() -> dict[str, type]:
    """The external models registered so far, by name."""
    return {name: r.model_class for name, r in _REGISTRY.items()}


def _get_model(model_name: str) -> type:
    if model_name in _REGISTRY:
        return _REGISTRY[model_name].model_class
    try:
        return ORIGINALS["get_model"](model_name)
    except (ValueError, AttributeError, ImportError) as exc:
        # RecBole's search imports recbole.model.exlib_recommender last, which needs lightgbm/xgboost
        why = f" (while searching: {exc})" if isinstance(exc, ImportError) else ""
        raise ValueError(
            f"unknown model {model_name!r}: it is neither a RecBole 1.2.1 model nor a registered one "
            f"({', '.join(sorted(_REGISTRY)) or 'none registered'}){why}"
        ) from None


def _load_internal_config_dict(self: Any, model: str, model_class: type, dataset: str) -> None:
    ORIGINALS["_load_internal_config_dict"](self, model, model_class, dataset)
    registration = _REGISTRY.get(model)
    if registration is None or registration.yaml_file is None:
        return
    # RecBole's order is overall < model < sample < dataset; re-layer the last two above our model file.
    from recbole.config import configurator

    base = os.path.join(os.path.dirname(os.path.realpath(configurator.__file__)), "..", "properties", "dataset")
    model_type = self.internal_config_dict["MODEL_TYPE"]
    self._update_internal_config_dict(registration.yaml_file)
    for later in (os.path.join(base, "sample.yaml"), os.path.join(base, f"{dataset}.yaml")):
        if os.path.isfile(later):
            self._update_internal_config_dict(later)
    self.internal_config_dict["MODEL_TYPE"] = model_type


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
    })
    for module in (utils_mod, recbole.utils, configurator, qs):
        module.get_model = _get_model
    configurator.Config._load_internal_config_dict = _load_internal_config_dict
