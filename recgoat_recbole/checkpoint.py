"""RecBole checkpoints that cannot run code when they are loaded.

RecBole 1.2.1 pickles its ``Config`` object into every checkpoint (``saved/<model>-<time>.pth``). torch's
weights-only unpickler *calls* any global on its allowlist (the ``REDUCE`` opcode), and ``Config.__init__``
``eval()``s string values, so allowing ``Config`` lets a crafted checkpoint run any command. Here nothing on the
allowlist executes code:

- :class:`StoredConfig` is a ``Config`` subclass that is only ever rebuilt from data: pickling writes
  ``NEWOBJ`` + a state of plain values (str, int, float, bool, None, list, tuple, dict and tagged markers for
  RecBole's enums, ``torch.device``, the model class *by name* and the yaml loader), and its ``__init__``
  refuses to run, so a ``REDUCE`` of it fails. Loading decodes the markers from fixed tables.
- Checkpoints written before this format (holding RecBole's own ``Config``, enums, recommender classes and
  ``yaml.loader.FullLoader`` as globals) still load: those names are mapped to stand-ins -- ``StoredConfig``
  for ``Config``, a one-argument lookup for each enum, an inert :class:`GlobalRef` for a class -- so no
  RecBole or model ``__init__`` runs; the model class is resolved by its name afterwards.
- A stored config is untrusted data. Values that some RecBole model hands to ``eval`` (``KD_DAGFM``'s
  ``teacher``) must be plain identifiers, else loading is refused.

What is still allowed (each only builds data): numpy arrays, scalars and dtypes and scipy sparse matrices
(RecBole's ItemKNN, EASE and Pop keep them in ``other_parameter``), and torch's own tensor rebuilders.
"""

from __future__ import annotations

import copyreg
import enum
import importlib
import logging
import pickle
import re
from typing import Any, Callable

from recbole.config import Config

__all__ = ["StoredConfig", "GlobalRef", "stored_config", "checkpoint_allowlist_entry", "UNSAFE_CONFIG_KEYS"]

logger = logging.getLogger(__name__)

_TAG = "__recgoat_stored__"
_ENUM_NAMES = ("ModelType", "InputType", "EvaluatorType", "FeatureType", "FeatureSource", "KGDataLoaderState")
_YAML_LOADERS = ("FullLoader", "SafeLoader", "Loader", "BaseLoader", "UnsafeLoader")
#: the loader RecBole's Config holds after ``import recgoat_recbole`` (a pickled ``Config`` names it)
_BOUNDED_LOADER = "recgoat_recbole.patches.safe_config_values.BoundedLoader"
#: config keys that a RecBole model passes to ``eval``: a stored value must be a bare identifier
UNSAFE_CONFIG_KEYS = {"teacher"}
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def _enums() -> dict[str, type]:
    from recbole.utils import enum_type

    return {name: getattr(enum_type, name) for name in _ENUM_NAMES}


class GlobalRef:
    """An inert stand-in for a class named in an old checkpoint; calling it (a ``REDUCE``) is refused."""

    __slots__ = ("qualified",)

    def __init__(self, qualified: str) -> None:
        self.qualified = qualified

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise pickle.UnpicklingError(f"refusing to call {self.qualified} while loading a checkpoint")

    def __repr__(self) -> str:
        return f"GlobalRef({self.qualified!r})"


def _resolve_model(name: str) -> type:
    from recbole.utils import get_model

    try:
        return get_model(name)
    except (ValueError, ImportError, AttributeError) as exc:
        raise pickle.UnpicklingError(f"the checkpoint's model {name!r} is not available here: {exc}") from None


def _resolve_ref(ref: GlobalRef) -> Any:
    module, _, attr = ref.qualified.rpartition(".")
    if (module.startswith("yaml") and attr in _YAML_LOADERS) or ref.qualified == _BOUNDED_LOADER:
        return _yaml_loader()  # never called from a checkpoint
    return _resolve_model(attr)


def _yaml_loader() -> type:
    """The YAML loader class a rebuilt config holds: the one RecBole's ``Config`` uses after
    ``import recgoat_recbole`` (plain data only, bounded)."""
    from recgoat_recbole.patches.safe_config_values import BoundedLoader

    return BoundedLoader


