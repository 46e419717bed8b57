"""The model registry: external models usable wherever RecBole takes a model name or class.

``run_recbole`` and ``load_data_and_model`` resolve a model with
``recbole.utils.get_model(name)``, which only searches ``recbole.model.*``; ``Config`` only loads
``recbole/properties/model/<name>.yaml``; ``create_dataset`` only looks in ``recbole.data.dataset``.
:func:`register_model` puts an external class (and optionally its dataset class and defaults) in a
registry that a wrapped ``get_model`` consults first. The model's defaults (a dict or a YAML file) are layered exactly where RecBole
layers its own model YAMLs (after ``overall.yaml``, before the dataset YAML, below the user's files and
dict).

RecBole 1.2.1 has no registry to extend by subclassing: the patch
:mod:`recgoat_recbole.patches.model_lookup` (one row of the patch table) makes RecBole's ``get_model``,
``get_trainer`` and ``Config._load_internal_config_dict`` consult this registry; ``import recgoat_recbole``
applies it once.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Callable, Sequence

__all__ = ["register_model", "register_factory", "registered_models", "registered", "Registration"]


@dataclass(frozen=True)
class Registration:
    model_class: type
    dataset_class: type | None
    #: the model's defaults, lowest first: a YAML file's path, a dict (:func:`recgoat_recbole.keys.defaults`) or
    #: a callable ``your_configs -> [path | dict, ...]`` (RecGOAT: its backbone's YAML, named in your configs)
    defaults: tuple[str | dict | Callable[[dict], list], ...]
    trainer_name: str | None = None
    #: the trainer class itself, where it depends on the built model (RecGOAT: its backbone's trainer)
    trainer_class: type | None = None


_REGISTRY: dict[str, Registration] = {}
#: callables ``name -> class | None`` that make a model on first use of its name (``<Backbone>+Align``)
_FACTORIES: list[Callable[[str], type | None]] = []


def register_model(model_class: type, dataset_class: type | None = None,
                   defaults: str | dict | Callable | Sequence[str | dict | Callable] | None = None,
                   trainer_name: str | None = None, trainer_class: type | None = None) -> None:
    """Make ``model_class`` usable wherever RecBole takes a model name or class.

    Args:
        model_class: a RecBole recommender (subclass of ``AbstractRecommender``).
        dataset_class: the ``Dataset`` subclass ``create_dataset`` should build for it (default: RecBole's).
        defaults: the model's default parameters, layered like ``recbole/properties/model/<name>.yaml``: a
            dict or a YAML file, or a list of them layered in order (later ones win); a callable layer maps the
            user's configs (dict, files, command line) to such a list, when a ``Config`` is built.
        trainer_name: the model name whose RecBole trainer it uses (``NCL+Align`` trains with ``NCLTrainer``).
        trainer_class: what ``get_trainer`` returns for the model (``trainer_class(config, model)``).
    """
    name = model_class.__name__
    single = isinstance(defaults, (str, dict)) or callable(defaults)
    layers = tuple([defaults] if single else (defaults or ()))
    for layer in layers:
        if isinstance(layer, str) and not os.path.isfile(layer):
            raise FileNotFoundError(f"default config for {name} not found: {layer}")
    _REGISTRY[name] = Registration(model_class, dataset_class, layers, trainer_name, trainer_class)
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
