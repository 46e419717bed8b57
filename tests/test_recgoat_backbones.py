"""RecGOAT on any backbone (`backbone`): the plugin's mixin on RecBole's class, plus the paper's own parts."""
from __future__ import annotations

import copy
import glob
import logging
import os
import pickle

import pytest
import torch
from recbole.config import Config
from recbole.data import create_dataset, data_preparation
from recbole.quick_start import load_data_and_model, run_recbole
from recbole.utils import get_model, get_trainer, init_seed

from recgoat_recbole import RecGOAT
from recgoat_recbole.aligned import BACKBONES
from recgoat_recbole.config_check import ConfigError
from recgoat_recbole.model import recgoat_on
from tests.conftest import mini_config

FUSABLE = sorted(name for name, access in BACKBONES.items() if access.fusable)
TABLES = sorted(set(BACKBONES) - set(FUSABLE))  # BPR, SimpleX: score from their own tables
#: the backbone's own loss terms (NCL: BPR + reg, structure contrast, prototype contrast)
BASE_TERMS = {"NCL": 3}
SETTINGS = {"NCL": {"num_clusters": 10}}


def _config(mini_ml, backbone: str, **overrides) -> Config:
    base = {"backbone": backbone, "use_gat": True, "align_gate": False, **SETTINGS.get(backbone, {})}
    if backbone in TABLES:
        base["user_profile_feat"] = None
    return Config(model="RecGOAT", config_dict=mini_config(mini_ml, **{**base, **overrides}))


def _build(mini_ml, backbone: str, **overrides):
    config = _config(mini_ml, backbone, **overrides)
    init_seed(config["seed"], True)
    train, _, _ = data_preparation(config, create_dataset(config))
    init_seed(config["seed"], True)
    return config, get_model("RecGOAT")(config, train.dataset), train


def _batch(train, size: int = 64):
    batch = next(iter(train))
    return batch[torch.arange(min(size, len(batch)))]


@pytest.mark.parametrize("backbone", sorted(BACKBONES))
def test_each_backbone_trains_with_its_own_terms_and_the_alignment(mini_ml, backbone):
    """One step: the backbone's own terms plus CMCL and W (before NCL's prototype term, which NCLTrainer drops
    in warm-up), finite, with the alignment's gradient reaching the projections and the backbone's item table;
    the model is a RecGOAT named RecGOAT, on RecBole's class, and copies and pickles (get_flops, DDP)."""
    _, model, train = _build(mini_ml, backbone)
    assert isinstance(model, RecGOAT) and isinstance(model, type(model).backbone)
    assert type(model).__name__ == "RecGOAT" and type(model).backbone.__name__ == backbone
    assert pickle.loads(pickle.dumps(type(model))) is type(model) is recgoat_on(backbone)
    model.train()
    if backbone == "NCL":
        model.e_step()  # NCLTrainer runs it before each epoch
    terms = model.calculate_loss(_batch(train))
    n_base = BASE_TERMS.get(backbone, 1)
    assert len(terms) == n_base + 2 and all(torch.isfinite(t).all() for t in terms)
    cut = n_base - model.access.trailing_terms
    model.zero_grad()
    sum(terms[cut:cut + 2]).backward()
    for m in model.alignment.modalities:
        assert model.alignment.projections[m].weight.grad.abs().sum() > 0
    assert model._item_table.weight.grad.abs().sum() > 0
    clone = copy.deepcopy(model)
    assert type(clone) is type(model)


@pytest.mark.parametrize("backbone", FUSABLE)
def test_fusion_and_profiles_change_the_scores_where_the_backbone_allows_it(mini_ml, backbone):
    """γ > 0 puts the views into the score and the profile graph moves the users; with both at 0 (and no cold
    items from features) the scores are the backbone's own."""
    _, model, train = _build(mini_ml, backbone, fusion_gamma=0.5, cold_items_from_features=False)
    assert model.use_profiles and model.view_modalities
    batch = _batch(train)
    model.eval()
    both = model.full_sort_predict(batch)
    model.profile_weight = 0.0
    model._invalidate()
    fused = model.full_sort_predict(batch)
    model.fusion_fixed.copy_(torch.tensor([1.0, 0.0, 0.0]))
    plain = model.full_sort_predict(batch)
    assert not torch.allclose(both, fused) and not torch.allclose(fused, plain)
    with torch.no_grad():
        out = type(model).backbone.forward(model, *model.access.args(model))
    expected = out[0][batch[model.USER_ID]] @ out[model.access.index].T
    torch.testing.assert_close(plain.view(len(batch), -1), expected)


