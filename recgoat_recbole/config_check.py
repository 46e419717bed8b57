"""Validation of RecGOAT's config keys: every key with its type and allowed range, checked when the model is
built, so a bad value is one clear error naming the key -- not a division by zero at the first step, nor a
silently ignored setting. The rules mirror docs/config.md."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping

__all__ = ["ConfigError", "RULES", "RUN_RULES", "validate", "validate_run"]


class ConfigError(ValueError):
    """A config value outside its allowed range; the message names the key, the range and the value."""


@dataclass(frozen=True)
class _Rule:
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


def _int(low: float | None = None, **kw: Any) -> _Rule:
    return _Rule("int", low, **kw)


def _num(low: float | None = None, high: float | None = None, **kw: Any) -> _Rule:
    return _Rule("float", low, high, **kw)


_BOOL = _Rule("bool")
_POSITIVE = _num(0, low_open=True)
_WEIGHT = _num(0)  # a loss weight: 0 turns the term off, a negative one would flip it
_PROB = _num(0, 1, high_open=True)

RULES: dict[str, _Rule] = {
    "embedding_size": _int(1),
    "n_layers": _int(0),
    "reg_weight": _WEIGHT,
    "use_rating_weights": _BOOL,
    "rating_temperature": _POSITIVE,
    "id_ssl_weight": _WEIGHT,
    "id_ssl_temperature": _POSITIVE,
    "id_ssl_drop_ratio": _PROB,
    "feature_norm": _Rule("choice", choices=("l2", "standard", "none")),
    "missing_features": _Rule("choice", choices=("error", "zero")),
    "knn_k": _int(0),
    "knn_chunk_size": _int(1),
    "use_gat": _BOOL,
    "item_graph_layers": _int(0),
    "gat_layers": _int(0),
    "gat_heads": _int(1),
    "gat_dropout": _PROB,
    "use_user_graph": _BOOL,
    "user_knn_k": _int(0),
    "user_profile_weight": _WEIGHT,
    "use_oat": _BOOL,
    "oat_epsilon": _POSITIVE,
    "oat_cost_scale": _POSITIVE,
    "oat_iters": _int(1),
    "oat_scale_plan": _BOOL,
    "oat_residual_init": _Rule("choice", choices=("zeros", "xavier")),
    "oat_plan_grad": _BOOL,
    "cmcl_weight": _WEIGHT,
    "cmcl_temperature": _POSITIVE,
    "cmcl_max_items": _int(1, optional=True),
    "wasserstein_weight": _WEIGHT,
    "wasserstein_epsilon": _POSITIVE,
    "wasserstein_iters": _int(1),
    "wasserstein_sample_size": _int(1),
    "align_detach_target": _BOOL,
    "align_gate": _BOOL,
    "align_gate_min_lift": _num(1.0),
    "match_scale": _BOOL,
    "fusion": _Rule("choice", choices=("fixed", "learned", "sum", "concat")),
    "align_target": _Rule("choice", choices=("output", "embedding")),
    "align_gate_fallback": _Rule("choice", choices=("none", "embedding")),
    "fusion_gamma": _num(0, 1, optional=True),
    "fusion_norm": _Rule("choice", choices=("none", "layernorm", "l2")),
    "fusion_dropout": _PROB,
    "cold_items_from_features": _BOOL,
    "id_only": _BOOL,
}


#: RecBole's own keys that every run reads (any model): checked by :func:`validate_run` before the run starts,
#: so ``epochs: -1`` is not a test of an untrained model, ``train_batch_size: 0`` not a run that trains anyway,
#: and ``epochs: 1e1`` or ``seed: abc`` not a traceback from inside RecBole
RUN_RULES: dict[str, _Rule] = {
    "epochs": _int(1, strict=True),
    "train_batch_size": _int(1, strict=True),
    "eval_batch_size": _int(1, strict=True),
    "learning_rate": _num(0, low_open=True, optional=True),
    "weight_decay": _num(0, optional=True),
    "seed": _int(strict=True),
    "stopping_step": _int(0, strict=True),
    "eval_step": _int(0, strict=True),
    "topk": _int(1, strict=True, many=True),
    "embedding_size": _int(1, strict=True, optional=True),  # ~: a model without embeddings (Pop, ItemKNN)
    "worker": _int(0, strict=True),
}


def validate_run(config: Mapping[str, Any] | Any) -> None:
    """Check what every run needs, before anything is read or trained: :data:`RUN_RULES`, a dataset name that
    is a plain folder name (it becomes part of RecBole's log and checkpoint paths), and a dataset folder that
    exists (RecBole would otherwise try to download a dataset of that name). Raises :class:`ConfigError`."""
    import difflib
    import os

    validate(config, RUN_RULES)
    dataset = _get(config, "dataset")
    if not isinstance(dataset, str) or not dataset.strip() or dataset in (".", "..") or any(
            sep in dataset for sep in ("/", "\\", "\0")):
        raise ConfigError(f"dataset name {dataset!r} must be a plain folder name (no path separators); put the "
                          "folder that holds it in data_path")
    folder = _get(config, "data_path")  # RecBole's data_path/dataset
    if isinstance(folder, str) and not os.path.isdir(folder):
        parent = os.path.dirname(os.path.normpath(folder))
        names = sorted(n for n in os.listdir(parent) if os.path.isdir(os.path.join(parent, n))) if os.path.isdir(
            parent) else []
        close = difflib.get_close_matches(dataset, names, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else (f"; {parent} holds {', '.join(names[:8])}" if names
                                                               else "")
        raise ConfigError(f"dataset {dataset!r} not found: no folder {folder}{hint}")


def validate(config: Mapping[str, Any] | Any, rules: Mapping[str, _Rule] = RULES) -> None:
    """Raise :class:`ConfigError` for the first key of ``rules`` whose value in ``config`` is out of range.

    ``config`` is a RecBole ``Config`` or a dict; a key it does not hold is skipped (its default applies).
    """
    for key, rule in rules.items():
        try:
            value = config[key]
        except KeyError:
            continue
        if not rule.ok(value):
            raise ConfigError(f"config key {key!r} must be {rule.describe()}, got {value!r}")
    dim, heads = _get(config, "embedding_size"), _get(config, "gat_heads")
    if isinstance(dim, int) and isinstance(heads, int) and heads > 0 and dim % heads:
        raise ConfigError(f"config key 'gat_heads' must divide embedding_size ({dim}), got {heads}")


def _get(config: Any, key: str) -> Any:
    try:
        return config[key]
    except KeyError:
        return None
