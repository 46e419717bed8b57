"""The keys are declared once (recgoat_recbole.keys); the docs' tables are generated from that declaration and
the models, the plugin and the dataset cache read it."""
from __future__ import annotations

import os

import pytest

from recgoat_core.feature_alignment import AlignmentSettings
from recgoat_recbole.keys import HOOK_KEYS, MODELS, defaults, markdown, render_docs

DOCS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "docs")


@pytest.mark.parametrize("page", ["config.md", "peers.md"])
def test_the_docs_tables_are_what_the_declaration_generates(page):
    with open(os.path.join(DOCS, page), encoding="utf-8") as f:
        text = f.read()
    assert "<!-- keys " in text
    assert render_docs(text) == text, f"docs/{page} is stale: python -m recgoat_recbole.keys docs/{page}"


def test_every_model_key_is_in_a_generated_table_once():
    with open(os.path.join(DOCS, "config.md"), encoding="utf-8") as f:
        config = f.read()
    for key in defaults("RecGOAT"):
        assert config.count(f"| `{key}` |") == 2 if key in defaults("Align") else 1, key
    assert markdown("FREEDOM").count("| `dropout` |") == 1


def test_each_key_is_declared_once_per_model_and_the_hook_is_shared():
    hook = [k.name for k in HOOK_KEYS]
    for model, keys in MODELS.items():
        names = [k.name for k in keys]
        assert len(names) == len(set(names)), model
        assert names[:len(hook)] == hook, model  # every model that reads features reads the same hook keys


def test_the_core_settings_defaults_are_the_plugins():
    """The plain-PyTorch AlignmentSettings (recgoat_core) and the plugin agree on every default they share,
    except the two the plugin chose on validation (no GAT views, γ 0)."""
    plugin = defaults("Align")
    core = AlignmentSettings()
    differ = {f: (getattr(core, f), plugin[f]) for f in plugin if hasattr(core, f) and getattr(core, f) != plugin[f]}
    assert set(differ) <= {"use_gat", "fusion_gamma"}, differ
