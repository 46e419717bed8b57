"""Experiment design of ``recgoat bench`` / ``recgoat demo``: which runs there are and how each is configured.

A run is a :class:`RunSpec` (dataset, model, seed, variant, YAML files, overrides). :func:`build_specs` makes one
per dataset x (model | ablation | γ) x seed; the ablations are :data:`ABLATIONS`, RecGOAT config overrides on top
of the dataset YAML. Nothing here trains: :mod:`recgoat_recbole.bench.execute` runs the specs.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from typing import Any, Sequence

from recgoat_recbole.bench.names import BUILTIN_BASELINES

__all__ = ["RunSpec", "ABLATIONS", "BUILTIN_BASELINES", "find_config", "build_specs"]


def _default(key: str) -> Any:
    """RecGOAT's default for ``key`` (recgoat_recbole/properties/RecGOAT.yaml)."""
    import yaml

    path = os.path.join(os.path.dirname(os.path.dirname(__file__)), "properties", "RecGOAT.yaml")
    with open(path, encoding="utf-8") as f:
        return yaml.safe_load(f)[key]


#: every alignment term on at the paper's default weights (the full model); each ablation sets all of them, so
#: that a dataset YAML that turns some off (recbole_configs/tiktok.yaml) cannot leak into the table
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


def find_config(dataset: str) -> str:
    """``recbole_configs/<dataset>.yaml`` from the working directory, the source checkout or the install."""
    here = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    for folder in (os.path.join(os.getcwd(), "recbole_configs"), os.path.join(here, "recbole_configs"),
                   os.path.join(sys.prefix, "share", "recgoat-recbole", "recbole_configs")):
        path = os.path.join(folder, f"{dataset}.yaml")
        if os.path.isfile(path):
            return path
    raise FileNotFoundError(f"no config for dataset {dataset!r}: pass --config FILE (looked for "
                            f"recbole_configs/{dataset}.yaml)")


def build_specs(datasets: Sequence[str], models: Sequence[str], seeds: Sequence[int], common: dict[str, Any],
                configs: dict[str, str] | None = None, ablations: bool = False,
                gammas: Sequence[float] = (), tuned: dict[str, dict[str, dict]] | None = None) -> list[RunSpec]:
    """One spec per dataset x (model | ablation | γ) x seed. ``tuned`` (``{dataset: {model: settings}}``, as
    ``recgoat tune`` writes) adds those settings to the models it names, tagged ``tuned``."""
    specs = []
    for dataset in datasets:
        files = ((configs or {}).get(dataset) or find_config(dataset),)
        chosen = (tuned or {}).get(dataset, {})
        for seed in seeds:
            for model in models:
                if model in chosen:
                    specs.append(RunSpec(dataset, model, seed, "", files, {**common, **chosen[model]}, "tuned"))
                else:
                    specs.append(RunSpec(dataset, model, seed, "", files, dict(common)))
            if ablations:
                for name, extra in ABLATIONS.items():
                    specs.append(RunSpec(dataset, "RecGOAT", seed, f"ablation: {name}", files, {**common, **extra}))
            for gamma in gammas:
                extra = {"fusion_gamma": float(gamma)}
                specs.append(RunSpec(dataset, "RecGOAT", seed, f"gamma={gamma:g}", files, {**common, **extra}))
    return specs