@pytest.mark.parametrize("backbone", TABLES)
def test_table_backbones_refuse_what_needs_every_items_vector(mini_ml, backbone):
    """BPR and SimpleX score from their own tables: the views in the score, a learned fusion and the profiles
    are one clear error each; their own scoring is kept (for the warm items: the cold ones score from their
    views, tests/test_cold_scoring.py)."""
    for overrides, what in (({"fusion_gamma": 0.5}, "views cannot enter"), ({"fusion": "learned"}, "views cannot"),
                            ({"user_profile_feat": "profiles.npz"}, "user profiles")):
        with pytest.raises(ConfigError, match=f"backbone {backbone}.*{what}") as info:
            _build(mini_ml, backbone, **overrides)
        assert "\n" not in str(info.value)
    _, model, train = _build(mini_ml, backbone)
    batch = _batch(train)
    model.eval()
    warm = ~model.cold_items
    assert model.cold_items.any()
    got = model.full_sort_predict(batch).view(len(batch), -1)
    own = type(model).backbone.full_sort_predict(model, batch).view(len(batch), -1)
    torch.testing.assert_close(got[:, warm], own[:, warm])
    assert not torch.allclose(got[:, ~warm], own[:, ~warm])


@pytest.mark.parametrize("backbone", ["LightGCN", "NCL"])
def test_the_backbones_products_with_the_graph_take_the_symmetric_backward(mini_ml, backbone):
    """LightGCN's and NCL's own torch.sparse.mm with RecGOAT's graph: the product is the CSR product, its
    backward multiplies by the (symmetric) graph again, not by a transposed copy; the gradient is the same."""
    _, model, _ = _build(mini_ml, backbone)
    graph = getattr(model, model.access.graph[0])
    x = torch.randn(graph.shape[1], 8, requires_grad=True)
    y = torch.sparse.mm(graph, x)
    assert type(y.grad_fn).__name__ == "_SymmetricSpMMBackward"
    x2 = x.detach().clone().requires_grad_()
    y2 = torch.sparse.mm(model.adjacency, x2)
    torch.testing.assert_close(y, y2)
    w = torch.randn_like(y)
    (y * w).sum().backward()
    (y2 * w).sum().backward()
    torch.testing.assert_close(x.grad, x2.grad)
    # and the backbone's forward runs through it
    out = type(model).backbone.forward(model)
    assert "_SymmetricSpMMBackward" in str(_grad_fns(out[1]))


def _grad_fns(t: torch.Tensor, depth: int = 30) -> list[str]:
    names, frontier = [], [t.grad_fn]
    for _ in range(depth):
        frontier = [f for f in frontier if f is not None]
        names += [type(f).__name__ for f in frontier]
        frontier = [g for f in frontier for g, _ in f.next_functions]
    return names


@pytest.mark.parametrize("backbone", ["LightGCN", "NCL", "NGCF"])
def test_rating_aware_graph_replaces_the_backbones_own(mini_ml, backbone):
    """The backbone's graph attribute is RecGOAT's rating-weighted adjacency (from its buffers: it follows
    .to() and deepcopy), in the backbone's layout; without rating weights it is the plain normalised graph."""
    _, model, _ = _build(mini_ml, backbone)
    graph = getattr(model, model.access.graph[0])
    assert graph.layout == (torch.sparse_csr if model.access.graph[1] == "csr" else torch.sparse_coo)
    torch.testing.assert_close(graph.to_dense(), model.adjacency.to_dense())
    _, plain, _ = _build(mini_ml, backbone, use_rating_weights=False)
    assert not torch.allclose(graph.to_dense(), getattr(plain, plain.access.graph[0]).to_dense())
    torch.testing.assert_close(plain.adjacency.to_dense().sum(), type(plain).backbone.get_norm_adj_mat(plain)
                               .to_dense().sum(), rtol=1e-4, atol=1e-4)


