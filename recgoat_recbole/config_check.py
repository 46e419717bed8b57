"""Checks of config values: a :class:`Rule` per key (its type and allowed range), run when a model is built, so
a bad value is one clear error naming the key -- not a division by zero at the first step, nor a silently
ignored setting. The keys and their rules are declared in :mod:`recgoat_recbole.keys`; RecBole's own keys that
every run reads are :data:`RUN_RULES` here."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping

__all__ = ["ConfigError", "Rule", "integer", "number", "choice", "BOOL", "POSITIVE", "WEIGHT", "PROB", "RUN_RULES",
           "validate", "validate_run", "check_value_lists", "config_value"]


class ConfigError(ValueError):
    """A config value outside its allowed range; the message names the key, the range and the value."""


@dataclass(frozen=True)
class Rule:
    """What a config value may be; :meth:`describe` says it in words, :meth:`ok` checks a value."""

    kind: str  # "int" | "float" | "bool" | "choice"
    low: float | None = None
    high: float | None = None
    low_open: bool = False  # low < x instead of low <= x
    high_open: bool = False
    choices: tuple = ()
    optional: bool = False  # None allowed
    strict: bool = False  # "int": an int itself, not a float such as 1e1 (RecBole's loops need one)
    many: bool = False  # also a non-empty list of such values (RecBole's topk)

    def describe(self) -> str:
        if self.kind == "bool":
            text = "true or false"
        elif self.kind == "choice":
            text = "one of " + ", ".join(map(str, self.choices))
        else:
            noun = "an integer" if self.kind == "int" else "a number"
            bounds = []
            if self.low is not None:
                bounds.append(f"{'>' if self.low_open else '≥'} {self.low:g}")
            if self.high is not None:
                bounds.append(f"{'<' if self.high_open else '≤'} {self.high:g}")
            text = noun + (" " + " and ".join(bounds) if bounds else "")
        if self.many:
            text += ", or a non-empty list of them"
        return text + (" (or ~ for none)" if self.optional else "")

    def ok(self, value: Any) -> bool:
        if value is None:
            return self.optional
        if self.many and isinstance(value, (list, tuple)):
            return bool(value) and all(self.ok(v) for v in value)
        if self.strict and self.kind == "int" and (isinstance(value, bool) or not isinstance(value, int)):
            return False
        if self.kind == "bool":
            return isinstance(value, bool)
        if self.kind == "choice":
            return value in self.choices
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return False
        if self.kind == "int" and not float(value).is_integer():
            return False
        if not math.isfinite(float(value)):
            return False
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return False
        if self.high is not None and (value >= self.high if self.high_open else value > self.high):
            return False
        return True


def integer(low: float | None = None, **kw: Any) -> Rule:
    """An integer ≥ ``low`` (options: see :class:`Rule`)."""
    return Rule("int", low, **kw)


def number(low: float | None = None, high: float | None = None, **kw: Any) -> Rule:
    """A finite number in [``low``, ``high``] (options: see :class:`Rule`)."""
    return Rule("float", low, high, **kw)


def choice(*choices: Any) -> Rule:
    """One of ``choices``."""
    return Rule("choice", choices=choices)


BOOL = Rule("bool")
POSITIVE = number(0, low_open=True)
WEIGHT = number(0)  # a loss weight: 0 turns the term off, a negative one would flip it
PROB = number(0, 1, high_open=True)

#: RecBole's own keys that every run reads (any model): checked by :func:`validate_run` before the run starts,
#: so ``epochs: -1`` is not a test of an untrained model, ``train_batch_size: 0`` not a run that trains anyway,
#: and ``epochs: 1e1`` or ``seed: abc`` not a traceback from inside RecBole
RUN_RULES: dict[str, Rule] = {
    "epochs": integer(1, strict=True),
    "train_batch_size": integer(1, strict=True),
    "eval_batch_size": integer(1, strict=True),
    "learning_rate": number(0, low_open=True, optional=True),
    "weight_decay": number(0, optional=True),
    "seed": integer(strict=True),
    "stopping_step": integer(0, strict=True),
    "eval_step": integer(0, strict=True),
    "topk": integer(1, strict=True, many=True),
    "embedding_size": integer(1, strict=True, optional=True),  # ~: a model without embeddings (Pop, ItemKNN)
    "worker": integer(0, strict=True),
}


def validate_run(config: Mapping[str, Any] | Any) -> None:
    """Check what every run needs, before anything is read or trained: :data:`RUN_RULES`, a dataset name that
    is a plain folder name (it becomes part of RecBole's log and checkpoint paths), and a dataset folder that
    exists (RecBole would otherwise try to download a dataset of that name). Raises :class:`ConfigError`."""
    import difflib
    import os

    validate(config, RUN_RULES)
    dataset = config_value(config, "dataset")
    if not isinstance(dataset, str) or not dataset.strip() or dataset in (".", "..") or any(
            sep in dataset for sep in ("/", "\\", "\0")):
        raise ConfigError(f"dataset name {dataset!r} must be a plain folder name (no path separators); put the "
                          "folder that holds it in data_path")
    folder = config_value(config, "data_path")  # RecBole's data_path/dataset
    if isinstance(folder, str) and not os.path.isdir(folder):
        parent = os.path.dirname(os.path.normpath(folder))
        names = sorted(n for n in os.listdir(parent) if os.path.isdir(os.path.join(parent, n))) if os.path.isdir(
            parent) else []
        close = difflib.get_close_matches(dataset, names, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else (f"; {parent} holds {', '.join(names[:8])}" if names
                                                               else "")
        raise ConfigError(f"dataset {dataset!r} not found: no folder {folder}{hint}")


def validate(config: Mapping[str, Any] | Any, rules: Mapping[str, Rule]) -> None:
    """Raise :class:`ConfigError` for the first key of ``rules`` whose value in ``config`` is out of range.

    ``config`` is a RecBole ``Config`` or a dict; a key it does not hold is skipped (its default applies).
    """
    for key, rule in rules.items():
        try:
            value = config[key]
        except KeyError:
            continue
        if not rule.ok(value):
            raise ConfigError(f"config key {key!r} must be {rule.describe()}, got {value!r}{_grid_hint(value)}")
    dim, heads = config_value(config, "embedding_size"), config_value(config, "gat_heads")
    if isinstance(dim, int) and isinstance(heads, int) and heads > 0 and dim % heads:
        raise ConfigError(f"config key 'gat_heads' must divide embedding_size ({dim}), got {heads}")


def _grid_hint(value: Any) -> str:
    return (" (a list of values is a grid, as in MMRec's configs: put it in a grid file for `recgoat tune --grid`)"
            if isinstance(value, (list, tuple)) and len(value) > 1 else "")


def check_value_lists(config: Any) -> None:
    """One :class:`ConfigError` for a key you set to a list of values (MMRec's grid syntax,
    ``reg_weight: [0.0, 1e-05]``) where the run's default is one number: RecBole would pass the list on."""
    internal = getattr(config, "internal_config_dict", None) or {}
    for part in ("file_config_dict", "variable_config_dict", "cmd_config_dict"):
        for key, value in (getattr(config, part, None) or {}).items():
            default = internal.get(key)
            if isinstance(value, (list, tuple)) and len(value) > 1 and isinstance(default, (int, float)) and \
                    not isinstance(default, bool):
                raise ConfigError(f"config key {key!r} must be one number, got {value!r}{_grid_hint(value)}")


def config_value(config: Mapping[str, Any] | Any, key: str) -> Any:
    """``config[key]``, or ``None`` when ``config`` (a RecBole ``Config`` or a dict) does not hold the key."""
    try:
        return config[key]
    except KeyError:
        return None
