"""Every change this package makes to RecBole, scipy and numpy: one table, applied once.

``import recgoat_recbole`` calls :func:`apply`, which installs the patches of :data:`TABLE` in its order; a
second call does nothing. Each row names the attributes it replaces (or adds), its kind, why, and the test
that fails without it. No row changes a RecBole recommender class: ``tests/test_patches.py`` compares every
one of them before and after ``import recgoat_recbole`` in a fresh interpreter. docs/compat.md is this table
in prose.

Kinds:

- ``version fix``: RecBole 1.2.1 on today's numpy, scipy, setuptools and torch;
- ``security``: files from others (configs, checkpoints, caches) cannot run code;
- ``feature``: what subclassing cannot reach (external models by name, data paths relative to a YAML, DDP
  on CPU).

Two rows wrap one function, ``Trainer.evaluate``, on purpose and in this order: ``safe_checkpoints`` lists the
globals of the checkpoint file and loads it safely, then ``ddp_cpu`` wraps that with a barrier, so that no rank
reads the file before rank 0 has written it. :data:`ORIGINALS` holds, per row, RecBole's own functions.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any

__all__ = ["Patch", "TABLE", "apply", "APPLIED", "ORIGINALS"]


@dataclass(frozen=True)
class Patch:
    """One row of the table: the module ``recgoat_recbole.patches.<name>`` and what its ``install()`` does."""

    name: str
    #: what it replaces or adds, as ``module.attribute``
    attributes: tuple[str, ...]
    kind: str
    why: str
    #: the test that fails without it (``file::test``)
    test: str


TABLE: tuple[Patch, ...] = (
    Patch("numpy_aliases", ("recbole.config.Config.compatibility_settings", "numpy.float", "numpy.int",
                            "numpy.bool", "numpy.complex", "numpy.object", "numpy.str", "numpy.long",
                            "numpy.unicode"),
          "version fix", "numpy 2 removed np.float_ and np.unicode_, which compatibility_settings reads to recreate "
          "the np.float / np.bool aliases RecBole's metrics use; also set at install, since a Config rebuilt "
          "from a checkpoint never runs it",
          "tests/test_patches.py::test_config_builds_on_numpy2_and_old_aliases_exist"),
    Patch("ray_import", ("sys.modules['pkg_resources']",), "version fix",
          "recbole.quick_start imports ray.tune, and ray 2.6.3 imports pkg_resources (gone in setuptools 81) and "
          "reads np.bool8: a minimal pkg_resources shim only if the real one is absent; np.bool8 only during "
          "that import", "tests/test_patches.py::test_quick_start_imports_without_pkg_resources_and_bool8_is_gone"),
    Patch("scipy_dok_update", ("scipy.sparse.dok_matrix._update",), "version fix",
          "scipy 1.12 dropped dok_matrix._update, which LightGCN, NGCF, NCL, SGL, GCMC, SpectralCF, KGIN and "
          "MCCLK use to build their adjacency", "tests/test_patches.py::test_recbole_lightgcn_builds_its_adjacency"),
    Patch("safe_config_values", ("recbole.config.Config._convert_config_dict",
                                 "recbole.config.Config._build_yaml_loader"), "security",
          "Config eval()s every string value of config_dict and the command line, and loads YAML with Python "
          "tags and unbounded aliases: literals convert as eval made them, text stays text, code is one "
          "ConfigError; YAML is safe-loaded with a bound of 100,000 nodes",
          "tests/test_safety_config_values.py::test_config_dict_and_command_line_values_are_never_evaluated"),
    Patch("safe_checkpoints", ("recbole.trainer.Trainer._save_checkpoint", "recbole.trainer.Trainer.evaluate",
                               "recbole.trainer.Trainer.resume_checkpoint",
                               "recbole.quick_start.load_data_and_model"), "security",
          "torch >= 2.6 loads weights-only and RecBole's checkpoints pickle its Config: checkpoints are written "
          "atomically as plain data, and read allowing only stand-ins that cannot be called, bounded by the "
          "file's size", "tests/test_patches.py::test_checkpoint_with_foreign_global_is_refused"),
    Patch("safe_dataset_cache", ("recbole.data.create_dataset", "recbole.data.utils.load_split_dataloaders",
                                 "recbole.data.utils.save_split_dataloaders"), "security",
          "create_dataset and data_preparation unpickle saved/*.pth whenever it exists and ignore feature "
          "files: caches keyed by the contents of everything that shapes them and signed with a per-user key "
          "(recgoat_recbole.dataset_cache)", "tests/test_safety_loading.py::test_planted_dataset_and_dataloader_caches_are_not_unpickled"),
    Patch("ddp_cpu", ("recbole.config.Config._init_device", "recbole.trainer.AbstractTrainer.__init__",
                      "recbole.trainer.Trainer.evaluate", "recbole.utils.ensure_dir"), "feature",
          "Config hard-codes NCCL and cuda:<rank> for nproc > 1: dist_backend (gloo without CUDA), CPU ranks, a "
          "barrier before ranks reload rank 0's checkpoint under its file name, ensure_dir that tolerates the "
          "race", "tests/test_patches_ddp_cpu.py::test_two_process_ddp_on_cpu_with_gloo"),
    Patch("model_lookup", ("recbole.utils.get_model", "recbole.utils.get_trainer",
                           "recbole.config.Config._load_internal_config_dict"), "feature",
          "RecBole finds only its own models, trainers and model YAMLs: a registered name (RecGOAT, FREEDOM, "
          "LGMRec, <Backbone>+Align) is looked up in recgoat_recbole.registry first, its YAML layered where "
          "RecBole layers its own", "tests/test_patches.py::test_run_recbole_with_class_and_with_name"),
    Patch("yaml_data_path", ("recbole.config.Config._load_config_files",), "feature",
          "a relative data_path in a YAML is read against the working directory: it is read against the "
          "YAML's folder when the dataset is there (an imported folder works from anywhere)",
          "tests/test_patches.py::test_relative_data_path_is_read_against_the_yaml"),
)

#: names of the patches :func:`apply` has installed, in order
APPLIED: list[str] = []
#: per patch name, what it replaced (RecBole's own functions; ``None`` where it only added)
ORIGINALS: dict[str, dict[str, Any]] = {}


def apply() -> list[str]:
    """Install every patch of :data:`TABLE` once (later calls do nothing); returns their names in order."""
    if not APPLIED:
        for patch in TABLE:
            module = importlib.import_module(f"{__name__}.{patch.name}")
            module.install()
            ORIGINALS[patch.name] = module.ORIGINALS
            APPLIED.append(patch.name)
    return list(APPLIED)
