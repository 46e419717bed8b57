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


# ------------------------------------------------------------------------------ oat_plan_every, align_max_items
def _module(**settings) -> FeatureAlignment:
    torch.manual_seed(0)
    feats = {"text": torch.randn(60, 24), "image": torch.randn(60, 40)}
    return FeatureAlignment(feats, AlignmentSettings(**{"embedding_size": 8, "use_gat": False, **settings}))


def _count_whole_projections(module: FeatureAlignment) -> list[int]:
    """Appends 1 to the list each time a projection sees every item's features (the plan's projection)."""
    seen: list[int] = []
    for projection in module.projections.values():
        projection.register_forward_hook(lambda mod, inputs, out: seen.append(1) if len(inputs[0]) == 60 else None)
    return seen


@pytest.mark.parametrize("use_oat", [True, False])
def test_oat_plan_every_reuses_the_plan_and_scale_between_fits(use_oat):
    """With N = 3 the plan and the whole view's norm are fitted on steps 1 and 4 only; a step between maps its batch
    with the kept plan and the *current* Δ, scaled by the kept norm and the current reference."""
    module = _module(oat_plan_every=3, use_oat=use_oat)
    module.train()
    whole = _count_whole_projections(module)
    reference = torch.randn(60, 8)
    items = torch.tensor([2, 5, 9, 30])
    first = module.batch_views(reference, items)
    assert len(whole) == 2  # both modalities fitted on the first step
    kept = {m: (module._reused[m][0], module._reused[m][1]) for m in module.modalities}
    with torch.no_grad():  # an optimiser step between: Δ, the projections and the reference all move
        for p in module.parameters():
            p.add_(0.05 * torch.randn_like(p))
    reference = reference + 0.1 * torch.randn(60, 8)
    second = module.batch_views(reference, items)
    assert len(whole) == 2  # reused: no projection of every item
    for m in module.modalities:
        plan, whole_rms = kept[m]
        h = module.projections[m](module.features[m][items])
        if use_oat:
            h = h @ (8 * plan + module.oat_maps[m].residual)
        expected = h * (reference.pow(2).sum(1).mean().sqrt() / whole_rms)
        torch.testing.assert_close(second[m], expected)
        assert not torch.allclose(second[m], first[m])
    module.batch_views(reference, items)
    assert len(whole) == 2  # the third step of the three
    module.batch_views(reference, items)
    assert len(whole) == 4  # the fourth fits again
    module.train()  # a new epoch: fitted afresh
    module.batch_views(reference, items)
    assert len(whole) == 6


def test_oat_plan_every_one_and_eval_mode_fit_every_call():
    """N = 1 (the default) keeps nothing; in eval mode a module with N > 1 fits on every call and keeps nothing
    (its views are every item's, indexed)."""
    for settings, train in (({}, True), ({"oat_plan_every": 4}, False)):
        module = _module(**settings)
        module.train(train)
        whole = _count_whole_projections(module)
        reference, items = torch.randn(60, 8), torch.tensor([1, 4, 7])
        for calls in range(1, 4):
            out = module.batch_views(reference, items)
            assert len(whole) == 2 * calls and module._reused == {}
        if not train:
            for m, v in module.views(reference).items():
                torch.testing.assert_close(out[m], v[items])


def test_align_max_items_draws_a_subset_of_the_distinct_items():
    module = _module(align_max_items=5)
    items = torch.tensor([9, 3, 3, 40, 12, 7, 7, 51, 22, 3])  # 7 distinct
    torch.manual_seed(4)
    batch = module.batch_items(items)
    torch.manual_seed(4)
    expected = torch.unique(items)[torch.randperm(7)[:5]].sort().values
    assert torch.equal(batch, expected) and len(batch) == 5
    state = torch.get_rng_state()
    assert torch.equal(module.batch_items(items[:4]), torch.tensor([3, 9, 40]))  # ≤ M distinct: all, nothing drawn
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.equal(_module().batch_items(items), torch.unique(items))  # the default: every distinct item
    with pytest.raises(ValueError, match="align_max_items"):
        _module(align_max_items=0)
    with pytest.raises(ValueError, match="oat_plan_every"):
        _module(oat_plan_every=0)
