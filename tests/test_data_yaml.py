"""Data YAMLs describe data; model settings live in the model's defaults (recgoat_recbole.keys) or a named
model YAML (recbole_configs/paper.yaml and the per-dataset paper YAMLs built on it)."""
from __future__ import annotations

import os

import numpy as np
import pandas as pd
import pytest
import yaml

from recgoat_recbole.config_check import ConfigError
from recgoat_recbole.importers import import_mmrec
from recgoat_recbole.keys import HOOK_KEYS, MODELS, defaults

CONFIGS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "recbole_configs")
#: what a data YAML may hold: files, split, fields, modalities, metrics, eval batch, and the shared budget
DATA_KEYS = {"dataset", "data_path", "benchmark_filename", "load_col", "item_modalities", "filter_inter_by_user_or_item",
             "user_inter_num_interval", "item_inter_num_interval", "eval_args", "metrics", "topk", "valid_metric",
             "eval_batch_size", "stopping_step"}
#: the per-dataset values of the official README
PAPER_DATASETS = {"baby": {"knn_k": 20, "embedding_size": 800, "cmcl_weight": 0.032, "epochs": 1000},
                  "sports": {"knn_k": 30, "embedding_size": 600, "cmcl_weight": 0.005, "epochs": 1000},
                  "electronics": {"knn_k": 20, "embedding_size": 200, "cmcl_weight": 0.05, "epochs": 2000}}


def _baby_shaped(folder: str, n_users: int = 40, n_items: int = 30) -> str:
    """A small MMRec folder named baby: x_label split, text and image features."""
    rng = np.random.default_rng(0)
    os.makedirs(folder)
    rows = [(u, int(i), 0) for u in range(n_users) for i in rng.choice(n_items, 5, replace=False)]
    rows += [(u, int(rng.integers(n_items)), 1 + u % 2) for u in range(n_users)]
    frame = pd.DataFrame(rows, columns=["userID", "itemID", "x_label"]).drop_duplicates(["userID", "itemID"])
    frame.to_csv(f"{folder}/baby.inter", sep="\t", index=False)
    np.save(f"{folder}/text_feat.npy", rng.normal(size=(n_items, 12)).astype(np.float32))
    np.save(f"{folder}/image_feat.npy", rng.normal(size=(n_items, 16)).astype(np.float32))
    return folder


@pytest.fixture
def imported_baby(tmp_path) -> str:
    report = import_mmrec(_baby_shaped(str(tmp_path / "src")), str(tmp_path / "data"))
    return report.config


def _model_keys() -> set[str]:
    hook = {k.name for k in HOOK_KEYS}
    return {k.name for keys in MODELS.values() for k in keys} - hook


def test_the_imported_yaml_holds_data_and_no_model_setting(imported_baby):
    with open(imported_baby, encoding="utf-8") as f:
        written = yaml.safe_load(f)
    assert set(written) <= DATA_KEYS, sorted(set(written) - DATA_KEYS)
    assert not set(written) & _model_keys()
    assert set(written["item_modalities"]) == {"text", "image"}


def test_the_imported_yaml_alone_gives_recgoats_defaults_which_are_todays_imported_settings(imported_baby):
    """`recgoat run` on an imported folder is the model it was: the import used to write use_gat: false,
    fusion_gamma: 0, align_gate: true; these are RecGOAT's defaults now, so every model key is as before."""
    from recbole.config import Config

    now = Config(model="RecGOAT", config_file_list=[imported_baby])
    before = Config(model="RecGOAT", config_file_list=[imported_baby],
                    config_dict={"use_gat": False, "fusion_gamma": 0.0, "align_gate": True})
    for key in defaults("RecGOAT"):
        assert now[key] == before[key], key
    assert (now["use_gat"], now["fusion_gamma"], now["align_gate"]) == (False, 0.0, True)


def test_baby_yaml_over_an_imported_baby_folder_builds_the_papers_settings(imported_baby):
    from recbole.config import Config
    from recbole.data import create_dataset, data_preparation
    from recbole.utils import init_seed

    from recgoat_recbole import RecGOAT

    config = Config(model="RecGOAT", config_file_list=[imported_baby, os.path.join(CONFIGS, "baby.yaml")],
                    config_dict={"embedding_size": 16})  # a small d for the fixture; the rest as the paper
    assert config["use_gat"] is True and config["align_gate"] is False and config["n_layers"] == 3
    assert config["backbone"] == "LightGCN"  # the paper's, named: RecGOAT's default backbone may be another
    assert config["fusion_weights"] == {"id": 0.15, "text": 0.8, "image": 0.05} and config["knn_k"] == 20
    init_seed(2020, True)
    train, _, _ = data_preparation(config, create_dataset(config))
    model = RecGOAT(config, train.dataset)
    # the fusion weights the paper gives (id, image, text in the model's sorted order), not the γ default's
    assert model.fusion_fixed.tolist() == pytest.approx([0.15, 0.05, 0.8])
    assert model.use_gat and len(model.alignment.gats) == 2 and type(model).backbone.__name__ == "LightGCN"


@pytest.mark.parametrize("name", sorted(PAPER_DATASETS))
def test_each_paper_yaml_is_paper_yaml_plus_its_datasets_values(name):
    def load(file):
        with open(os.path.join(CONFIGS, file), encoding="utf-8") as f:
            return yaml.safe_load(f)

    paper, dataset = load("paper.yaml"), load(f"{name}.yaml")
    assert dataset == {**paper, **PAPER_DATASETS[name]}
    assert not set(dataset) & DATA_KEYS - {"stopping_step"}  # model settings only: the data comes from the import


