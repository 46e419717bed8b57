"""RecGOAT through RecBole, in the style of RecBole's tests/model/test_model_auto.py, on a small real dataset."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from recbole.config import Config
from recbole.data import create_dataset, data_preparation
from recbole.quick_start import run_recbole
from recbole.utils import init_seed

from recgoat_recbole import RecGOAT
from recgoat_recbole.features.store import read_features
from tests.conftest import mini_config

VARIANTS = {
    "full": {},
    "id_only": {"id_only": True},
    "without_gat": {"use_gat": False},
    "without_cmcl": {"cmcl_weight": 0.0},
    "without_oat_map": {"use_oat": False},
    "without_wasserstein": {"wasserstein_weight": 0.0},
    "without_user_graph": {"use_user_graph": False},
    "without_rating_weights": {"use_rating_weights": False},
    "fusion_learned": {"fusion": "learned"},
    "fusion_concat": {"fusion": "concat"},
    "fusion_sum": {"fusion": "sum"},
    "oat_authors_variant": {"oat_scale_plan": False, "oat_residual_init": "xavier", "fusion_norm": "layernorm"},
}


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_variant_trains_two_epochs_and_evaluates(mini_ml, variant):
    result = run_recbole(model=RecGOAT, config_dict=mini_config(mini_ml, **VARIANTS[variant]), saved=False)
    test = result["test_result"]
    assert set(test) == {"recall@10", "ndcg@10"}
    assert 0.0 < test["ndcg@10"] <= 1.0  # something was learned and ranked
    assert np.isfinite(result["best_valid_score"])


def _build(mini_ml, **overrides):
    config = Config(model=RecGOAT, config_dict=mini_config(mini_ml, **overrides))
    init_seed(config["seed"], config["reproducibility"])
    dataset = create_dataset(config)
    train, valid, test = data_preparation(config, dataset)
    init_seed(config["seed"], config["reproducibility"])
    return config, dataset, train, valid, RecGOAT(config, train._dataset)


def _grads(model, loss):
    model.zero_grad()
    loss.backward(retain_graph=True)
    return {n: (p.grad.abs().sum().item() if p.grad is not None else 0.0) for n, p in model.named_parameters()}


def test_each_loss_term_reaches_the_parameters_it_should(mini_ml):
    _, _, train, _, model = _build(mini_ml)
    model.train()
    batch = next(iter(train))
    rec, cmcl, ot = model.calculate_loss(batch)
    g_rec, g_cmcl, g_ot = _grads(model, rec), _grads(model, cmcl), _grads(model, ot)
    for name in ("oat_maps.text.residual", "item_projections.genre.weight", "item_gats.text.layers.0.att_src"):
        assert g_cmcl[name] > 0 and g_ot[name] > 0, name
    # the user-profile branch only enters the user side: alignment terms (items only) never touch it
    assert g_rec["profile_projection.weight"] > 0
    assert g_cmcl["profile_projection.weight"] == 0 and g_ot["profile_projection.weight"] == 0
    # switching a term off removes it from the loss
    _, _, train, _, model = _build(mini_ml, cmcl_weight=0.0, wasserstein_weight=0.0)
    assert len(model.calculate_loss(batch)) == 1


@pytest.mark.parametrize("detach", [False, True])
def test_align_detach_target_keeps_alignment_off_the_id_embeddings(mini_ml, detach):
    _, _, train, _, model = _build(mini_ml, align_detach_target=detach)
    model.train()
    batch = next(iter(train))
    _, cmcl, ot = model.calculate_loss(batch)
    for term in (cmcl, ot):
        g = _grads(model, term)
        assert g["oat_maps.text.residual"] > 0  # the views always move
        assert (g["item_embedding.weight"] == 0) == detach
        assert (g["user_embedding.weight"] == 0) == detach  # via LightGCN propagation into item vectors


def test_gamma_zero_scores_warm_items_by_id_and_cold_items_by_features(mini_ml):
    _, _, _, _, model = _build(mini_ml, fusion_gamma=0.0)
    model.eval()
    with torch.no_grad():
        ego = torch.cat([model.user_embedding.weight, model.item_embedding.weight])
        from recgoat_recbole.layers import lightgcn_propagate

        _, item_id = torch.split(lightgcn_propagate(model.adjacency, ego, model.n_layers), [model.n_users, model.n_items])
        _, items, views = model.forward()
    cold = model.cold_items
    assert cold.any() and (~cold).any()
    torch.testing.assert_close(items[~cold], item_id[~cold])
    expected = torch.stack([views[m] for m in model.modalities]).mean(0)
    torch.testing.assert_close(items[cold], expected[cold])
    assert items[cold].norm(dim=1).min() > 0


def test_predict_and_full_sort_predict_agree_and_cache_is_invalidated(mini_ml):
    _, dataset, train, _, model = _build(mini_ml)
    model.eval()
    users = torch.tensor([1, 2, 3])
    items = torch.tensor([5, 9, 11])
    inter = {model.USER_ID: users, model.ITEM_ID: items}
    full = model.full_sort_predict({model.USER_ID: users}).view(3, -1)
    torch.testing.assert_close(model.predict(inter), full[torch.arange(3), items])
    # a training step changes the parameters; the cached embeddings must not survive it
    model.train()
    optimizer = torch.optim.Adam(model.parameters(), lr=0.05)
    loss = sum(model.calculate_loss(next(iter(train))))
    loss.backward()
    optimizer.step()
    model.eval()
    after = model.full_sort_predict({model.USER_ID: users}).view(3, -1)
    assert not torch.allclose(after, full)
    with torch.no_grad():
        u, i, _ = model.forward()
    torch.testing.assert_close(after, u[users] @ i.T)


def test_same_seed_same_metrics(mini_ml):
    a = run_recbole(model=RecGOAT, config_dict=mini_config(mini_ml, epochs=1), saved=False)
    b = run_recbole(model=RecGOAT, config_dict=mini_config(mini_ml, epochs=1), saved=False)
    assert a["test_result"] == b["test_result"]


def test_item_features_are_aligned_by_token_after_filtering(mini_ml):
    _, dataset, train, _, model = _build(mini_ml, item_inter_num_interval="[5,inf)",
                                          user_inter_num_interval="[20,inf)")
    raw = read_features(f"{mini_ml['folder']}/text.npz")
    row_of = {t: r for r, t in enumerate(raw.tokens)}
    tokens = dataset.field2id_token[dataset.iid_field]
    assert len(tokens) < 1 + len(raw.tokens)  # filtering removed items, ids were remapped
    feats = model.item_features["text"].numpy()
    assert np.all(feats[0] == 0)
    for item_id in range(1, len(tokens)):
        expected = raw.features[row_of[tokens[item_id]]]
        np.testing.assert_allclose(feats[item_id], expected / np.linalg.norm(expected), rtol=1e-5, atol=1e-6)
    assert model.user_features is not None and model.user_features.shape[0] == dataset.user_num


def test_fusion_weights_learned_are_a_distribution(mini_ml):
    *_, model = _build(mini_ml, fusion="learned", fusion_weights={"id": 0.6, "text": 0.3, "genre": 0.1})
    weights = model.fusion_weights()
    assert weights["id"] == pytest.approx(0.6, rel=1e-5) and sum(weights.values()) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="unknown parts"):
        _build(mini_ml, fusion_weights={"audio": 1.0})


def test_missing_feature_rows_zero_fill_or_error(mini_ml, tmp_path):
    from recgoat_recbole.features.store import FeatureFileError, write_features

    raw = read_features(f"{mini_ml['folder']}/text.npz")
    partial = write_features(tmp_path / "partial.npz", raw.tokens[:-10], raw.features[:-10])
    with pytest.raises(FeatureFileError, match="have no feature row"):
        _build(mini_ml, item_modalities={"text": partial})
    *_, model = _build(mini_ml, item_modalities={"text": partial}, missing_features="zero")
    assert (model.item_features["text"].abs().sum(1) == 0).sum() == 1 + 10


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
def test_runs_on_cuda(mini_ml):
    result = run_recbole(model=RecGOAT, config_dict=mini_config(mini_ml, epochs=1, use_gpu=True), saved=False)
    assert result["test_result"]["ndcg@10"] > 0