# ------------------------------------------------------------------------------------------- encoding
def _encode(value: Any, path: str) -> Any:
    import numpy as np
    import torch
    from recbole.model.abstract_recommender import AbstractRecommender

    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, enum.Enum) and _enums().get(type(value).__name__) is type(value):
        return {_TAG: "enum", "type": type(value).__name__, "name": value.name}
    if isinstance(value, torch.device):
        return {_TAG: "device", "value": str(value)}
    if isinstance(value, type):
        if issubclass(value, AbstractRecommender):
            return {_TAG: "model", "name": value.__name__}
        if value.__module__.startswith("yaml") or getattr(value, "__recgoat_yaml_loader__", False):
            return {_TAG: "yaml_loader", "name": value.__name__}
    if isinstance(value, dict):
        return {k if isinstance(k, (str, int, float, bool)) or k is None else str(k): _encode(v, f"{path}.{k}")
                for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        items = [_encode(v, f"{path}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if isinstance(value, tuple) else items
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    logger.warning(f"checkpoint config: {path} is a {type(value).__name__}; stored as its repr")
    return repr(value)


def _decode(value: Any) -> Any:
    if isinstance(value, GlobalRef):
        return _resolve_ref(value)
    if isinstance(value, dict):
        tag = value.get(_TAG)
        if tag is None:
            return {k: _decode(v) for k, v in value.items()}
        if tag == "enum" and value.get("type") in _ENUM_NAMES:
            try:
                return _enums()[value["type"]][value["name"]]
            except KeyError:
                pass
        elif tag == "device":
            import torch

            return torch.device(str(value["value"]))
        elif tag == "model":
            return _resolve_model(str(value["name"]))
        elif tag == "yaml_loader":
            return _yaml_loader()
        raise pickle.UnpicklingError(f"unknown stored config value {value!r}")
    if isinstance(value, list):
        return [_decode(v) for v in value]
    if isinstance(value, tuple):
        return tuple(_decode(v) for v in value)
    return value


def _check_unsafe_values(state: dict) -> None:
    for part in ("final_config_dict", "internal_config_dict", "external_config_dict", "file_config_dict",
                 "variable_config_dict", "cmd_config_dict"):
        values = state.get(part) or {}
        if not isinstance(values, dict):
            raise pickle.UnpicklingError(f"stored config: {part} must be a dict, got {type(values).__name__}")
        for key in UNSAFE_CONFIG_KEYS & set(values):
            if not (isinstance(values[key], str) and _IDENTIFIER.match(values[key])):
                raise pickle.UnpicklingError(
                    f"refusing checkpoint: config key {key!r} = {values[key]!r} would be passed to eval() by "
                    "RecBole; only a plain identifier is accepted"
                )


class StoredConfig(Config):
    """A RecBole ``Config`` rebuilt from plain data; it behaves exactly as the ``Config`` it was made from."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:  # noqa: D107
        raise pickle.UnpicklingError(
            "StoredConfig is rebuilt from stored data only (use stored_config(config)); constructing it from "
            "arguments is refused, since Config's constructor evaluates strings"
        )

    def __reduce_ex__(self, protocol: int) -> tuple:
        return copyreg.__newobj__, (StoredConfig,), _encode(dict(self.__dict__), "config")

    def __setstate__(self, state: Any) -> None:
        if not isinstance(state, dict) or not all(isinstance(k, str) for k in state):
            raise pickle.UnpicklingError("stored config: the state must be a dict of attributes")
        decoded = _decode(state)
        _check_unsafe_values(decoded)
        self.__dict__.update(decoded)


def stored_config(config: Config) -> StoredConfig:
    """``config`` as a :class:`StoredConfig` (shares its dicts; nothing is evaluated again)."""
    out = StoredConfig.__new__(StoredConfig)
    out.__dict__.update(config.__dict__)
    return out


def _enum_lookup(cls: type) -> Callable[[Any], Any]:
    def lookup(value: Any) -> Any:
        return cls(value)  # one argument: a member lookup, never Enum's functional API

    return lookup


_LOOKUPS: dict[str, Callable[[Any], Any]] = {}
_REFS: dict[str, GlobalRef] = {}


def checkpoint_allowlist_entry(qualified: str) -> Any | None:
    """What torch's weights-only unpickler may use for the global ``qualified`` from a RecBole checkpoint:
    an object, an ``(object, name)`` stand-in, or ``None`` when it is not a config global."""
    module, _, attr = qualified.rpartition(".")
    if qualified == f"{StoredConfig.__module__}.StoredConfig":
        return StoredConfig
    if qualified == "recbole.config.configurator.Config":
        return (StoredConfig, qualified)
    if module == "recbole.utils.enum_type" and attr in _ENUM_NAMES:
        if qualified not in _LOOKUPS:
            _LOOKUPS[qualified] = _enum_lookup(_enums()[attr])
        return (_LOOKUPS[qualified], qualified)
    is_loader = (module.startswith("yaml") and attr in _YAML_LOADERS) or qualified == _BOUNDED_LOADER
    if is_loader or _is_recommender_class(module, attr):
        return (_REFS.setdefault(qualified, GlobalRef(qualified)), qualified)
    return None


def _is_recommender_class(module: str, attr: str) -> bool:
    from recbole.model.abstract_recommender import AbstractRecommender

    if not module.startswith(("recbole.model.", "recgoat_recbole.")):
        return False
    try:
        obj = getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError, ValueError):  # ValueError: a <Backbone>+Align name out of scope
        return False
    return isinstance(obj, type) and issubclass(obj, AbstractRecommender)
