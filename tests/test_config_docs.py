"""docs/config.md documents exactly the keys of the defaults YAML, with the same defaults, and each has a rule."""
from __future__ import annotations

import os
import re

import yaml

from recgoat_recbole.models import PROPERTIES_DIR
from recgoat_recbole.config_check import RULES

DOCS = os.path.join(os.path.dirname(__file__), "..", "docs", "config.md")
FREE_FORM = {"item_modalities", "text_encoder", "feature_cache_dir", "user_profile_feat", "fusion_weights",
             "item_graph_weights"}


def _documented() -> dict[str, str]:
    rows = re.findall(r"^\| `([a-z_]+)` \| ([^|]*) \|", open(DOCS, encoding="utf-8").read(), flags=re.M)
    return {key: default.strip() for key, default in rows}


def _value(text: str):
    value = yaml.safe_load(text)
    try:  # YAML 1.1 reads 1e-4 (no dot) as a string
        return float(value) if isinstance(value, str) else value
    except ValueError:
        return value


def _defaults() -> dict:
    with open(os.path.join(PROPERTIES_DIR, "RecGOAT.yaml"), encoding="utf-8") as f:
        return yaml.safe_load(f)


def test_every_default_key_is_documented_with_its_default_and_nothing_else():
    documented, defaults = _documented(), _defaults()
    assert set(documented) == set(defaults), (sorted(set(defaults) - set(documented)),
                                              sorted(set(documented) - set(defaults)))
    for key, value in defaults.items():
        assert _value(documented[key]) == value, f"{key}: docs say {documented[key]!r}, YAML has {value!r}"


def test_every_key_has_a_validation_rule_or_is_free_form():
    assert set(_defaults()) == set(RULES) | FREE_FORM
