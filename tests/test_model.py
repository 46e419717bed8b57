"""RecGOAT through RecBole, in the style of RecBole's tests/model/test_model_auto.py, on a small real dataset."""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from recbole.data.interaction import Interaction
from recbole.quick_start import run_recbole
from recbole.trainer import Trainer

from recgoat_recbole import RecGOAT
from recgoat_core.feature_files import read_features
from recgoat_core.alignment.cmcl import info_nce
from recgoat_core.graphs import knn_graph, normalized_adjacency
from recgoat_core.layers import lightgcn_propagate
from recgoat_recbole.config_check import ConfigError
from tests.conftest import mini_config
from tests.helpers import build_recgoat, mean_margin, pairwise_batch

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


def _grads(model, loss):
    model.zero_grad()
    loss.backward(retain_graph=True)
    return {n: (p.grad.abs().sum().item() if p.grad is not None else 0.0) for n, p in model.named_parameters()}


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_variant_loss_terms_present_finite_and_reaching_their_parameters(mini_ml, variant):
    """Each ablation / fusion variant at unit level: exactly the terms it switches on, all finite; BPR reaches the
    ID, modality, profile and fusion parameters it scores with, the alignment terms the item branches (never the
    user-profile branch); one Adam step on the BPR term raises the batch's positive-over-negative margin."""
    config, _, train, _, model = build_recgoat(mini_ml, **VARIANTS[variant])
    batch = pairwise_batch(model, train)
    modal = not config["id_only"]
    assert model.modalities == (["genre", "text"] if modal else [])
    assert model.use_profiles == (modal and config["use_user_graph"])
    assert set(model.alignment.gats) == (set(model.modalities) if config["use_gat"] else set())
    assert set(model.alignment.oat_maps) == (set(model.modalities) if config["use_oat"] else set())
    model.train()
    terms = model.calculate_loss(batch)
    assert len(terms) == 1 + modal * ((config["cmcl_weight"] > 0) + (config["wasserstein_weight"] > 0))
    assert all(t.numel() == 1 and torch.isfinite(t).all() and t > 0 for t in terms)

    g = _grads(model, terms[0])
    reached = ["user_embedding.weight", "item_embedding.weight"]
    reached += [f"alignment.projections.{m}.weight" for m in model.modalities]
    reached += ["profile_projection.weight"] if model.use_profiles else []
    reached += {"learned": ["fusion_logits"], "concat": ["concat_projection.weight"]}.get(config["fusion"], [])
    assert all(g[name] > 0 for name in reached), [name for name in reached if g[name] == 0]
    for term in terms[1:]:
        g = _grads(model, term)
        for m in model.modalities:
            assert g[f"alignment.projections.{m}.weight"] > 0
            assert not config["use_oat"] or g[f"alignment.oat_maps.{m}.residual"] > 0
            assert not config["use_gat"] or g[f"alignment.gats.{m}.layers.0.att_src"] > 0
        assert not model.use_profiles or g["profile_projection.weight"] == 0

    before = mean_margin(model, batch)
    model.train()
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    optimizer.zero_grad()
    model.calculate_loss(batch)[0].sum().backward()
    optimizer.step()
    assert mean_margin(model, batch) > before + 1e-3


def test_rating_weights_off_is_plain_lightgcn_normalisation(mini_ml):
    """``use_rating_weights: false``: every edge of the user–item graph is 1/sqrt(deg_u deg_i); with the
    ratings on, the weights differ."""
    *_, model = build_recgoat(mini_ml, use_rating_weights=False)
    degree = model.adj_crow.diff()
    rows = torch.repeat_interleave(torch.arange(len(degree)), degree)
    plain = 1 / torch.sqrt(degree[rows].double() * degree[model.adj_col].double())
    torch.testing.assert_close(model.adj_val.double(), plain)
    *_, weighted = build_recgoat(mini_ml)
    assert not torch.allclose(weighted.adj_val.double(), plain)


