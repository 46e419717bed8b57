"""``ddp_cpu`` -- RecBole 1.2.1's ``Config._init_device`` hard-codes the NCCL backend and ``cuda:<rank>``
for multi-process runs, and ``AbstractTrainer`` passes ``device_ids`` to ``DistributedDataParallel``, which
CPU modules reject. With ``dist_backend`` (default: ``nccl`` with CUDA, ``gloo`` without) ranks run on
the CPU over gloo; the single-process and NCCL/CUDA paths are RecBole's own. Also, only rank 0 writes the
best checkpoint while every rank reloads it for testing: a barrier before that reload removes the race
(seen as "Expected input to be a checkpoint returned by torch.save" on rank 1), and each rank names
the file from its own clock (``<model>-<local time>.pth``), so when the ranks start in different seconds
rank 1 looks for a file nobody wrote: the reload uses rank 0's name, broadcast. ``ensure_dir``
checks then creates, so two ranks creating ``./log`` together could fail: it uses ``exist_ok=True``.
"""

from __future__ import annotations

import functools
import os
from typing import Any, Callable

from recgoat_recbole.patches.unwrap import recbole_original

#: what :func:`install` replaced (RecBole's own functions)
ORIGINALS: dict[str, Any] = {}


def _init_device(self: Any) -> None:
    """``Config._init_device`` that can run RecBole's multi-process DDP without CUDA.

    RecBole 1.2.1 always calls ``init_process_group(backend="nccl")`` and puts rank r on ``cuda:r``. Here:
    ``dist_backend`` (default ``nccl`` when CUDA is usable, else ``gloo``) picks the backend, and without
    CUDA every rank runs on the CPU. The single-process path and the NCCL/CUDA path are RecBole's own.
    """
    config = self.final_config_dict
    if "local_rank" not in config:  # one process: RecBole's own, untouched (no CUDA call before it sets
        ORIGINALS["_init_device"](self)  # CUDA_VISIBLE_DEVICES: a CUDA context started first ignores gpu_id)
        return
    gpu_id = config["gpu_id"]
    config["gpu_id"] = ",".join(map(str, gpu_id)) if isinstance(gpu_id, tuple) else str(gpu_id)
    os.environ["CUDA_VISIBLE_DEVICES"] = config["gpu_id"]  # as RecBole does, before CUDA is first asked
    import torch

    cuda = torch.cuda.is_available() and bool(config.get("use_gpu", True))
    backend = config.get("dist_backend") or ("nccl" if cuda else "gloo")
    if cuda and backend == "nccl":
        if len(config["gpu_id"].split(",")) < int(config.get("nproc") or 1):  # RecBole: a bare assert
            from recgoat_recbole.config_check import ConfigError

            raise ConfigError(f"{config['nproc']} processes on CUDA need as many GPUs in gpu_id, got "
                              f"{config['gpu_id']!r}: list them (gpu_id: '0,1' / --gpu-id 0,1), or run on the "
                              "CPU (dist_backend: gloo / --device cpu)")
        ORIGINALS["_init_device"](self)
        return
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

    wrapper.__recgoat_compat__ = True
    return wrapper


def _ensure_dir(dir_path: str) -> None:
    """``recbole.utils.ensure_dir`` without its check-then-create race (ranks start together under DDP)."""
    os.makedirs(dir_path, exist_ok=True)


def install() -> None:
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

    ORIGINALS.update({
        "_init_device": configurator.Config._init_device,
        "AbstractTrainer.__init__": trainer_mod.AbstractTrainer.__init__,
        # RecBole's own evaluate, not the safe_checkpoints wrapper this fix wraps (see compat.apply)
        "evaluate": recbole_original(trainer_mod.Trainer.evaluate),
        "ensure_dir": original_ensure_dir,
    })
    configurator.Config._init_device = _init_device
    trainer_mod.AbstractTrainer.__init__ = _abstract_trainer_init
    trainer_mod.Trainer.evaluate = _evaluate_after_barrier(trainer_mod.Trainer.evaluate)
