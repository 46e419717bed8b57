"""One benchmark run, in its own process: ``python -m recgoat_recbole.bench.worker SPEC_JSON``.

The run is :func:`recgoat_recbole.training.run_training` with the spec's YAML files and overrides: selection on
the validation split, one evaluation on test from the best checkpoint, full ranking. It prints one JSON line:
the test and best-validation metrics, the number of epochs trained, the mean epoch time, the total wall time,
the peak memory of the process (RSS; CUDA peak when on a GPU), the config keys changed to fit the dataset, the
epoch budget and patience, the validation curve (``[epochs trained, valid_metric]`` at every validation) with
its best epoch, and every test user's NDCG@10 and Recall@20 (:mod:`recgoat_recbole.bench.stats`). When the test
split has cold items (no train interaction), also ``cold`` (:func:`cold_record`): their counts, the metrics of
each slice of :data:`recgoat_recbole.training.COLD_SLICES` and its users' NDCG@10 and Recall@20.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

__all__ = ["peak_memory_mib", "run_spec", "cold_record"]


def peak_memory_mib(device) -> float:
    """Peak memory of this process: CUDA's peak allocation on a GPU, else the peak RSS.

    On Linux the peak RSS is ``VmHWM`` of ``/proc/self/status``: ``ru_maxrss`` carries over ``exec`` from the
    parent, so a child started by a large process would report the parent's peak."""
    import resource

    import torch

    if device.type == "cuda":
        return torch.cuda.max_memory_allocated() / 2**20
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _fit_to_dataset(config, dataset) -> dict[str, Any]:
    """Defaults of RecBole built-ins that cannot work on a small dataset, changed (and recorded) before the model.

    NCL clusters users and items with k-means into ``num_clusters`` (default 1000); faiss refuses more
    clusters than points, and ml-100k has 944 users. It (and ``NCL+Align``, and RecGOAT on ``backbone: NCL``)
    gets a tenth of the smaller side instead.

    A YAML or a tuned point written for RecGOAT may put the views into the score (``fusion_gamma`` > 0);
    ``BPR+Align`` and ``SimpleX+Align`` cannot (their ``forward`` gives no item vectors), so they get
    γ 0 there: the alignment terms still apply, the score stays the backbone's.
    """
    from recgoat_recbole.aligned import aligned, fit_ncl_clusters, is_aligned_name
    from recgoat_recbole.config_check import config_value

    adjusted: dict[str, Any] = {}
    model = config["model"]
    on_ncl = model == "RecGOAT" and config_value(config, "backbone") == "NCL"
    if model in ("NCL", "NCL+Align") or on_ncl:
        adjusted.update(fit_ncl_clusters(config, dataset, model))
    gamma = float(config_value(config, "fusion_gamma") or 0)
    if gamma > 0 and is_aligned_name(model) and not aligned(model).access.fusable:
        adjusted["fusion_gamma"] = 0.0
    for key, value in adjusted.items():
        config[key] = value
    return adjusted


def cold_record(cold: dict | None) -> dict | None:
    """A record's ``cold``, from :attr:`recgoat_recbole.training.TrainingResult.cold`::

        {"items": cold items, "test_items": ..., "test_interactions": ...,
         "test": {"cold": {"users": n, "recall@10": ..., ...}, "among_cold": {...}, "warm": {...}},
         "per_user": {"cold": <encode_per_user>, "among_cold": ..., "warm": ...}}

    ``None`` without cold test items."""
    from recgoat_recbole.bench.stats import encode_per_user

    if not cold:
        return None
    return {"items": int(cold["items"]), "test_items": int(cold["test_items"]),
            "test_interactions": int(cold["test_interactions"]),
            "test": {name: {k: (int(v) if k == "users" else float(v)) for k, v in values.items()}
                     for name, values in cold["test"].items()},
            "per_user": {name: encode_per_user(values) for name, values in cold["per_user"].items()}}


def run_spec(spec: dict) -> dict:
    """Run one spec (the fields of a :class:`~recgoat_recbole.bench.design.RunSpec`) in this process."""
    from recgoat_recbole.training import run_training

    import contextlib

    from recgoat_recbole.bench.pop_counts import NOTE, counting_every_interaction
    from recgoat_recbole.bench.stats import encode_per_user

    overrides = dict(spec["overrides"])
    overrides["seed"] = spec["seed"]
    pop = spec["model"] == "Pop"  # the bench's Pop counts every interaction (bench/pop_counts.py), this run only
    # RecBole's per-epoch log goes to stderr (shown live by the parent) and to log/
    with counting_every_interaction() if pop else contextlib.nullcontext():
        result = run_training(spec["model"], config_file_list=list(spec["config_files"]) or None,
                              config_dict=overrides, saved=True, show_progress=False, log_details=False,
                              before_model=_fit_to_dataset)
    if pop:
        result.adjusted["Pop.calculate_loss"] = NOTE
    checkpoint = None
    if result.checkpoint and spec.get("keep_checkpoint"):
        checkpoint = os.path.relpath(result.checkpoint)  # relative to the run's working directory
    elif result.checkpoint:
        os.remove(result.checkpoint)  # the metrics are kept; the checkpoint is not needed
    cold = cold_record(result.cold)
    return {
        **({"cold": cold} if cold else {}),  # (only when the test split has cold items)
        "checkpoint": checkpoint,
        "test": {k: float(v) for k, v in result.test_result.items()},
        "valid": {k: float(v) for k, v in result.best_valid_result.items()},
        "epochs": result.epochs,
        "epoch_s": result.mean_epoch_s,
        "total_s": result.total_s,
        "peak_mib": peak_memory_mib(result.config["device"]),
        # the budget and how the run ended: the cap binds when the run trained all `epochs_cap` epochs and its
        # best validation came within the last `stopping_step` validations (it was still improving)
        "epochs_cap": int(result.config["epochs"]),
        "model_type": result.config["MODEL_TYPE"].name,  # TRADITIONAL: closed form or one pass, no budget
        "stopping_step": int(result.config["stopping_step"]),
        "best_epoch": result.best_epoch,
        "valid_curve": [[int(e), round(float(v), 6)] for e, v in result.valid_curve],
        "per_user": encode_per_user(result.per_user),
        "device": str(result.config["device"]),
        "adjusted": result.adjusted,
    }


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    spec = json.loads(argv[0])
    sys.argv = sys.argv[:1]  # RecBole's Config parses sys.argv
    print(json.dumps(run_spec(spec)))


if __name__ == "__main__":
    main()