def test_fusion_gamma_and_fusion_weights_both_set_is_one_error(imported_baby):
    from recbole.config import Config
    from recbole.data import create_dataset, data_preparation

    from recgoat_recbole import RecGOAT

    config = Config(model="RecGOAT", config_file_list=[imported_baby],
                    config_dict={"fusion_gamma": 0.0, "fusion_weights": {"id": 0.5, "text": 0.5}})
    train, _, _ = data_preparation(config, create_dataset(config))
    with pytest.raises(ConfigError, match="fusion_gamma .* and fusion_weights .* both set"):
        RecGOAT(config, train.dataset)
    # the weights alone win over γ's default, and the run's config says so
    config = Config(model="RecGOAT", config_file_list=[imported_baby],
                    config_dict={"fusion_weights": {"id": 0.5, "text": 0.25, "image": 0.25}})
    model = RecGOAT(config, train.dataset)
    assert model.fusion_fixed.tolist() == pytest.approx([0.5, 0.25, 0.25]) and config["fusion_gamma"] is None


def test_the_data_only_yamls_hold_data_and_no_model_setting():
    folder = os.path.join(CONFIGS, "data")
    files = sorted(f for f in os.listdir(folder) if f.endswith(".yaml"))
    assert files
    for name in files:
        with open(os.path.join(folder, name), encoding="utf-8") as f:
            written = yaml.safe_load(f)
        allowed = DATA_KEYS | {"user_profile_feat"}  # (profiles: the user side's data)
        assert set(written) <= allowed, (name, sorted(set(written) - allowed))
        assert not set(written) & _model_keys(), name


def test_the_top_level_yamls_are_model_yamls_with_no_data_setting():
    """recbole_configs/*.yaml name model settings (the paper's configuration); data lives in recbole_configs/data/
    and the imports. The MovieLens-100k and TikTok YAMLs once mixed both, so a reader could not tell which of a
    run's settings were the model's."""
    files = sorted(f for f in os.listdir(CONFIGS) if f.endswith(".yaml"))
    assert "paper.yaml" in files
    budget = {"stopping_step"}  # the paper's patience: a training setting both kinds of file may hold
    for name in files:
        with open(os.path.join(CONFIGS, name), encoding="utf-8") as f:
            written = yaml.safe_load(f)
        data = set(written) & (DATA_KEYS | {"user_profile_feat"}) - budget
        assert not data, (name, sorted(data))


def test_a_dataset_name_finds_its_data_yaml_and_no_model_settings(tmp_path, monkeypatch):
    """`recgoat bench --datasets ml-100k` (and the demo, bench_speed) without --config reads the data YAML, so each
    model runs at its defaults; an imported folder under ./recgoat_data is found by its name too."""
    from recgoat_recbole.bench.design import find_config

    monkeypatch.chdir(tmp_path)
    assert find_config("ml-100k") == os.path.join(CONFIGS, "data", "ml-100k.yaml")
    with pytest.raises(FileNotFoundError, match="recbole_configs/data/baby.yaml and recgoat_data/baby/baby.yaml"):
        find_config("baby")
    report = import_mmrec(_baby_shaped(str(tmp_path / "src")), "recgoat_data")
    assert os.path.samefile(find_config("baby"), report.config)


def test_the_papers_fusion_on_data_without_text_and_image(mini_ml):
    """paper.yaml's fusion weights name text and image; on other modalities (the fixture: text and genre;
    TikTok: image and audio) it is one error, and paper-fusion-any.yaml keeps the authors' ID weight with the
    modalities sharing the rest."""
    from recbole.config import Config
    from recbole.data import create_dataset, data_preparation
    from recbole.utils import init_seed

    from recgoat_recbole import RecGOAT
    from tests.conftest import mini_config

    settings = mini_config(mini_ml, user_profile_feat=None, epochs=1, embedding_size=16)
    paper, any_ = os.path.join(CONFIGS, "paper.yaml"), os.path.join(CONFIGS, "paper-fusion-any.yaml")
    # (the last: docs/protocol.md's "views out of the score" and "equal fusion weights" rows over these files)
    for files, extra, expected in (([paper], {}, None),
                                   ([paper, any_], {}, {"id": 0.15, "genre": 0.425, "text": 0.425}),
                                   ([paper, any_], {"fusion_gamma": 0, "fusion_weights": None},
                                    {"id": 1.0, "genre": 0.0, "text": 0.0}),
                                   ([paper, any_], {"fusion_weights": {"id": 0.5}},
                                    {"id": 0.5, "genre": 0.25, "text": 0.25})):
        config = Config(model="RecGOAT", config_file_list=files, config_dict={**settings, **extra})
        init_seed(config["seed"], True)
        train, _, _ = data_preparation(config, create_dataset(config))
        if expected is None:
            with pytest.raises(ConfigError, match="fusion_weights names unknown parts"):
                RecGOAT(config, train.dataset)
            continue
        model = RecGOAT(config, train.dataset)
        assert model.fusion_weights() == pytest.approx(expected)
        assert model.use_gat and sorted(model.alignment.aligned) == ["genre", "text"]  # (paper.yaml: no gate)
