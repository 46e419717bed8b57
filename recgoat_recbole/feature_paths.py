"""Where a model's feature files are: the ``item_modalities`` setting as ``{name: file}``, and each file found
under the dataset folder or the working directory. Shared by the dataset hook (:mod:`recgoat_recbole.dataset`)
and the dataset cache key (:mod:`recgoat_recbole.dataset_cache`); standard library and the core only."""

from __future__ import annotations

import os

from recgoat_core.feature_files import FeatureFileError

__all__ = ["resolve_feature_path", "modality_files"]


def resolve_feature_path(path: str, dataset_dir: str) -> str:
    """An existing file for ``path``: absolute, or under ``dataset_dir``, or under the working directory."""
    path = os.path.expanduser(os.fspath(path))
    candidates = [path] if os.path.isabs(path) else [os.path.join(dataset_dir, path), os.path.abspath(path)]
    for candidate in candidates:
        if os.path.isfile(candidate):
            return candidate
    raise FeatureFileError(f"feature file not found: {path} (looked in {', '.join(candidates)})")


def modality_files(config_value: object) -> dict[str, str]:
    """Normalise the ``item_modalities`` setting to ``{name: file}``."""
    if config_value is None:
        return {}
    if isinstance(config_value, str):
        config_value = [config_value]
    if isinstance(config_value, (list, tuple)):
        return {str(name): f"{name}_feat.npy" for name in config_value}
    if isinstance(config_value, dict):
        return {str(k): str(v) for k, v in config_value.items()}
    raise FeatureFileError(f"item_modalities must be a dict {{name: file}} or a list of names, got {config_value!r}")
