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