def test_fusion_sum_and_layernorm_are_what_they_say(mini_ml):
    """``fusion: sum`` adds the ID part and every view; the authors' variant (``fusion_norm: layernorm``) gives
    zero-mean item rows of variance at most 1, and an OAT map without the factor d and with a non-zero residual."""
    for overrides, check in (
        (VARIANTS["fusion_sum"], "sum"),
        (VARIANTS["oat_authors_variant"], "layernorm"),
    ):
        *_, model = build_recgoat(mini_ml, **overrides)
        model.eval()
        with torch.no_grad():
            _, items, views = model.representations()
            ego = torch.cat([model.user_embedding.weight, model.item_embedding.weight])
            item_id = lightgcn_propagate(model.adjacency, ego, model.n_layers)[model.n_users:]
        if check == "sum":
            torch.testing.assert_close(items, item_id + sum(views.values()))
        else:
            torch.testing.assert_close(items.mean(1), torch.zeros(model.n_items), atol=1e-5, rtol=0)
            var = items.var(1, unbiased=False)  # v / (v + 1e-5): at most 1, near 1 unless the row is tiny
            assert (var <= 1 + 1e-5).all() and var.median() > 0.5
            assert all(oat.residual.abs().sum() > 0 and not oat.scale_plan for oat in model.alignment.oat_maps.values())


def test_full_model_trains_and_evaluates_through_run_recbole(mini_ml):
    """The one end-to-end run on CPU: ``run_recbole`` with every component on, two epochs, both metrics.
    (Same-seed determinism of two such runs: tests/test_patches.py::test_run_recbole_with_class_and_with_name;
    the training direction: test_training_lowers_the_loss_and_ranks_validation_items_far_above_chance below.)"""
    result = run_recbole(model=RecGOAT, config_dict=mini_config(mini_ml), saved=False)
    assert set(result["test_result"]) == {"recall@10", "ndcg@10"}
    assert 0.0 < result["test_result"]["ndcg@10"] <= 1.0
    assert np.isfinite(result["best_valid_score"])


@pytest.mark.parametrize("detach", [False, True])
def test_align_detach_target_keeps_alignment_off_the_id_embeddings(mini_ml, detach):
    _, _, train, _, model = build_recgoat(mini_ml, align_detach_target=detach)
    model.train()
    batch = next(iter(train))
    _, cmcl, ot = model.calculate_loss(batch)
    for term in (cmcl, ot):
        g = _grads(model, term)
        assert g["alignment.oat_maps.text.residual"] > 0  # the views always move
        assert (g["item_embedding.weight"] == 0) == detach
        assert (g["user_embedding.weight"] == 0) == detach  # via LightGCN propagation into item vectors


def test_gamma_zero_scores_warm_items_by_id_and_cold_items_by_features(mini_ml):
    _, _, _, _, model = build_recgoat(mini_ml, fusion_gamma=0.0)
    model.eval()
    with torch.no_grad():
        ego = torch.cat([model.user_embedding.weight, model.item_embedding.weight])
        _, item_id = torch.split(lightgcn_propagate(model.adjacency, ego, model.n_layers), [model.n_users, model.n_items])
        _, items, views = model.representations()
    cold = model.cold_items
    assert cold.any() and (~cold).any()
    torch.testing.assert_close(items[~cold], item_id[~cold])
    expected = torch.stack([views[m] for m in model.modalities]).mean(0)
    torch.testing.assert_close(items[cold], expected[cold])
    assert items[cold].norm(dim=1).min() > 0


@pytest.mark.parametrize("target", ["output", "embedding"])
def test_align_target_picks_what_the_views_are_aligned_with(mini_ml, target):
    """align_target: output (the paper) aligns the views with the fused, propagated item vectors; embedding (our
    extension) with the layer-0 item table, which then gets the alignment's gradient without propagation."""
    _, _, train, _, model = build_recgoat(mini_ml, align_target=target, use_gat=False, use_oat=False)
    seen = {}
    original = model.alignment.batch_loss

    def spy(views, target_rows):
        seen["target"] = target_rows
        return original(views, target_rows)

    model.alignment.batch_loss = spy
    model.train()
    batch = pairwise_batch(model, train)
    losses = model.calculate_loss(batch)
    rows = torch.unique(batch[model.ITEM_ID])  # the step's distinct positive items
    if target == "embedding":
        torch.testing.assert_close(seen["target"], model.item_embedding.weight[rows])
    else:
        _, items, _ = model.representations()
        torch.testing.assert_close(seen["target"], items[rows])
    grads = _grads(model, sum(losses[1:]))
    assert grads["item_embedding.weight"] > 0


