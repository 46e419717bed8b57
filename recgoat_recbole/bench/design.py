"""Experiment design of ``recgoat bench`` / ``recgoat demo``: which runs there are and how each is configured.

A run is a :class:`RunSpec` (dataset, model, seed, variant, YAML files, overrides). :func:`build_specs` makes one
per dataset x (model | ablation | γ) x seed; the ablations are :data:`ABLATIONS`, RecGOAT config overrides on top
of the dataset YAML. The default selection of models (:data:`DEFAULT_MODELS`) gets the multimodal peers
(:data:`MULTIMODAL_PEERS`: FREEDOM, LGMRec) on every dataset whose config has item features
(:func:`models_for_dataset`). Nothing here trains: :mod:`recgoat_recbole.bench.execute` runs the specs.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from recgoat_recbole.bench.names import ALIGN_SUFFIX, ALIGNABLE, BUILTIN_BASELINES, DEFAULT_MODELS, MULTIMODAL_PEERS

__all__ = ["RunSpec", "ABLATIONS", "BUILTIN_BASELINES", "MULTIMODAL_PEERS", "DEFAULT_MODELS", "find_config",
           "build_specs", "has_item_features", "models_for_dataset", "with_aligned"]

logger = logging.getLogger(__name__)


def _default(key: str) -> Any:
    """RecGOAT's default for ``key`` (recgoat_recbole/keys.py)."""
    from recgoat_recbole.keys import defaults

    return defaults("RecGOAT")[key]


#: every alignment term on at the paper's default weights (the full model); each ablation sets all of them, so
#: that a YAML that turns some off cannot leak into the table
_ALIGN_ON = {"cmcl_weight": _default("cmcl_weight"), "use_oat": True,
             "wasserstein_weight": _default("wasserstein_weight")}
_ALIGN_OFF = {"cmcl_weight": 0.0, "use_oat": False, "wasserstein_weight": 0.0}

#: the paper's ablation table, as RecGOAT config overrides on top of the dataset YAML
ABLATIONS: dict[str, dict[str, Any]] = {
    "ID-only (LightGCN)": {"id_only": True},
    "naive fusion: concat": {"fusion": "concat", **_ALIGN_OFF},
    "naive fusion: sum": {"fusion": "sum", **_ALIGN_OFF},
    "CMCL only": {**_ALIGN_ON, "use_oat": False, "wasserstein_weight": 0.0},
    "OAT only": {**_ALIGN_ON, "cmcl_weight": 0.0},
    "without user graph": {**_ALIGN_ON, "use_user_graph": False},
    "RecGOAT (full)": {**_ALIGN_ON, "use_user_graph": True},
}


@dataclass(frozen=True)
class RunSpec:
    dataset: str
    model: str
    seed: int
    variant: str = ""
    config_files: tuple[str, ...] = ()
    overrides: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)
    #: marks runs whose overrides come from elsewhere (``tuned``): part of the key and shown in the label
    tag: str = ""

    @property
    def key(self) -> str:
        label = f"{self.model}-{self.variant}" if self.variant else self.model
        if self.tag:
            label += f"-{self.tag}"
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in label)
        return f"{self.dataset}__{safe}__seed{self.seed}"

    @property
    def label(self) -> str:
        return (self.variant or self.model) + (f" ({self.tag})" if self.tag else "")


def config_files(value: "str | Sequence[str]") -> tuple[str, ...]:
    """A dataset's YAML files, in order (later ones win): ``--config DATASET=A.yaml,B.yaml`` gives two."""
    return (value,) if isinstance(value, str) else tuple(value)


def find_config(dataset: str) -> str:
    """A dataset's data YAML by its name: ``recbole_configs/data/<dataset>.yaml`` from the working directory, else
    from the source checkout this package runs from (an editable install: the shipped YAMLs are not installed as
    package data), else ``recgoat_data/<dataset>/<dataset>.yaml`` in the working directory (what ``recgoat data
    import SRC recgoat_data`` writes). A data YAML sets no model key, so each model runs at its defaults."""
    here = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    candidates = [os.path.join(folder, "recbole_configs", "data", f"{dataset}.yaml") for folder in (os.getcwd(), here)]
    candidates.append(os.path.join(os.getcwd(), "recgoat_data", dataset, f"{dataset}.yaml"))
    for path in candidates:
        if os.path.isfile(path):
            return path
    raise FileNotFoundError(f"no config for dataset {dataset!r}: pass --config {dataset}=FILE (looked for "
                            f"recbole_configs/data/{dataset}.yaml and recgoat_data/{dataset}/{dataset}.yaml)")


