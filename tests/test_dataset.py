"""The model–dataset contract: features configured but not carried by the dataset are one clear error, never
an ID-only RecGOAT in disguise."""
from __future__ import annotations

import pytest
from recbole.config import Config
from recbole.data import create_dataset
from recbole.data.dataset import Dataset

from recgoat_recbole import RecGOAT
from recgoat_recbole.dataset import FeatureContractError, features_for_model
from tests.conftest import mini_config


def test_plain_recbole_dataset_with_features_configured_is_refused(mini_ml):
    config = Config(model=RecGOAT, config_dict=mini_config(mini_ml, user_profile_feat=None))
    plain = Dataset(config)  # RecBole's own: loads no feature file
    with pytest.raises(FeatureContractError, match="loaded no features"):
        RecGOAT(config, plain)


def test_unbuilt_dataset_has_no_profiles_and_says_so(mini_ml):
    config = Config(model=RecGOAT, config_dict=mini_config(mini_ml))
    dataset = create_dataset(config)  # profiles are attached by build(), after the split
    with pytest.raises(FeatureContractError, match="no user profiles"):
        features_for_model(config, dataset)
    items, users = features_for_model(config, dataset.build()[0])
    assert set(items) == {"text", "genre"} and users is not None


def test_id_only_reads_nothing(mini_ml):
    config = Config(model=RecGOAT, config_dict=mini_config(mini_ml, id_only=True))
    assert features_for_model(config, Dataset(config)) == ({}, None)


def test_template_profiles_without_columns_summarise_the_item_files_own_columns(mini_ml, tmp_path, monkeypatch):
    """``auto:template`` with no columns used to mean ml-100k's (movie_title, class, release_year), which
    another dataset's .item file lacks (silently empty profiles); it is every column of this dataset's .item
    file but the item id, in the file's order."""
    from recbole.data import data_preparation

    from recgoat_recbole.features import profiles
    from tests.conftest import copy_tree

    folder = copy_tree(mini_ml["folder"], str(tmp_path / "ml-mini"))
    item_file = f"{folder}/ml-mini.item"
    with open(item_file, encoding="utf-8") as f:
        header, rest = f.readline(), f.read()
    with open(item_file, "w", encoding="utf-8") as f:
        f.write(header.replace("movie_title:", "title:").replace("class:", "genre:") + rest)
    seen = []
    original = profiles.cached_template_profiles
    monkeypatch.setattr(profiles, "cached_template_profiles",
                        lambda split, table, columns, *a: seen.append(list(columns)) or original(split, table, columns, *a))
    config = Config(model=RecGOAT, config_dict=mini_config(
        {**mini_ml, "data_path": str(tmp_path)}, user_profile_feat="auto:template",
        feature_cache_dir=str(tmp_path / "cache")))
    train, _, _ = data_preparation(config, create_dataset(config))
    assert seen == [["title", "release_year", "genre"]]
    assert train.dataset.user_features is not None
