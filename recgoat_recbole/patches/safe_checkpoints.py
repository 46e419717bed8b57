"""``safe_checkpoints`` -- torch 2.6 made ``torch.load(weights_only=True)`` the default, and RecBole's
checkpoints hold its ``Config`` object (enums, the model class, a yaml loader class), so the trainer could
no longer reload the best model it had just saved, nor could ``load_data_and_model`` read it; worse, RecBole
writes pickle protocol 4, which torch's weights-only unpickler cannot parse at all. We keep safe loading on:
``Trainer._save_checkpoint`` writes protocol 2 and the config as plain data
(:class:`recgoat_recbole.checkpoint.StoredConfig`), and ``Trainer.evaluate``, ``Trainer.resume_checkpoint``
and ``load_data_and_model`` run inside :func:`recbole_checkpoint_globals`, which first lists the globals the
file references and allows only inert stand-ins for RecBole's config, enums, recommender classes and yaml
loader (older checkpoints), numeric numpy scalars (``best_valid_score``), and numpy arrays / scipy sparse
matrices (csr, csc, coo, lil, dok), which ItemKNN, EASE and Pop keep in ``other_parameter``. Nothing allowed
runs code when the unpickler calls it. Any other global -- ``os.system``, an unknown class -- raises
``pickle.UnpicklingError`` naming it.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import os
import pickle
from typing import Any, Callable, Iterator

#: what :func:`install` replaced (RecBole's own functions)
ORIGINALS: dict[str, Any] = {}



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
    from recgoat_recbole.registry import registered

    registration = None
    # a <Backbone>+Align class is made on first use of its name: only under its own module, never an error here
    if module_name == "recgoat_recbole.aligned" or not attr.endswith("+Align"):
        try:
            registration = registered(attr)
        except ValueError:
            registration = None
    if registration is not None and registration.model_class.__module__ == module_name:
        from recgoat_recbole.checkpoint import GlobalRef

        return (GlobalRef(qualified), qualified)  # an old checkpoint's registered model class, by name
    raise pickle.UnpicklingError(
        f"refusing to load checkpoint: it references {qualified!r}, which is not a RecBole config, enum, "
        "recommender class or numpy/scipy container. Load it yourself with torch.load(..., weights_only=False) "
        "only if you trust it."
    )


#: the allowlisted globals that allocate an array of a size the file names: each gets a bounded stand-in
_ALLOCATORS = ("numpy._core.multiarray._reconstruct", "numpy.core.multiarray._reconstruct", "copyreg._reconstructor")


def _check_shape(shape: Any, dtype: Any, limit: int, what: str) -> None:
    """Refuse an array allocation of more bytes than the checkpoint file holds (its data must be in the file)."""
    import numpy as np

    dims = shape if isinstance(shape, (tuple, list)) else (shape,)
    try:
        count = 1
        for d in dims:
            count *= int(d)
            if count < 0:
                raise ValueError
        size = count * max(1, np.dtype(dtype).itemsize)
    except (TypeError, ValueError, OverflowError):
        raise pickle.UnpicklingError(f"refusing to load checkpoint: {what} with a bad shape {shape!r}") from None
    if size > limit:
        raise pickle.UnpicklingError(f"refusing to load checkpoint: {what} asks for an array of {size:,} bytes, "
                                     f"more than the file's {limit:,}")


def _bounded(qualified: str, entry: Any, limit: int) -> Any:
    """``entry`` for ``qualified``, or a stand-in that checks the allocation it asks for against ``limit``."""
    if qualified not in _ALLOCATORS:
        return entry
    import copyreg

    import numpy as np

    if qualified.endswith("._reconstruct"):
        real = entry

        def reconstruct(subtype: Any, shape: Any, dtype: Any) -> Any:
            _check_shape(shape, dtype if not isinstance(dtype, bytes) else "b", limit, qualified)
            return real(subtype, shape, dtype)

        return (reconstruct, qualified)

    def reconstructor(cls: Any, base: Any, state: Any) -> Any:
        if isinstance(base, type) and issubclass(base, np.ndarray):
            _check_shape(state, "b", limit, qualified)
        elif base not in (object, dict):
            raise pickle.UnpicklingError(f"refusing to load checkpoint: {qualified} of {base!r}")
        return copyreg._reconstructor(cls, base, state)

    return (reconstructor, qualified)


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
    limit = os.path.getsize(path)
    allowed = [_bounded(name, _allowed_checkpoint_global(name), limit) for name in names]
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


def checked_other_parameter(model: Any, para: Any, source: Any = "checkpoint") -> dict | None:
    """A checkpoint's ``other_parameter``, checked before RecBole's ``load_other_parameter`` sets each entry as an
    attribute of the model: a dict whose keys are the model's own ``other_parameter_name`` (``{"training":
    "yes"}`` or a method name is refused) and whose values are data (arrays, sparse matrices, tensors, numbers)."""
    import numbers

    import numpy as np
    import scipy.sparse as sparse
    import torch

    if para is None:
        return None
    if not isinstance(para, dict):
        raise pickle.UnpicklingError(f"refusing {source}: other_parameter must be a dict, got {type(para).__name__}")
    known = set(getattr(model, "other_parameter_name", ()) or ())
    unknown = sorted(map(str, set(para) - known))
    if unknown:
        raise pickle.UnpicklingError(
            f"refusing {source}: other_parameter {', '.join(map(repr, unknown))} is not one of "
            f"{type(model).__name__}'s ({', '.join(sorted(known)) or 'it has none'})")
    for key, value in para.items():
        if not (value is None or isinstance(value, (np.ndarray, np.generic, torch.Tensor, numbers.Number))
                or sparse.issparse(value)) or isinstance(value, bool):
            raise pickle.UnpicklingError(f"refusing {source}: other_parameter {key!r} is a {type(value).__name__}, "
                                         "not an array or a number")
    return para


@contextlib.contextmanager
def _checked_model(model: Any, source: Any) -> Iterator[None]:
    """For the block, ``model.load_other_parameter`` (on this instance only, the class is untouched) checks
    what it is given with :func:`checked_other_parameter`."""
    if model is None or not hasattr(model, "load_other_parameter"):
        yield
        return
    load = model.load_other_parameter
    object.__setattr__(model, "load_other_parameter", lambda para: load(checked_other_parameter(model, para, source)))
    try:
        yield
    finally:
        model.__dict__.pop("load_other_parameter", None)


def _with_checkpoint_globals(fn: Callable, path_of: Callable[..., Any]) -> Callable:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        path = path_of(*args, **kwargs)
        model = getattr(args[0], "model", None) if args else None  # a Trainer's model
        with recbole_checkpoint_globals(path), _checked_model(model, path):
            return fn(*args, **kwargs)

    wrapper.__recgoat_compat__ = True
    return wrapper


def read_checkpoint(model_file: str, device: Any = None) -> dict:
    """A RecBole checkpoint file, loaded safely (:func:`recbole_checkpoint_globals`); ``pickle.UnpicklingError``
    for a file that is not one. ``device`` (e.g. ``"cpu"``): the tensors are loaded there and the config's
    ``device`` is set to it, so a model saved on a GPU is rebuilt on a machine without one (RecBole's
    ``load_data_and_model`` always uses the saved device)."""
    import torch

    target = None if device is None else torch.device(device)
    with recbole_checkpoint_globals(model_file):
        checkpoint = torch.load(model_file, map_location=target)
    if not isinstance(checkpoint, dict) or "config" not in checkpoint or "state_dict" not in checkpoint:
        raise pickle.UnpicklingError(f"{model_file} is not a RecBole checkpoint (no config or state_dict)")
    if target is not None:
        checkpoint["config"]["device"] = target
    return checkpoint


def data_and_model(checkpoint: dict, model_file: str, quiet: bool = False) -> tuple:
    """The rest of RecBole 1.2.1's ``load_data_and_model`` after reading the file, step for step: seed, logger,
    dataset, split, seed again, the model with the checkpoint's weights and its ``other_parameter`` checked
    against the rebuilt model (:func:`checked_other_parameter`). ``quiet``: RecBole's INFO lines (the config,
    the dataset) go to its log file only, not to the console."""
    import logging
    from logging import getLogger

    from recbole.data import create_dataset, data_preparation
    from recbole.utils import get_model, init_logger, init_seed

    config = checkpoint["config"]
    init_seed(config["seed"], config["reproducibility"])
    init_logger(config)
    logger = getLogger()
    if quiet:
        for handler in logger.handlers:
            if isinstance(handler, logging.StreamHandler) and not isinstance(handler, logging.FileHandler):
                handler.setLevel(max(handler.level, logging.WARNING))
    logger.info(config)

    dataset = create_dataset(config)
    logger.info(dataset)
    train_data, valid_data, test_data = data_preparation(config, dataset)

    init_seed(config["seed"], config["reproducibility"])
    model = get_model(config["model"])(config, train_data._dataset).to(config["device"])
    model.load_state_dict(checkpoint["state_dict"])
    model.load_other_parameter(checked_other_parameter(model, checkpoint.get("other_parameter"), model_file))
    return config, model, dataset, train_data, valid_data, test_data


def _load_data_and_model(model_file: str) -> tuple:
    """RecBole 1.2.1's ``load_data_and_model``, step for step, with the checkpoint loaded safely
    (:func:`read_checkpoint`) and its ``other_parameter`` checked against the rebuilt model
    (:func:`data_and_model`)."""
    return data_and_model(read_checkpoint(model_file), model_file)


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
    save_atomically(saved_model_file, lambda f: torch.save(state, f, pickle_protocol=2))
    if verbose:
        self.logger.info(set_color("Saving current", "blue") + f": {saved_model_file}")


def save_atomically(path: str, write: Callable[[Any], Any]) -> None:
    """``write(file)`` into a unique temporary file next to ``path`` (mode as the user's umask gives a new
    file), flushed to disk, then renamed over ``path``: an interrupt (Ctrl-C) or a full disk during the write
    leaves the previous ``path`` whole and no temporary file. A failed write is an ``OSError`` naming ``path``."""
    import tempfile

    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{os.path.basename(path)}.", suffix=".tmp")
    try:
        from recgoat_core.feature_files import new_file_mode

        os.fchmod(fd, new_file_mode())
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(exc, OSError) and not isinstance(exc, FileNotFoundError):
            raise OSError(exc.errno, exc.strerror or str(exc), path) from None
        raise


def install() -> None:
    import recbole.quick_start
    import recbole.quick_start.quick_start as qs
    from recbole.trainer import trainer as trainer_mod

    ORIGINALS.update({
        "evaluate": trainer_mod.Trainer.evaluate,
        "resume_checkpoint": trainer_mod.Trainer.resume_checkpoint,
        "load_data_and_model": qs.load_data_and_model,
        "_save_checkpoint": trainer_mod.Trainer._save_checkpoint,
    })
    trainer_mod.Trainer._save_checkpoint = _save_checkpoint
    trainer_mod.Trainer.evaluate = _with_checkpoint_globals(trainer_mod.Trainer.evaluate, _evaluate_checkpoint)
    trainer_mod.Trainer.resume_checkpoint = _with_checkpoint_globals(
        trainer_mod.Trainer.resume_checkpoint, lambda self, resume_file: resume_file
    )
    loader = functools.wraps(qs.load_data_and_model)(_load_data_and_model)
    loader.__recgoat_compat__ = True
    qs.load_data_and_model = loader
    recbole.quick_start.load_data_and_model = loader