def has_item_features(config_files: Sequence[str], overrides: dict[str, Any] | None = None) -> bool:
    """Whether a run with these YAML files (later ones win) and overrides has item features: a non-empty
    ``item_modalities`` and no ``id_only: true``."""
    import yaml

    merged: dict[str, Any] = {}
    for path in config_files:
        with open(path, encoding="utf-8") as f:
            merged.update(yaml.safe_load(f) or {})
    merged.update(overrides or {})
    return bool(merged.get("item_modalities")) and not merged.get("id_only")


def models_for_dataset(dataset: str, models: Sequence[str] | None, config_files: Sequence[str],
                       overrides: dict[str, Any] | None = None, default: Sequence[str] = DEFAULT_MODELS,
                       log: Callable[[str], Any] | None = None) -> list[str]:
    """The models to run on ``dataset``: ``models`` as given; ``None`` (``recgoat bench`` / ``tune`` without
    ``--models``) is the default selection, which gets the multimodal peers (:data:`MULTIMODAL_PEERS`) when
    the dataset's config has item features, and a logged note that they are skipped when it has none."""
    if models is not None:
        return list(models)
    chosen = list(default)
    extra = [m for m in MULTIMODAL_PEERS if m not in chosen]
    if not extra:
        return chosen
    if has_item_features(config_files, overrides):
        return chosen + extra
    (log or logger.warning)(f"{dataset}: skipping the multimodal models {', '.join(extra)}: its config has no "
                            "item_modalities (they need item features)")
    return chosen


def with_aligned(dataset: str, models: Sequence[str], config_files: Sequence[str],
                 overrides: dict[str, Any] | None = None, log: Callable[[str], Any] | None = None) -> list[str]:
    """``models`` with ``<Backbone>+Align`` right after each backbone of :data:`ALIGNABLE` (``--align``), on a
    dataset whose config has item features (a logged note and no extra rows otherwise)."""
    if not has_item_features(config_files, overrides):
        (log or logger.warning)(f"{dataset}: --align adds no rows: its config has no item_modalities")
        return list(models)
    out = []
    for model in models:
        out.append(model)
        if model in ALIGNABLE and model + ALIGN_SUFFIX not in models:
            out.append(model + ALIGN_SUFFIX)
    return out


def build_specs(datasets: Sequence[str], models: Sequence[str] | None, seeds: Sequence[int], common: dict[str, Any],
                configs: dict[str, str] | None = None, ablations: bool = False,
                gammas: Sequence[float] = (), tuned: dict[str, dict[str, dict]] | None = None,
                log: Callable[[str], Any] | None = None, align: bool = False, tag: str = "") -> list[RunSpec]:
    """One spec per dataset x (model | ablation | γ) x seed. ``tuned`` (``{dataset: {model: settings}}``, as
    ``recgoat tune`` writes) adds those settings to the models it names, tagged ``tuned``. ``models=None`` (or
    exactly :data:`DEFAULT_MODELS`) is the default selection: RecGOAT, the built-ins, and FREEDOM and LGMRec on
    the datasets with item features (:func:`models_for_dataset`). ``align`` adds ``<Backbone>+Align`` after
    each alignable backbone (:func:`with_aligned`). ``tag`` (``--tag``) names this command's settings (its
    ``--set``): it is part of every run's key and label, so runs of the same model with other settings sit in
    the same output folder as rows of their own."""
    specs = []
    for dataset in datasets:
        files = config_files((configs or {}).get(dataset) or find_config(dataset))
        chosen = (tuned or {}).get(dataset, {})
        dataset_models = models_for_dataset(dataset, models, files, common, log=log)
        if align:
            dataset_models = with_aligned(dataset, dataset_models, files, common, log=log)
        for seed in seeds:
            for model in dataset_models:
                if model in chosen:
                    label = ", ".join(t for t in ("tuned", tag) if t)
                    specs.append(RunSpec(dataset, model, seed, "", files, {**common, **chosen[model]}, label))
                else:
                    specs.append(RunSpec(dataset, model, seed, "", files, dict(common), tag))
            if ablations:
                for name, extra in ABLATIONS.items():
                    specs.append(RunSpec(dataset, "RecGOAT", seed, f"ablation: {name}", files, {**common, **extra},
                                         tag))
            for gamma in gammas:
                extra = {"fusion_gamma": float(gamma)}
                specs.append(RunSpec(dataset, "RecGOAT", seed, f"gamma={gamma:g}", files, {**common, **extra}, tag))
    return specs
