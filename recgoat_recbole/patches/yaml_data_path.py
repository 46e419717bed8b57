"""``yaml_data_path`` -- A relative ``data_path`` in a YAML file means "relative to that file" when the dataset folder is there.

RecBole reads ``data_path`` against the working directory, so a dataset folder with its YAML inside
(``recgoat data import`` writes ``DST/NAME/NAME.yaml`` with ``data_path: ..``) could be used only from one
place. :func:`install` wraps ``Config._load_config_files`` (RecBole 1.2.1 has no hook for it; subclassing
``Config`` would not reach ``run_recbole``): after each YAML file is read, a relative ``data_path`` that, joined to
the file's folder, holds a folder named like the file's ``dataset``, is made absolute. Any other value is left
as RecBole reads it (so a YAML written for the working directory keeps working), and a ``data_path`` given
in ``config_dict`` or on the command line still wins, as always in RecBole.
"""

from __future__ import annotations

import os
from typing import Any

__all__ = ["resolve_data_path", "install", "ORIGINALS"]

ORIGINALS: dict[str, Any] = {}


def resolve_data_path(values: dict[str, Any], yaml_file: str) -> dict[str, Any]:
    """``values`` (one YAML file's contents) with a file-relative ``data_path`` made absolute (see above)."""
    path, dataset = values.get("data_path"), values.get("dataset")
    if not isinstance(path, str) or not isinstance(dataset, str) or os.path.isabs(os.path.expanduser(path)):
        return values
    here = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(yaml_file)), path))
    if os.path.isdir(os.path.join(here, dataset)):
        return {**values, "data_path": here}
    return values


def _load_config_files(self: Any, file_list: Any) -> dict:
    import yaml

    merged: dict = {}
    for file in file_list or ():
        with open(file, "r", encoding="utf-8") as f:  # the file object: errors name the file
            values = yaml.load(f, Loader=self.yaml_loader) or {}
        merged.update(resolve_data_path(values, file) if isinstance(values, dict) else values)
    return merged


def install() -> None:
    """Route RecBole's YAML loading through :func:`resolve_data_path` (once)."""
    import recbole.config.configurator as configurator

    if ORIGINALS:
        return
    ORIGINALS["_load_config_files"] = configurator.Config._load_config_files
    configurator.Config._load_config_files = _load_config_files
