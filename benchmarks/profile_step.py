"""Where a RecGOAT training step goes: milliseconds per step for each part, against RecBole's LightGCN step.

    python benchmarks/profile_step.py --config data/scientific/scientific.yaml
    python benchmarks/profile_step.py --dataset ml-100k --set use_gat=true use_oat=true wasserstein_weight=0.001

Builds and trains the model through :func:`recgoat_recbole.training.run_training` (one epoch, so that the
OAT map's warm start and Adam's state are those of a model in training), then runs ``--epochs`` more epochs of
the same RecBole trainer (``Trainer._train_epoch``: its own steps, data loading included), with wall-clock
timers wrapped around the parts: the ID branch's propagation, each part of the
modality views (the GAT, the OAT map's Sinkhorn plan and its map; the rest of the views is the 512 -> d
projections and the rescaling), the fusion, each alignment term's forward (CMCL, W), the ID-branch graph
contrast, the backward pass and the optimiser step. Nested parts are indented under their parent; the backward
pass is one number (autograd runs every term's backward together; ``torch.profiler`` splits it by operator).
One thread by default (``OMP_NUM_THREADS``), CPU unless the config asks for a GPU (timers synchronise it).
``--model LightGCN`` (or any RecBole model) times its step as a whole, for the ratio.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import os
import statistics
import sys
import time
from typing import Any, Callable

os.environ.setdefault("OMP_NUM_THREADS", "1")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

#: (module path, object name, attribute, label): what is timed, outermost first (labels nest by indentation);
#: module None: an attribute of the built model's class (``backbone``: RecBole's class of its ID branch)
PARTS = [
    (None, "backbone", "forward", "ID branch propagation"),  # the model's backbone class (LightGCN by default)
    ("recgoat_core.feature_alignment", "FeatureAlignment", "views", "modality views (all parts)"),
    ("recgoat_core.layers", "GAT", "forward", "  item GAT"),
    ("recgoat_core.alignment.oat", "OATMap", "forward", "  OAT map (plan + map)"),
    ("recgoat_core.alignment.oat", "OATMap", "plan", "    Sinkhorn plan"),
    ("recgoat_recbole.model", "RecGOAT", "_fuse", "fusion"),
    ("recgoat_core.feature_alignment", "FeatureAlignment", "loss", "alignment terms (forward)"),
    ("recgoat_core.alignment.cmcl", "CMCLoss", "forward", "  CMCL (InfoNCE)"),
    ("recgoat_core.alignment.wasserstein", "WassersteinLoss", "forward", "  W term"),
]


class Timers:
    def __init__(self, sync: Callable[[], None]) -> None:
        self.total: dict[str, float] = collections.defaultdict(float)
        self.sync = sync

    @contextlib.contextmanager
    def time(self, label: str):
        self.sync()
        start = time.perf_counter()
        try:
            yield
        finally:
            self.sync()
            self.total[label] += time.perf_counter() - start

    def wrap(self, owner: Any, attribute: str, label: str) -> None:
        func = getattr(owner, attribute)

        def timed(*args, **kwargs):
            with self.time(label):
                return func(*args, **kwargs)

        setattr(owner, attribute, timed)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="RecGOAT")
    parser.add_argument("--dataset", default=None, help="RecBole dataset name (default: the YAML's)")
    parser.add_argument("--config", action="append", default=None, help="RecBole YAML, repeatable")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=YAML", help="config overrides")
    parser.add_argument("--epochs", type=int, default=3, help="timed epochs after the first one")
    parser.add_argument("--seed", type=int, default=2020)
    args = parser.parse_args()
    sys.argv = sys.argv[:1]  # RecBole's Config parses sys.argv
    import importlib

    import torch
    import yaml

    import logging

    import recgoat_recbole  # noqa: F401  (registers the models, file-relative data_path)
    from recgoat_recbole.training import run_training

    logging.disable(logging.INFO)

    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
    overrides = {"seed": args.seed, "epochs": 1, "eval_step": 0, "show_progress": False, "save_dataset": False}
    for item in args.set:
        key, _, value = item.partition("=")
        overrides[key] = yaml.safe_load(value)
    from recgoat_recbole.bench.design import find_config

    files = args.config or ([find_config(args.dataset)] if args.dataset else [])
    result = run_training(args.model, args.dataset, files, overrides, saved=False, evaluate_test=False,
                          show_progress=False, log_details=False)
    model, train_data, config = result.model, result.data[0], result.config
    cuda = config["device"].type == "cuda"
    timers = Timers(torch.cuda.synchronize if cuda else (lambda: None))
    if args.model == "RecGOAT":
        for module, owner, attribute, label in PARTS:
            if module is None:
                timers.wrap(getattr(type(model), owner), attribute, label)
                continue
            mod = importlib.import_module(module)
            timers.wrap(getattr(mod, owner) if owner else mod, attribute, label)
    trainer = result.trainer
    # the steps are RecBole's own (``Trainer._train_epoch``: calculate_loss, backward, the optimiser step), timed
    # from outside: the model's calculate_loss, Tensor.backward and this optimiser's step are wrapped
    timers.wrap(model, "calculate_loss", "calculate_loss (all)")
    timers.wrap(torch.Tensor, "backward", "backward (every term)")
    timers.wrap(trainer.optimizer, "step", "optimiser step")
    epoch_times = []
    for epoch in range(args.epochs):
        start = time.perf_counter()
        trainer._train_epoch(train_data, epoch + 1, show_progress=False)
        timers.sync()
        epoch_times.append(time.perf_counter() - start)
    steps = len(train_data) * args.epochs
    timers.total["step (all, with data loading)"] = sum(epoch_times)
    order = ["step (all, with data loading)", "calculate_loss (all)", *(p[3] for p in PARTS),
             "backward (every term)", "optimiser step"]
    print(f"{args.model}, {' '.join(files)} {' '.join(args.set)}: {steps} steps over {args.epochs} epochs, "
          f"median epoch {statistics.median(epoch_times):.3f} s, one thread: {torch.get_num_threads() == 1}")
    print("| part | ms per step |\n| --- | --- |")
    for label in order:
        if label in timers.total:
            depth = (len(label) - len(label.lstrip())) // 2
            print(f"| {'↳ ' * depth}{label.strip()} | {1000 * timers.total[label] / steps:.2f} |")


if __name__ == "__main__":
    main()
