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
from typing import Any, Callable, Sequence

__all__ = ["register_model", "register_factory", "recbole_model", "registered_models", "registered", "install", "ORIGINALS"]

#: what :func:`install` replaced
ORIGINALS: dict[str, Any] = {}


@dataclass(frozen=True)
class Registration:
    model_class: type
    dataset_class: type | None
    yaml_files: tuple[str, ...]
    trainer_name: str | None = None

    @property
    def yaml_file(self) -> str | None:
        """The last (highest) default YAML, if any."""
        return self.yaml_files[-1] if self.yaml_files else None


_REGISTRY: dict[str, Registration] = {}
#: callables ``name -> class | None`` that make a model on first use of its name (``<Backbone>+Align``)
_FACTORIES: list[Callable[[str], type | None]] = []


def register_model(model_class: type, dataset_class: type | None = None,
                   yaml_file: str | Sequence[str] | None = None, trainer_name: str | None = None) -> None:
    """Make ``model_class`` usable wherever RecBole takes a model name or class.

    Args:
        model_class: a RecBole recommender (subclass of ``AbstractRecommender``).
        dataset_class: the ``Dataset`` subclass ``create_dataset`` should build for it (default: RecBole's).
        yaml_file: the model's default parameters, layered like ``recbole/properties/model/<name>.yaml``; a
            list is layered in order (later files win).
        trainer_name: the model name whose RecBole trainer it uses (``NCL+Align`` trains with ``NCLTrainer``).
    """
    name = model_class.__name__
    files = tuple([yaml_file] if isinstance(yaml_file, str) else (yaml_file or ()))
    for file in files:
        if not os.path.isfile(file):
            raise FileNotFoundError(f"default config for {name} not found: {file}")
    _REGISTRY[name] = Registration(model_class, dataset_class, files, trainer_name)
    if dataset_class is not None:
        import recbole.data.dataset as dataset_module

        # create_dataset() looks up f"{config['model']}Dataset" in this module first.
        setattr(dataset_module, f"{name}Dataset", dataset_class)


def register_factory(factory: Callable[[str], type | None]) -> None:
    """Let ``factory(name)`` make (and register) a model the first time ``name`` is looked up."""
    if factory not in _FACTORIES:
        _FACTORIES.append(factory)


def registered(name: str) -> Registration | None:
    """The registration of the external model ``name``, if any (made by a factory on first use)."""
    if name not in _REGISTRY and isinstance(name, str):
        for factory in _FACTORIES:
            if factory(name) is not None:
                break
    return _REGISTRY.get(name)


def registered_models() -> dict[str, type]:
    """The external models registered so far, by name."""
    return {name: r.model_class for name, r in _REGISTRY.items()}


def _get_model(model_name: str) -> type:
    if registered(model_name) is not None:
        return _REGISTRY[model_name].model_class
    return recbole_model(model_name)


def recbole_model(model_name: str) -> type:
    """RecBole's own class named ``model_name``, or one clear ``ValueError``."""
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
    registration = registered(model)
    if registration is None or not registration.yaml_files:
        return
    # RecBole's order is overall < model < sample < dataset; re-layer the last two above our model file.
    from recbole.config import configurator

    base = os.path.join(os.path.dirname(os.path.realpath(configurator.__file__)), "..", "properties", "dataset")
    model_type = self.internal_config_dict["MODEL_TYPE"]
    for file in registration.yaml_files:
        self._update_internal_config_dict(file)
    for later in (os.path.join(base, "sample.yaml"), os.path.join(base, f"{dataset}.yaml")):
        if os.path.isfile(later):
            self._update_internal_config_dict(later)
    self.internal_config_dict["MODEL_TYPE"] = model_type


def _get_trainer(model_type: Any, model_name: str) -> type:
    registration = _REGISTRY.get(model_name)
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
