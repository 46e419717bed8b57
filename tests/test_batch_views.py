"""A training step whose views do not enter the score computes the views of its batch's items alone
(FeatureAlignment.batch_views): the same values and gradients as every item's views indexed, for the core module
and for the plugin's and RecGOAT's alignment terms."""
from __future__ import annotations

import pytest
import torch
from recbole.config import Config
from recbole.data import create_dataset, data_preparation
from recbole.utils import get_model, init_seed

from recgoat_core.feature_alignment import AlignmentSettings, FeatureAlignment
from tests.conftest import mini_config


def _full(alignment: FeatureAlignment):
    """batch_views computed the long way: every item's views, then the rows."""
    return lambda item_rep, items, modalities=None, rows=None: {
        m: v[items] for m, v in alignment.views(item_rep, modalities, rows).items()}


def _grads(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.grad.clone() for n, p in module.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("settings", [
    {}, {"use_oat": False}, {"match_scale": False}, {"use_oat": False, "match_scale": False},
    {"use_gat": True, "gat_heads": 2, "knn_k": 4},
    {"oat_plan_grad": True},
])
@pytest.mark.parametrize("with_rows", [False, True])
def test_batch_views_are_every_items_views_at_the_batch(settings, with_rows):
    torch.manual_seed(0)
    feats = {"text": torch.randn(60, 24), "image": torch.randn(60, 40)}
    module = FeatureAlignment(feats, AlignmentSettings(**{"embedding_size": 8, "use_gat": False, **settings}))
    module.train()
    reference = torch.randn(60, 8, requires_grad=True)
    rows = torch.rand(60) > 0.2 if with_rows else None
    items = torch.tensor([3, 7, 8, 21, 40, 59])
    results = []
    for compute in (module.batch_views, _full(module)):
        module.zero_grad()
        reference.grad = None
        for oat in module.oat_maps.values():
            oat._potentials = None  # both start Sinkhorn from scratch
        torch.manual_seed(1)  # (the GAT's dropout)
        views = compute(reference, items, None, rows)
        terms = module.batch_loss(views, reference[items])
        sum(terms).backward()
        results.append(({m: v.detach() for m, v in views.items()}, [t.detach() for t in terms],
                        _grads(module), reference.grad.clone()))
    (fast_views, fast_terms, fast_grads, fast_ref), (views, terms, grads, ref) = results
    for m in feats:
        torch.testing.assert_close(fast_views[m], views[m], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(torch.stack(fast_terms), torch.stack(terms), rtol=1e-5, atol=1e-7)
    assert fast_grads.keys() == grads.keys() and any(n.startswith("projections.image") for n in grads)
    for name in grads:
        torch.testing.assert_close(fast_grads[name], grads[name], rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(fast_ref, ref, rtol=1e-4, atol=1e-6)


def _build(mini_ml, model: str, **overrides):
    base = {"align_gate": False, "user_profile_feat": None, **overrides}
    config = Config(model=model, config_dict=mini_config(mini_ml, **base))
    init_seed(config["seed"], True)
    train, _, _ = data_preparation(config, create_dataset(config))
    init_seed(config["seed"], True)
    return get_model(model)(config, train.dataset), train


@pytest.mark.parametrize("model_name, extra", [
    ("LightGCN+Align", {}), ("SGL+Align", {}), ("BPR+Align", {}),
    ("RecGOAT", {"backbone": "LightGCN", "use_gat": False, "fusion_gamma": 0}),
    ("RecGOAT", {"backbone": "LightGCN", "use_gat": False, "fusion_gamma": 0, "align_target": "embedding"}),
])
def test_a_step_without_views_in_the_score_trains_as_with_every_items_views(mini_ml, model_name, extra):
    """The loss terms and every parameter's gradient of one training step, through the batch's own views and
    through every item's views (the former path), agree; and no view of every item is computed in training."""
    model, train = _build(mini_ml, model_name, **extra)
    batch = next(iter(train))
    results = []
    for long_way in (False, True):
        init_seed(7, True)  # SGL's augmented graphs (drawn by train()) and any sampling drawn alike
        model.train()
        for oat in model.alignment.oat_maps.values():
            oat._potentials = None
        if long_way:
            model.alignment.batch_views = _full(model.alignment)
        calls = []
        hook = model.alignment.projections[model.alignment.modalities[0]].register_forward_hook(
            lambda _m, inputs, _o: calls.append(len(inputs[0])))
        model.zero_grad()
        terms = model.calculate_loss(batch)
        sum(terms).backward()
        hook.remove()
        results.append(([float(t) for t in terms], _grads(model), calls))
    (fast_terms, fast_grads, fast_calls), (terms, grads, _) = results
    assert fast_terms == pytest.approx(terms, rel=1e-5)
    assert fast_grads.keys() == grads.keys()
    for name in grads:
        torch.testing.assert_close(fast_grads[name], grads[name], rtol=1e-4, atol=1e-6)
    # the fast step projects every item once (no autograd: the OAT plan and the scale) and the batch's items once
    n_items = model.n_items
    assert len(fast_calls) == 2 and max(fast_calls) == n_items and min(fast_calls) < n_items


@pytest.mark.parametrize("model_name, extra", [
    ("LightGCN+Align", {}), ("RecGOAT", {"backbone": "LightGCN", "use_gat": False, "fusion_gamma": 0}),
])
def test_scoring_computes_no_view_the_score_does_not_read(mini_ml, model_name, extra):
    """γ 0 and no cold item to place (cold_items_from_features off): evaluation is the backbone's own scoring,
    without projecting any feature; with the cold items placed, the views are computed."""
    model, train = _build(mini_ml, model_name, cold_items_from_features=False, **extra)
    batch = next(iter(train))[torch.arange(16)]
    calls = []
    for m in model.alignment.modalities:
        model.alignment.projections[m].register_forward_hook(lambda *_: calls.append(1))
    model.eval()
    with torch.no_grad():
        scores = model.full_sort_predict(batch).view(len(batch), -1)
        users, items = type(model).backbone.forward(model)[:2]
    assert not calls
    torch.testing.assert_close(scores, users[batch[model.USER_ID]] @ items.T)
    placed, _ = _build(mini_ml, model_name, **extra)
    for m in placed.alignment.modalities:
        placed.alignment.projections[m].register_forward_hook(lambda *_: calls.append(1))
    placed.eval()
    with torch.no_grad():
        placed.full_sort_predict(batch)
    assert calls
