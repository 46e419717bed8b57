"""Everything RecBole 1.2.1 needs to run on today's stack, in one place.

RecBole 1.2.1 (2023) predates numpy 2, scipy 1.12, setuptools 81 and torch 2.6. Each fix below names the
upstream cause, touches the smallest surface that removes it, and has a test in ``tests/test_compat.py``
that fails without it. :func:`apply` is idempotent and runs once on ``import recgoat_recbole``.

Fixes
-----
1. ``numpy_aliases`` -- numpy 2 removed ``np.float_``, ``np.complex_`` and ``np.unicode_``. RecBole's
   ``Config.compatibility_settings`` reads them to recreate the *older* aliases (``np.float``, ``np.bool``, ...)
   that its own metrics still use (``recbole/evaluator/metrics.py``), so every ``Config(...)`` raised
   ``AttributeError``. We replace that method with one that creates the same old aliases from names that
   exist in numpy 1 and 2 (``np.float64``, ``np.complex128``, ``np.str_``). We do not put the removed
   numpy-2 names back.
2. ``scipy_dok_update`` -- scipy 1.12 moved ``dok_matrix`` storage to ``self._dict`` and dropped the private
   ``_update`` that RecBole's LightGCN, NGCF, NCL, SGL, GCMC, SpectralCF, KGIN and MCCLK call to fill their
   adjacency. We add ``_update`` back as a bulk ``dict.update`` on that storage (the old semantics: no
   per-key bounds check).
3. ``ray_import`` -- ``recbole.quick_start`` imports ``ray.tune``; ray 2.6.3 imports
   ``pkg_resources``, which setuptools 81 removed, and reads ``np.bool8`` (removed in numpy 2) while defining
   a class; ``np.bool8`` is set for the duration of that one import and removed again. Rather than pin an
   old setuptools into the user's environment, when (and only when) ``pkg_resources`` cannot be imported we register a minimal module that
   provides exactly what ray 2.6.3 uses (``get_distribution``, ``require``, ``DistributionNotFound``,
   ``packaging`` and ``_vendor.packaging.version``). Any other attribute raises an ``AttributeError`` that
   says it is this shim.
4. ``safe_checkpoints`` -- torch 2.6 made ``torch.load(weights_only=True)`` the default, and RecBole's
   checkpoints hold its ``Config`` object (enums, the model class, a yaml loader class), so the trainer could
   no longer reload the best model it had just saved, nor could ``load_data_and_model`` read it; worse, RecBole
   writes pickle protocol 4, which torch's weights-only unpickler cannot parse at all. We keep safe loading on:
   ``Trainer._save_checkpoint`` writes protocol 2 (otherwise unchanged), and ``Trainer.evaluate``,
   ``Trainer.resume_checkpoint`` and ``load_data_and_model`` run inside
   :func:`recbole_checkpoint_globals`, which first lists the globals the file references and allows only
   RecBole's own config classes and enums, recommender *classes* (subclasses of ``AbstractRecommender``),
   numeric numpy scalars (``best_valid_score``), and numpy arrays / scipy sparse matrices (csr, csc, coo, lil,
   dok), which ItemKNN, EASE and Pop keep in ``other_parameter``.
   Any other global -- ``os.system``, an unknown class -- raises ``pickle.UnpicklingError`` naming it.
5. ``external_models`` -- ``run_recbole`` and ``load_data_and_model`` resolve a model with
   ``recbole.utils.get_model(name)``, which only searches ``recbole.model.*``; ``Config`` only loads
   ``recbole/properties/model/<name>.yaml``; ``create_dataset`` only looks in ``recbole.data.dataset``.
   :func:`register_model` puts an external class (and optionally its dataset class and default YAML) in a
   registry that a wrapped ``get_model`` consults first. The model's YAML is layered exactly where RecBole
   layers its own model YAMLs (after ``overall.yaml``, before the dataset YAML, below the user's files and
   dict).
6. ``ddp_cpu`` -- RecBole 1.2.1's ``Config._init_device`` hard-codes the NCCL backend and ``cuda:<rank>``
   for multi-process runs, and ``AbstractTrainer`` passes ``device_ids`` to ``DistributedDataParallel``, which
   CPU modules reject. With ``dist_backend`` (default: ``nccl`` with CUDA, ``gloo`` without) ranks run on
   the CPU over gloo; the single-process and NCCL/CUDA paths are RecBole's own. Also, only rank 0 writes the
   best checkpoint while every rank reloads it for testing: a barrier before that reload removes the race
   (seen as "Expected input to be a checkpoint returned by torch.save" on rank 1), and each rank names
   the file from its own clock (``<model>-<local time>.pth``), so when the ranks start in different seconds
   rank 1 looks for a file nobody wrote: the reload uses rank 0's name, broadcast. ``ensure_dir``
   checks then creates, so two ranks creating ``./log`` together could fail: it uses ``exist_ok=True``.
7. ``pop_counts`` -- ``Pop.calculate_loss`` does ``item_cnt[item] = item_cnt[item] + 1``. With an item repeated
   in a batch, that assignment adds 1 once, so Pop counts "batches that contain the item", not
   interactions. Popular items tie at the number of batches, and the tie order follows the shuffling, so
   Pop's NDCG on TikTok moved from 0.0186 to 0.0362 between two seeds. The fix counts with ``index_add_``.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import importlib.metadata
import os
import pickle
import sys
import types
from dataclasses import dataclass
from typing import Any, Callable, Iterator

__all__ = [
    "apply",
    "register_model",
    "registered_models",
    "recbole_checkpoint_globals",
    "APPLIED",
    "ORIGINALS",
]

#: names of the fixes that :func:`apply` has installed, in order
APPLIED: list[str] = []
#: the functions each fix replaced, so tests can show the fix is needed
ORIGINALS: dict[str, Any] = {}


@dataclass(frozen=True)
class _Registration:
    model_class: type
    dataset_class: type | None
    yaml_file: str | None


_REGISTRY: dict[str, _Registration] = {}


# ---------------------------------------------------------------------------------------------- 1. numpy 2
_OLD_NUMPY_ALIASES = {
    "bool": "bool_",
    "int": "int_",
    "float": "float64",
    "complex": "complex128",
    "object": "object_",
    "str": "str_",
    "long": "int_",
    "unicode": "str_",
}


def _compatibility_settings(self: Any) -> None:
    """Replacement for ``Config.compatibility_settings`` that works on numpy 1 and 2."""
    import numpy as np

    for old, new in _OLD_NUMPY_ALIASES.items():
        setattr(np, old, getattr(np, new))


def _fix_numpy_aliases() -> None:
    from recbole.config import configurator

    ORIGINALS["numpy_aliases"] = configurator.Config.compatibility_settings
    configurator.Config.compatibility_settings = _compatibility_settings
    # also now: a Config rebuilt from a checkpoint (load_data_and_model) never runs compatibility_settings,
    # and RecBole's metrics read np.float
    _compatibility_settings(None)


# ------------------------------------------------------------------------------------------ 2. scipy 1.12
def _dok_update(self: Any, data: dict) -> None:
    """``dok_matrix._update`` as scipy < 1.12 had it: a bulk dict update of the stored entries."""
    self._dict.update(data)


def _fix_scipy_dok_update() -> None:
    import scipy.sparse as sp

    if hasattr(sp.dok_matrix, "_update"):
        return  # scipy < 1.12 still has it
    ORIGINALS["scipy_dok_update"] = None
    sp.dok_matrix._update = _dok_update


# ---------------------------------------------------------------------------------------- 3. setuptools 81
class _ShimModule(types.ModuleType):
    def __getattr__(self, name: str) -> Any:
        raise AttributeError(
            f"pkg_resources.{name}: this is recgoat_recbole's minimal pkg_resources shim (setuptools >= 81 "
            "removed the real one); it only provides what ray 2.6.3 needs. "
            "Install 'setuptools<81' for the full module."
        )


def _build_pkg_resources_shim() -> types.ModuleType:
    import packaging
    import packaging.version

    shim = _ShimModule("pkg_resources", "recgoat_recbole compatibility shim for ray 2.6.3")

    class DistributionNotFound(Exception):
        pass

    @dataclass
    class _Distribution:
        project_name: str
        version: str

    def get_distribution(name: str) -> _Distribution:
        try:
            return _Distribution(name, importlib.metadata.version(name))
        except importlib.metadata.PackageNotFoundError as exc:
            raise DistributionNotFound(name) from exc

    def require(name: str) -> list[_Distribution]:
        return [get_distribution(name)]

    shim.DistributionNotFound = DistributionNotFound
    shim.get_distribution = get_distribution
    shim.require = require
    shim.packaging = packaging
    vendor = types.ModuleType("pkg_resources._vendor")
    vendor.packaging = packaging
    shim._vendor = vendor
    shim.__path__ = []  # a package, so 'pkg_resources._vendor...' imports resolve through sys.modules
    return shim


def _fix_ray_import() -> None:
    try:
        import pkg_resources  # noqa: F401
    except ImportError:
        import packaging.version

        shim = _build_pkg_resources_shim()
        sys.modules["pkg_resources"] = shim
        sys.modules["pkg_resources._vendor"] = shim._vendor
        sys.modules["pkg_resources._vendor.packaging"] = sys.modules["packaging"]
        sys.modules["pkg_resources._vendor.packaging.version"] = packaging.version
        ORIGINALS["ray_import"] = None
    import numpy as np

    # ray 2.6.3's tune logger reads np.bool8 (removed in numpy 2) at class-definition time: provide it for
    # the duration of the import only.
    added = "bool8" not in np.__dict__
    if added:
        np.bool8 = np.bool_
    try:
        import recbole.quick_start  # noqa: F401  (imports ray.tune)
    finally:
        if added:
            del np.bool8


# --------------------------------------------------------------------------------------------- 4. torch 2.6
_NUMERIC_DTYPES = {"Float64", "Float32", "Float16", "Int64", "Int32", "Int16", "Int8", "UInt8", "Bool",
                   "Object"}  # Object: lil_matrix keeps its rows as object arrays of lists
_SPARSE_CLASSES = {f"{fmt}_{kind}" for fmt in ("csr", "csc", "coo", "lil", "dok") for kind in ("matrix", "array")}


def _allowed_checkpoint_global(qualified: str) -> Any:
    """Resolve one global named in a RecBole checkpoint to something that only builds data, or raise.

    The config, RecBole's enums, recommender classes and the yaml loader map to inert stand-ins
    (:mod:`recgoat_recbole.checkpoint`); numpy and scipy containers to themselves. Nothing here runs code.
    """
    from recgoat_recbole.checkpoint import checkpoint_allowlist_entry

    entry = checkpoint_allowlist_entry(qualified)
    if entry is not None:
        return entry
    module_name, _, attr = qualified.rpartition(".")
    fixed = {
        # numpy scalars (RecBole stores best_valid_score as np.float64), as torch's docs advise
        "numpy._core.multiarray.scalar",
        "numpy.core.multiarray.scalar",
        "numpy.dtype",
        # numpy arrays and scipy sparse matrices: RecBole's non-parametric models keep them in
        # other_parameter (ItemKNN: w, pred_mat; EASE: interaction_matrix, item_similarity; Pop: counts)
        "numpy._core.multiarray._reconstruct",
        "numpy.core.multiarray._reconstruct",
        "numpy.ndarray",
        "numpy.matrix",  # EASE's item_similarity
        "copyreg._reconstructor",  # how dok_matrix (a dict subclass) pickles; its classes are checked here too
        "builtins.dict",
    }
    if qualified in fixed or (module_name.startswith("scipy.sparse.") and attr in _SPARSE_CLASSES):
        try:
            return getattr(importlib.import_module(module_name), attr)
        except (ImportError, AttributeError):
            pass
    registered = _REGISTRY.get(attr)
    if registered is not None and registered.model_class.__module__ == module_name:
        from recgoat_recbole.checkpoint import GlobalRef

        return (GlobalRef(qualified), qualified)  # an old checkpoint's registered model class, by name
    raise pickle.UnpicklingError(
        f"refusing to load checkpoint: it references {qualified!r}, which is not a RecBole config, enum, "
        "recommender class or numpy/scipy container. Load it yourself with torch.load(..., weights_only=False) "
        "only if you trust it."
    )


def _checkpoint_globals(path: Any) -> list[Any]:
    import torch

    if not isinstance(path, (str, os.PathLike)):
        return []
    try:
        names = torch.serialization.get_unsafe_globals_in_checkpoint(os.fspath(path))
    except pickle.UnpicklingError as exc:
        raise pickle.UnpicklingError(
            f"cannot load {os.fspath(path)} safely: it was written with a pickle protocol torch's weights-only "
            "loader does not read (RecBole 1.2.1 without recgoat_recbole writes protocol 4). Re-train with "
            "recgoat_recbole imported, or load it with torch.load(..., weights_only=False) only if you trust it."
        ) from exc
    allowed = [_allowed_checkpoint_global(name) for name in names]
    if "numpy.dtype" in names:  # BUILD of a dtype names its class only implicitly
        import numpy as np

        allowed += [getattr(np.dtypes, f"{t}DType") for t in sorted(_NUMERIC_DTYPES)]
    return allowed


@contextlib.contextmanager
def recbole_checkpoint_globals(path: Any) -> Iterator[None]:
    """Allow, for the duration of the block, the RecBole globals that the checkpoint ``path`` references.

    ``torch.load`` stays in ``weights_only`` mode; only RecBole's config classes, enums and recommender classes
    are added to its allowlist, and only if the file names nothing else.
    """
    import torch

    allowed = _checkpoint_globals(path) if path is not None and os.path.exists(path) else []
    with torch.serialization.safe_globals(allowed):
        yield


def _with_checkpoint_globals(fn: Callable, path_of: Callable[..., Any]) -> Callable:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with recbole_checkpoint_globals(path_of(*args, **kwargs)):
            return fn(*args, **kwargs)

    wrapper.__recgoat_compat__ = True
    return wrapper


def _evaluate_checkpoint(self: Any, eval_data: Any = None, load_best_model: bool = True,
                         model_file: str | None = None, *args: Any, **kwargs: Any) -> Any:
    if not load_best_model:
        return None
    return model_file or getattr(self, "saved_model_file", None)


def _save_checkpoint(self: Any, epoch: int, verbose: bool = True, **kwargs: Any) -> None:
    """``Trainer._save_checkpoint`` of RecBole 1.2.1, writing pickle protocol 2 instead of 4 and the config as
    plain data (:class:`recgoat_recbole.checkpoint.StoredConfig`).

    torch's weights-only unpickler reads protocol 2 only (no FRAME / STACK_GLOBAL / MEMOIZE opcodes).
    """
    import torch
    from recbole.utils import set_color

    if not self.config["single_spec"] and self.config["local_rank"] != 0:
        return
    saved_model_file = kwargs.pop("saved_model_file", self.saved_model_file)
    from recgoat_recbole.checkpoint import stored_config

    best = self.best_valid_score
    state = {
        "config": stored_config(self.config),  # plain data: loading it runs no constructor
        "epoch": epoch,
        "cur_step": self.cur_step,
        "best_valid_score": float(best) if isinstance(best, (int, float)) or hasattr(best, "item") else best,
        "state_dict": self.model.state_dict(),
        "other_parameter": self.model.other_parameter(),
        "optimizer": self.optimizer.state_dict(),
    }
    torch.save(state, saved_model_file, pickle_protocol=2)
    if verbose:
        self.logger.info(set_color("Saving current", "blue") + f": {saved_model_file}")


def _fix_safe_checkpoints() -> None:
    import recbole.quick_start
    import recbole.quick_start.quick_start as qs
    from recbole.trainer import trainer as trainer_mod

    ORIGINALS["safe_checkpoints"] = {
        "evaluate": trainer_mod.Trainer.evaluate,
        "resume_checkpoint": trainer_mod.Trainer.resume_checkpoint,
        "load_data_and_model": qs.load_data_and_model,
        "_save_checkpoint": trainer_mod.Trainer._save_checkpoint,
    }
    trainer_mod.Trainer._save_checkpoint = _save_checkpoint
    trainer_mod.Trainer.evaluate = _with_checkpoint_globals(trainer_mod.Trainer.evaluate, _evaluate_checkpoint)
    trainer_mod.Trainer.resume_checkpoint = _with_checkpoint_globals(
        trainer_mod.Trainer.resume_checkpoint, lambda self, resume_file: resume_file
    )
    loader = _with_checkpoint_globals(qs.load_data_and_model, lambda model_file: model_file)
    qs.load_data_and_model = loader
    recbole.quick_start.load_data_and_model = loader


# ------------------------------------------------------------------------------- 4b. dataset/dataloader cache
def _fix_safe_dataset_cache() -> None:
    """RecBole unpickles ``saved/*.pth`` dataset/dataloader caches: use the signed, keyed ones instead
    (:mod:`recgoat_recbole.dataset_cache`), wherever RecBole's entry points look the functions up."""
    import recbole.data
    import recbole.data.utils as data_utils
    import recbole.quick_start.quick_start as qs

    from recgoat_recbole import dataset_cache

    ORIGINALS["safe_dataset_cache"] = {name: getattr(data_utils, name) for name in
                                       ("create_dataset", "load_split_dataloaders", "save_split_dataloaders")}
    for module in (data_utils, recbole.data, qs):
        for name in ORIGINALS["safe_dataset_cache"]:
            if hasattr(module, name):
                setattr(module, name, getattr(dataset_cache, name))


# ------------------------------------------------------------------------------------ 5. external models
def register_model(model_class: type, dataset_class: type | None = None, yaml_file: str | None = None) -> None:
    """Make ``model_class`` usable wherever RecBole takes a model name or class.

    Args:
        model_class: a RecBole recommender (subclass of ``AbstractRecommender``).
        dataset_class: the ``Dataset`` subclass ``create_dataset`` should build for it (default: RecBole's).
        yaml_file: the model's default parameters, layered like ``recbole/properties/model/<name>.yaml``.
    """
    name = model_class.__name__
    if yaml_file is not None and not os.path.isfile(yaml_file):
        raise FileNotFoundError(f"default config for {name} not found: {yaml_file}")
    _REGISTRY[name] = _Registration(model_class, dataset_class, yaml_file)
    if dataset_class is not None:
        import recbole.data.dataset as dataset_module

        # create_dataset() looks up f"{config['model']}Dataset" in this module first.
        setattr(dataset_module, f"{name}Dataset", dataset_class)


def registered_models() -> dict[str, type]:
    """The external models registered so far, by name."""
    return {name: r.model_class for name, r in _REGISTRY.items()}


def _get_model(model_name: str) -> type:
    if model_name in _REGISTRY:
        return _REGISTRY[model_name].model_class
    try:
        return ORIGINALS["external_models"]["get_model"](model_name)
    except (ValueError, AttributeError, ImportError) as exc:
        # RecBole's search imports recbole.model.exlib_recommender last, which needs lightgbm/xgboost
        why = f" (while searching: {exc})" if isinstance(exc, ImportError) else ""
        raise ValueError(
            f"unknown model {model_name!r}: it is neither a RecBole 1.2.1 model nor a registered one "
            f"({', '.join(sorted(_REGISTRY)) or 'none registered'}){why}"
        ) from None


def _load_internal_config_dict(self: Any, model: str, model_class: type, dataset: str) -> None:
    ORIGINALS["external_models"]["_load_internal_config_dict"](self, model, model_class, dataset)
    registration = _REGISTRY.get(model)
    if registration is None or registration.yaml_file is None:
        return
    # RecBole's order is overall < model < sample < dataset; re-layer the last two above our model file.
    from recbole.config import configurator

    base = os.path.join(os.path.dirname(os.path.realpath(configurator.__file__)), "..", "properties", "dataset")
    model_type = self.internal_config_dict["MODEL_TYPE"]
    self._update_internal_config_dict(registration.yaml_file)
    for later in (os.path.join(base, "sample.yaml"), os.path.join(base, f"{dataset}.yaml")):
        if os.path.isfile(later):
            self._update_internal_config_dict(later)
    self.internal_config_dict["MODEL_TYPE"] = model_type


def _fix_external_models() -> None:
    import recbole.config.configurator as configurator
    import recbole.quick_start.quick_start as qs
    import recbole.utils
    import recbole.utils.utils as utils_mod

    ORIGINALS["external_models"] = {
        "get_model": utils_mod.get_model,
        "_load_internal_config_dict": configurator.Config._load_internal_config_dict,
    }
    for module in (utils_mod, recbole.utils, configurator, qs):
        module.get_model = _get_model
    configurator.Config._load_internal_config_dict = _load_internal_config_dict


# ------------------------------------------------------------------------------------------- 6. DDP on CPU
def _init_device(self: Any) -> None:
    """``Config._init_device`` that can run RecBole's multi-process DDP without CUDA.

    RecBole 1.2.1 always calls ``init_process_group(backend="nccl")`` and puts rank r on ``cuda:r``. Here:
    ``dist_backend`` (default ``nccl`` when CUDA is usable, else ``gloo``) picks the backend, and without
    CUDA every rank runs on the CPU. The single-process path and the NCCL/CUDA path are RecBole's own.
    """
    import torch

    config = self.final_config_dict
    cuda = torch.cuda.is_available() and bool(config.get("use_gpu", True))
    backend = config.get("dist_backend") or ("nccl" if cuda else "gloo")
    if "local_rank" not in config or (cuda and backend == "nccl"):
        ORIGINALS["ddp_cpu"]["_init_device"](self)
        return
    gpu_id = config["gpu_id"]
    config["gpu_id"] = ",".join(map(str, gpu_id)) if isinstance(gpu_id, tuple) else str(gpu_id)
    torch.distributed.init_process_group(
        backend=backend,
        rank=config["local_rank"] + config["offset"],
        world_size=config["world_size"],
        init_method=f"tcp://{config['ip']}:{config['port']}",
    )
    config["device"] = torch.device("cuda", config["local_rank"]) if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(config["local_rank"])
    config["single_spec"] = False
    if config["local_rank"] != 0:
        config["state"] = "error"
        config["show_progress"] = False
        config["verbose"] = False


def _abstract_trainer_init(self: Any, config: Any, model: Any) -> None:
    """``AbstractTrainer.__init__`` with ``device_ids`` only for CUDA modules (CPU DDP requires None)."""
    import torch
    from torch.nn.parallel import DistributedDataParallel

    self.config = config
    self.model = model
    if not config["single_spec"]:
        self.model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
        device_ids = [config["local_rank"]] if config["device"].type == "cuda" else None
        self.distributed_model = DistributedDataParallel(self.model, device_ids=device_ids)


def _evaluate_after_barrier(evaluate: Callable) -> Callable:
    """Only rank 0 writes the best checkpoint; the other ranks must not read it before it is complete."""

    @functools.wraps(evaluate)
    def wrapper(self: Any, eval_data: Any, load_best_model: bool = True, model_file: str | None = None,
                *args: Any, **kwargs: Any) -> Any:
        import torch.distributed as dist

        if load_best_model and not self.config["single_spec"] and dist.is_initialized():
            dist.barrier()
            if model_file is None:  # every rank reloads the file rank 0 wrote, not its own timestamped name
                name = [self.saved_model_file]
                dist.broadcast_object_list(name, src=0)
                self.saved_model_file = name[0]
        return evaluate(self, eval_data, load_best_model, model_file, *args, **kwargs)

    return wrapper


def _ensure_dir(dir_path: str) -> None:
    """``recbole.utils.ensure_dir`` without its check-then-create race (ranks start together under DDP)."""
    os.makedirs(dir_path, exist_ok=True)


def _fix_ddp_cpu() -> None:
    import recbole.config.configurator as configurator
    import recbole.data.dataset.dataset as dataset_mod
    import recbole.data.utils as data_utils
    import recbole.utils
    import recbole.utils.logger as logger_mod
    import recbole.utils.utils as utils_mod
    from recbole.trainer import trainer as trainer_mod

    original_ensure_dir = utils_mod.ensure_dir
    for module in (utils_mod, recbole.utils, logger_mod, data_utils, dataset_mod, trainer_mod):
        module.ensure_dir = _ensure_dir

    ORIGINALS["ddp_cpu"] = {
        "_init_device": configurator.Config._init_device,
        "AbstractTrainer.__init__": trainer_mod.AbstractTrainer.__init__,
        "evaluate": trainer_mod.Trainer.evaluate,
        "ensure_dir": original_ensure_dir,
    }
    configurator.Config._init_device = _init_device
    trainer_mod.AbstractTrainer.__init__ = _abstract_trainer_init
    trainer_mod.Trainer.evaluate = _evaluate_after_barrier(trainer_mod.Trainer.evaluate)


# ------------------------------------------------------------------------------------------- 7. Pop counts
def _pop_calculate_loss(self: Any, interaction: Any) -> Any:
    """``Pop.calculate_loss`` that counts every interaction (RecBole's counts an item once per batch)."""
    import torch

    item = interaction[self.ITEM_ID]
    self.item_cnt.index_add_(0, item, torch.ones_like(item)[:, None].to(self.item_cnt.dtype))
    self.max_cnt = torch.max(self.item_cnt, dim=0)[0]
    return torch.nn.Parameter(torch.zeros(1)).to(self.device)


def _fix_pop_counts() -> None:
    from recbole.model.general_recommender.pop import Pop

    ORIGINALS["pop_counts"] = {"calculate_loss": Pop.calculate_loss}
    Pop.calculate_loss = _pop_calculate_loss


# ---------------------------------------------------------------------------------------------------- apply
_FIXES: list[tuple[str, Callable[[], None]]] = [
    ("numpy_aliases", _fix_numpy_aliases),
    ("ray_import", _fix_ray_import),
    ("scipy_dok_update", _fix_scipy_dok_update),
    ("safe_checkpoints", _fix_safe_checkpoints),
    ("safe_dataset_cache", _fix_safe_dataset_cache),
    ("external_models", _fix_external_models),
    ("ddp_cpu", _fix_ddp_cpu),
    ("pop_counts", _fix_pop_counts),
]


def apply() -> list[str]:
    """Install every fix once (later calls do nothing); returns the names of the fixes applied."""
    if not APPLIED:
        for name, fix in _FIXES:
            fix()
            APPLIED.append(name)
    return list(APPLIED)
