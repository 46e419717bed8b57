"""Builders shared by several test modules (the pytest fixtures and ``mini_config`` live in ``conftest.py``)."""
from __future__ import annotations

import numpy as np
import torch
from recbole.config import Config
from recbole.data import create_dataset, data_preparation
from recbole.data.interaction import Interaction
from recbole.utils import init_seed

from recgoat_recbole import RecGOAT
from tests.conftest import mini_config


#: RecGOAT with every component on: the GAT views, every modality aligned, the views in the score (the defaults
#: leave the first and the last off and gate the second, which would leave those parts untested here), on the
#: paper's LightGCN ID branch (named, so that these tests keep testing it whatever the default backbone is;
#: the other backbones: tests/test_recgoat_backbones.py)
FULL_RECGOAT = {"backbone": "LightGCN", "use_gat": True, "align_gate": False, "fusion_gamma": None}


def build_recgoat(mini_ml, **overrides):
    """``(config, dataset, train, valid, model)``: an untrained RecGOAT on ``mini_ml`` with every component on
    (:data:`FULL_RECGOAT`) and ``overrides``."""
    config = Config(model=RecGOAT, config_dict=mini_config(mini_ml, **{**FULL_RECGOAT, **overrides}))
    init_seed(config["seed"], config["reproducibility"])
    dataset = create_dataset(config)
    train, valid, test = data_preparation(config, dataset)
    init_seed(config["seed"], config["reproducibility"])
    return config, dataset, train, valid, RecGOAT(config, train._dataset)


def pairwise_batch(model, train, size=32, seed=0) -> Interaction:
    """A hand-made pairwise batch: ``size`` training interactions drawn across users, one negative each."""
    inter = train._dataset.inter_feat
    g = torch.Generator().manual_seed(seed)
    rows = torch.randperm(len(inter), generator=g)[:size]
    users, pos = inter[model.USER_ID][rows], inter[model.ITEM_ID][rows]
    neg = torch.randint(1, model.n_items, (size,), generator=g)
    neg = torch.where(neg == pos, neg % (model.n_items - 1) + 1, neg)
    return Interaction({model.USER_ID: users, model.ITEM_ID: pos, model.NEG_ITEM_ID: neg})


def mean_margin(model, batch) -> torch.Tensor:
    """Mean of s(u, pos) - s(u, neg) over the batch, in eval mode (no dropout)."""
    model.eval()
    with torch.no_grad():
        users, items, _ = model.representations()
    u = users[batch[model.USER_ID]]
    return ((u * items[batch[model.ITEM_ID]]).sum(-1) - (u * items[batch[model.NEG_ITEM_ID]]).sum(-1)).mean()


def lightgcn_source(folder, n_users: int = 30, n_items: int = 40, seed: int = 3):
    """A LightGCN-layout source folder (train/valid/test.txt, 8 items a user) with an ``img.npy`` feature file."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True)
    lines = {s: [] for s in ("train", "valid", "test")}
    for u in range(n_users):
        items = rng.choice(n_items, 8, replace=False)
        lines["train"].append(" ".join(map(str, [u, *items[:6]])))
        lines["valid"].append(f"{u} {items[6]}")
        lines["test"].append(f"{u} {items[7]}")
    for split, rows in lines.items():
        (folder / f"{split}.txt").write_text("\n".join(rows) + "\n")
    np.save(folder / "img.npy", rng.normal(size=(n_items, 5)).astype(np.float32))
    return folder


def imported_splits(folder: str, name: str = "toy") -> "pd.DataFrame":
    """The three atomic files ``recgoat data import`` wrote to ``folder`` (``<name>.train/valid/test.inter``) as
    one frame, the field types stripped from the column names and ``split`` 0 / 1 / 2."""
    import pandas as pd

    parts = []
    for label, split in enumerate(("train", "valid", "test")):
        part = pd.read_csv(f"{folder}/{name}.{split}.inter", sep="\t")
        part.columns = [c.split(":")[0] for c in part.columns]
        parts.append(part.assign(split=label))
    return pd.concat(parts, ignore_index=True)