def test_align_gate_fallback_aligns_closed_modalities_with_the_embedding_table(mini_ml):
    """align_gate_fallback: embedding: a modality the gate closes is aligned with the layer-0 item table (what
    align_target: embedding does) instead of not at all; an open one keeps the output target."""
    _, _, train, _, closed = build_recgoat(mini_ml, align_gate=True, align_gate_min_lift=1000.0,
                                    align_gate_fallback="embedding", use_gat=False)
    assert set(closed.align_targets.values()) == {"embedding"} and closed.alignment.has_loss
    _, _, _, _, same = build_recgoat(mini_ml, align_target="embedding", use_gat=False)
    same.load_state_dict(closed.state_dict())
    closed.train(), same.train()
    batch = pairwise_batch(closed, train)
    torch.manual_seed(0)
    ours = closed.calculate_loss(batch)
    torch.manual_seed(0)
    theirs = same.calculate_loss(batch)
    assert len(ours) == len(theirs) == 3
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a, b)
    _, _, _, _, opened = build_recgoat(mini_ml, align_gate=True, align_gate_min_lift=1.0,
                                       align_gate_fallback="embedding")
    assert set(opened.align_targets.values()) == {"output"}


def test_removed_keys_are_one_clear_error(mini_ml):
    """id_ssl_* (now backbone: SGL) and item_graph_* (now the peer FREEDOM): one ConfigError naming the key and
    where its job went; an old checkpoint's stored defaults (0 / off) are not an error."""
    for key, value, where in (("id_ssl_weight", 0.5, "backbone: SGL"), ("id_ssl_temperature", 0.5, "backbone: SGL"),
                              ("item_graph_layers", 2, "model: FREEDOM"), ("item_graph_weights", {"text": 1.0},
                                                                           "model: FREEDOM")):
        with pytest.raises(ConfigError, match=f"{key} was removed.*{where}") as info:
            build_recgoat(mini_ml, **{key: value})
        assert "\n" not in str(info.value)


def test_predict_and_full_sort_predict_agree_and_cache_is_invalidated(mini_ml):
    _, dataset, train, _, model = build_recgoat(mini_ml)
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
        u, i, _ = model.representations()
    torch.testing.assert_close(after, u[users] @ i.T)


def test_item_features_are_aligned_by_token_after_filtering(mini_ml):
    _, dataset, train, _, model = build_recgoat(mini_ml, item_inter_num_interval="[5,inf)",
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
    *_, model = build_recgoat(mini_ml, fusion="learned", fusion_weights={"id": 0.6, "text": 0.3, "genre": 0.1})
    weights = model.fusion_weights()
    assert weights["id"] == pytest.approx(0.6, rel=1e-5) and sum(weights.values()) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="unknown parts"):
        build_recgoat(mini_ml, fusion_weights={"audio": 1.0})


def test_missing_feature_rows_zero_fill_or_error(mini_ml, tmp_path):
    from recgoat_core.feature_files import FeatureFileError, write_features

    raw = read_features(f"{mini_ml['folder']}/text.npz")
    partial = write_features(tmp_path / "partial.npz", raw.tokens[:-10], raw.features[:-10])
    with pytest.raises(FeatureFileError, match="have no feature row"):
        build_recgoat(mini_ml, item_modalities={"text": partial})
    *_, model = build_recgoat(mini_ml, item_modalities={"text": partial}, missing_features="zero")
    assert (model.item_features["text"].abs().sum(1) == 0).sum() == 1 + 10


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
def test_runs_on_cuda(mini_ml):
    result = run_recbole(model=RecGOAT, config_dict=mini_config(mini_ml, epochs=1, use_gpu=True), saved=False)
    assert result["test_result"]["ndcg@10"] > 0


# ------------------------------------------------- learning in the right direction through RecBole's Trainer
EPOCHS = 4


def _ndcg(trainer, valid) -> float:
    return trainer.evaluate(valid, load_best_model=False, show_progress=False)["ndcg@10"]


def test_training_lowers_the_loss_and_ranks_validation_items_far_above_chance(mini_ml):
    """Four epochs of the full model: the epoch loss falls, and validation NDCG@10 is at least 3x both the untrained
    model's and a random scorer's (a model that learns the wrong way, e.g. BPR with positive and negative
    swapped, ends up at or below chance)."""
    config, _, train, valid, model = build_recgoat(mini_ml, epochs=EPOCHS, learning_rate=0.01)
    trainer = Trainer(config, model)
    untrained = _ndcg(trainer, valid)

    g = torch.Generator().manual_seed(0)
    model.full_sort_predict = lambda inter: torch.rand(len(inter[model.USER_ID]) * model.n_items, generator=g)
    chance = _ndcg(trainer, valid)
    del model.full_sort_predict

    trainer.fit(train, None, saved=False, show_progress=False)
    losses = [float(trainer.train_loss_dict[epoch]) for epoch in range(EPOCHS)]
    trained = _ndcg(trainer, valid)
    assert losses[-1] < 0.95 * losses[0], losses
    assert trained > 3 * max(untrained, chance), (trained, untrained, chance)
