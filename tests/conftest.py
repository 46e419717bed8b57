"""Shared fixtures. Every test runs in its own temporary working directory (RecBole writes log/, saved/)."""
from __future__ import annotations

import contextlib
import os
import shutil
from typing import Iterator

# One thread per process: the tests use tiny tensors, and several test processes (DDP ranks, subprocess
# checks) share the two cores of CI; with torch's default thread pool they oversubscribe them.
os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

import recgoat_recbole  # noqa: E402,F401  (compat + registration)

torch.set_num_threads(1)

ML100K = os.path.join(os.path.dirname(__import__("recbole").__file__), "dataset_example", "ml-100k")
SHARED_DATA = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data"))


@pytest.fixture(autouse=True)
def _workdir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("sys.argv", ["pytest"])  # RecBole's Config parses sys.argv
    yield tmp_path


@pytest.fixture(scope="session")
def mini_ml(tmp_path_factory) -> dict:
    return build_mini_ml(tmp_path_factory.mktemp("data"))


def build_mini_ml(root) -> dict:
    """A small real dataset: the first 150 users of the embedded ml-100k, as RecBole atomic files, with the
    items' text encoded by the offline MiniLM (row order shuffled, so alignment must go by token)."""
    from pathlib import Path

    root = Path(root)
    folder = root / "ml-mini"
    folder.mkdir(parents=True)
    inter = pd.read_csv(os.path.join(ML100K, "ml-100k.inter"), sep="\t")
    users = sorted(inter["user_id:token"].unique())[:150]
    inter = inter[inter["user_id:token"].isin(users)]
    inter.to_csv(folder / "ml-mini.inter", sep="\t", index=False)
    items = pd.read_csv(os.path.join(ML100K, "ml-100k.item"), sep="\t", dtype=str, keep_default_na=False)
    items = items[items["item_id:token"].astype(int).isin(inter["item_id:token"].unique())]
    items.to_csv(folder / "ml-mini.item", sep="\t", index=False)
    from recgoat_core.feature_files import write_features
    from recgoat_recbole.features.text import compose_texts, encode_texts, load_text_encoder, read_table

    table = read_table(folder / "ml-mini.item")
    encoder = load_text_encoder()
    feats = encode_texts(compose_texts(table, ["movie_title", "class"]), encoder, show_progress=False)
    order = np.random.default_rng(0).permutation(len(table))
    write_features(folder / "text.npz", table["item_id"].to_numpy()[order], feats[order])
    genres = {g: i for i, g in enumerate(sorted({g for c in table["class"] for g in c.split()}))}
    onehot = np.zeros((len(table), len(genres)), dtype=np.float32)
    for r, c in enumerate(table["class"]):
        onehot[r, [genres[g] for g in c.split()]] = 1.0
    write_features(folder / "genre.npz", table["item_id"].to_numpy(), onehot + 0.01)
    profile_users = np.array(sorted(inter["user_id:token"].unique()))
    profiles = np.random.default_rng(1).normal(size=(len(profile_users), 24)).astype(np.float32)
    write_features(folder / "profiles.npz", profile_users.astype(str), profiles)
    return {"data_path": str(root), "dataset": "ml-mini", "folder": str(folder)}


def mini_config(mini_ml: dict, **overrides) -> dict:
    """A fast RecGOAT config on ``mini_ml`` (all components on unless overridden)."""
    config = {
        "data_path": mini_ml["data_path"],
        "dataset": mini_ml["dataset"],
        "load_col": {"inter": ["user_id", "item_id", "rating", "timestamp"]},
        "item_modalities": {"text": "text.npz", "genre": "genre.npz"},
        "user_profile_feat": "profiles.npz",
        "epochs": 2,
        "train_batch_size": 1024,
        "eval_batch_size": 100000,
        "embedding_size": 32,
        "gat_heads": 4,
        "show_progress": False,
        "save_dataset": False,
        "seed": 7,
        "reproducibility": True,
        "metrics": ["Recall", "NDCG"],
        "topk": [10],
        "valid_metric": "NDCG@10",
        "eval_args": {"split": {"RS": [0.8, 0.1, 0.1]}, "order": "RO", "group_by": "user", "mode": "full"},
    }
    config.update(overrides)
    return config


def requires_shared(name: str) -> str:
    path = os.path.join(SHARED_DATA, name)
    if not os.path.isdir(path):
        pytest.skip(f"shared dataset {name!r} not found at {path} (benchmark data lives outside the project)")
    return path


def copy_tree(src: str, dst: str) -> str:
    shutil.copytree(src, dst)
    return dst


def two_dataset_configs(tmp_path) -> dict[str, str]:
    """Two tiny dataset YAMLs for benchmark-design tests: ``mm`` with an item modality, ``plain`` without."""
    with_features = tmp_path / "mm.yaml"
    with_features.write_text("dataset: mm\nitem_modalities: {text: text.npz}\n")
    plain = tmp_path / "plain.yaml"
    plain.write_text("dataset: plain\n")
    return {"mm": str(with_features), "plain": str(plain)}


#: a payload planted in files: it creates ``PWNED`` in the working directory if anything ever runs it
PAYLOAD = "__import__('pathlib').Path('PWNED').touch()"


class Reduce:
    """Pickles as ``REDUCE(func, args)``: what an attacker writes into a checkpoint or cache."""

    def __init__(self, func, args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


@contextlib.contextmanager
def working_dir(path) -> Iterator[None]:
    """Run the block in ``path`` (module-scoped fixtures train in their own folder: RecBole writes saved/)."""
    cwd = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(cwd)