def test_sgl_keeps_its_own_graphs_and_says_so(mini_ml, caplog):
    with caplog.at_level(logging.INFO, logger="recgoat_recbole.model"):
        _, model, _ = _build(mini_ml, "SGL")
    assert not hasattr(model, "adj_val") and model.train_graph.layout == torch.sparse_coo
    assert any("rating-aware propagation does not apply to backbone SGL" in r.message for r in caplog.records)


def test_a_config_without_a_backbone_is_lightgcn(mini_ml):
    """Checkpoints from before `backbone` store none: they are RecGOAT on LightGCN, as they were."""
    _, model, _ = _build(mini_ml, None)
    assert type(model).backbone.__name__ == "LightGCN"


@pytest.mark.parametrize("backbone", ["SGL", "NCL", "LightGCN"])
def test_run_recbole_trains_reloads_and_scores_the_same(mini_ml, backbone):
    """run_recbole(model="RecGOAT", config_dict={"backbone": ...}) trains with the backbone's trainer; the
    checkpoint reloads through load_data_and_model as the same class and scores the same; the same seed gives
    the same numbers (SGL, LightGCN)."""
    settings = mini_config(mini_ml, backbone=backbone, epochs=2, **SETTINGS.get(backbone, {}))
    first = run_recbole(model="RecGOAT", config_dict=settings)
    if backbone != "NCL":
        assert run_recbole(model="RecGOAT", config_dict=settings)["test_result"] == first["test_result"]
    checkpoint = max(glob.glob("saved/RecGOAT-*.pth"), key=os.path.getmtime)
    config, model, _, _, _, test = load_data_and_model(checkpoint)
    assert type(model) is recgoat_on(backbone) and config["backbone"] == backbone
    trainer = get_trainer(config["MODEL_TYPE"], config["model"])(config, model)
    assert type(trainer).__name__ == ("NCLTrainer" if backbone == "NCL" else "Trainer")
    reloaded = trainer.evaluate(test, load_best_model=False, show_progress=False)
    assert dict(reloaded) == dict(first["test_result"])


@pytest.mark.parametrize("key, value", [("id_ssl_weight", 0.1), ("id_ssl_drop_ratio", 0.2),
                                        ("item_graph_layers", 1)])
def test_removed_keys_stop_a_run_with_one_clear_error(mini_ml, key, value):
    with pytest.raises(ConfigError, match=f"^{key} was removed: ") as info:
        run_recbole(model="RecGOAT", config_dict=mini_config(mini_ml, **{key: value}))
    assert "\n" not in str(info.value)


def test_the_default_backbone_is_keys_py_s_and_its_yaml_comes_with_it(mini_ml, monkeypatch):
    """A config that names no backbone gets keys.py's default *and that backbone's RecBole YAML* (its ssl_tau,
    ...); `backbone: ~` (and an old checkpoint, which stores none) stays LightGCN whatever the default."""
    from dataclasses import replace

    from recgoat_recbole import keys

    changed = tuple(replace(k, default="SGL") if k.name == "backbone" else k for k in keys.MODELS["RecGOAT"])
    monkeypatch.setitem(keys.MODELS, "RecGOAT", changed)
    config = Config(model="RecGOAT", config_dict=mini_config(mini_ml))
    assert config["backbone"] == "SGL" and config["ssl_tau"] is not None and config["drop_ratio"] is not None
    init_seed(config["seed"], True)
    train, _, _ = data_preparation(config, create_dataset(config))
    model = get_model("RecGOAT")(config, train.dataset)
    assert type(model).backbone.__name__ == "SGL"
    model.train()
    assert torch.isfinite(sum(t for t in model.calculate_loss(_batch(train)))).all()
    _, legacy, _ = _build(mini_ml, None)
    assert type(legacy).backbone.__name__ == "LightGCN"
