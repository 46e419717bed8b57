"""Every RecGOAT config key is checked when the model is built: a bad value is one ConfigError naming the key
and its range (and one line with exit status 2 from ``recgoat run``), never a crash at the first step nor a
setting silently ignored."""
from __future__ import annotations

import os

import pytest
import yaml

from recgoat_recbole.config_check import ConfigError, validate
from recgoat_recbole.keys import MODELS, defaults, keys_of, rules
from tests.conftest import mini_config

BAD = [
    ("gat_heads", 0), ("wasserstein_sample_size", 0), ("rating_temperature", 0), ("gat_dropout", 1.0),
    ("gat_dropout", -0.1), ("n_layers", -1), ("knn_k", -1), ("user_knn_k", -3), ("cmcl_weight", -0.1),
    ("wasserstein_weight", -1e-3), ("reg_weight", -1e-4), ("user_profile_weight", -0.5), ("oat_epsilon", 0),
    ("oat_epsilon", -0.01), ("wasserstein_epsilon", 0.0), ("fusion_norm", "LayerNorm"), ("fusion", "mean"),
    ("feature_norm", "L2"), ("oat_residual_init", "ones"), ("use_gat", "yes"), ("embedding_size", 0),
    ("n_layers", 1.5), ("cmcl_temperature", float("nan")), ("fusion_gamma", 1.5), ("oat_iters", 0),
    ("fusion_dropout", 1.0), ("missing_features", "skip"), ("backbone", "GRU4Rec"), ("backbone", "lightgcn"),
]


def _defaults() -> dict:
    return defaults("RecGOAT")


@pytest.mark.parametrize("model", sorted(MODELS))
def test_every_models_defaults_pass_and_every_default_key_has_a_rule(model):
    validate(defaults(model), rules(model))
    unchecked = {k.name for k in keys_of(model) if k.rule is None}
    assert unchecked <= {"item_modalities", "text_encoder", "feature_cache_dir", "user_profile_feat",
                         "fusion_weights", "mm_weights"}, sorted(unchecked)


@pytest.mark.parametrize(("key", "value"), BAD, ids=[f"{k}={v}" for k, v in BAD])
def test_bad_value_is_one_error_naming_the_key(key, value):
    with pytest.raises(ConfigError, match=f"'{key}' must be"):
        validate({**_defaults(), key: value}, rules("RecGOAT"))


def test_heads_must_divide_the_embedding_size():
    with pytest.raises(ConfigError, match="divide"):
        validate({**_defaults(), "embedding_size": 30, "gat_heads": 8}, rules("RecGOAT"))


def test_the_model_validates_when_it_is_built(mini_ml):
    from recbole.config import Config
    from recbole.data import create_dataset, data_preparation

    from recgoat_recbole import RecGOAT

    config = Config(model=RecGOAT, config_dict=mini_config(mini_ml, fusion_norm="LayerNorm"))
    train, _, _ = data_preparation(config, create_dataset(config))
    with pytest.raises(ConfigError, match="fusion_norm"):
        RecGOAT(config, train._dataset)


def _run_cli(capsys, argv) -> tuple[int, str]:
    from recgoat_cli import main

    code = main(argv)
    return code, capsys.readouterr().err


def test_recgoat_run_bad_config_value_is_one_line(mini_ml, capsys):
    with open("bad.yaml", "w", encoding="utf-8") as f:
        yaml.safe_dump(mini_config(mini_ml, gat_heads=0, epochs=1), f)
    code, err = _run_cli(capsys, ["run", "--config", "bad.yaml", "--no-save"])
    assert code == 2
    assert err.strip().startswith("recgoat: error:") and "gat_heads" in err and len(err.strip().splitlines()) == 1


def test_recgoat_run_bad_feature_file_is_one_line(mini_ml, capsys):
    with open("empty.npy", "wb"):
        pass
    with open("bad.yaml", "w", encoding="utf-8") as f:
        yaml.safe_dump(mini_config(mini_ml, epochs=1, item_modalities={"text": os.path.abspath("empty.npy")}), f)
    code, err = _run_cli(capsys, ["run", "--config", "bad.yaml", "--no-save"])
    assert code == 2
    assert err.strip().startswith("recgoat: error:") and "empty.npy" in err and len(err.strip().splitlines()) == 1


def test_recgoat_run_invalid_yaml_is_one_line(capsys):
    with open("broken.yaml", "w", encoding="utf-8") as f:
        f.write("epochs: [1, 2\nmodel: RecGOAT\n")
    code, err = _run_cli(capsys, ["run", "--config", "broken.yaml"])
    assert code == 2 and err.startswith("recgoat: error: invalid YAML") and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("argv", [
    ["features", "image", "noimg", "--model", "x", "-o", "out.npz"],  # a folder without images
    ["features", "text", "missing.tsv", "--columns", "title", "-o", "out.npz"],
    ["features", "profiles", "--dataset", "ml-100k", "--backend", "http", "-o", "p.npz"],  # no --url
])
def test_feature_commands_turn_mistakes_into_one_line(capsys, argv):
    os.makedirs("noimg", exist_ok=True)
    code, err = _run_cli(capsys, argv)
    assert code == 2 and err.startswith("recgoat: error:") and len(err.strip().splitlines()) == 1, err




def test_the_backbone_choices_are_the_plugins_backbones():
    """keys.py cannot import aligned.py (it is below it): the two lists of backbones must agree."""
    from recgoat_recbole.aligned import BACKBONES
    from recgoat_recbole.keys import BACKBONE_NAMES

    assert set(BACKBONE_NAMES) == set(BACKBONES)
