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

from recgoat_recbole.compat import ORIGINALS


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


def install() -> None:
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
