"""The alignment plugin: `<Backbone>+Align` adds the feature alignment to RecBole's own recommenders."""
from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
from recbole.config import Config
from recbole.data import create_dataset, data_preparation
from recbole.quick_start import load_data_and_model, run_recbole
from recbole.utils import get_model, get_trainer, init_seed

from recgoat_core.layers import lightgcn_propagate
from recgoat_recbole import aligned
from recgoat_recbole.aligned import BACKBONES
from recgoat_recbole.config_check import ConfigError
from tests.conftest import mini_config

BACKBONE_SETTINGS = {"NCL": {"num_clusters": 10}}


def _config(mini_ml, model: str, **overrides) -> Config:
    # the gate is tested on its own below; here every modality is aligned, whatever its lift on the fixture
    base = {"align_gate": False, **BACKBONE_SETTINGS.get(model.split("+")[0], {})}
    if model == "RecGOAT":  # (its LightGCN branch, whatever the default backbone)
        base["backbone"] = "LightGCN"
    settings = mini_config(mini_ml, user_profile_feat=None, **{**base, **overrides})
    return Config(model=model, config_dict=settings)


def _build(mini_ml, model: str, **overrides):
    config = _config(mini_ml, model, **overrides)
    init_seed(config["seed"], True)
    train, valid, test = data_preparation(config, create_dataset(config))
    init_seed(config["seed"], True)
    return config, get_model(model)(config, train.dataset), train


def _batch(train, size: int = 64):
    batch = next(iter(train))
    return batch[torch.arange(min(size, len(batch)))]


@pytest.mark.parametrize("backbone", sorted(BACKBONES))
def test_each_backbone_gets_alignment_terms_that_reach_its_item_vectors(mini_ml, backbone):
    """Every listed backbone: its own loss terms plus CMCL and W, finite, with gradients reaching the feature
    projections *and* the backbone's own item embedding table through the alignment terms alone."""
    config, model, train = _build(mini_ml, backbone + "+Align", use_gat=True)
    plain_config, plain, _ = _build(mini_ml, backbone)
    for m in (model, plain):
        m.train()  # SGL draws its augmented graphs here
        if hasattr(m, "e_step"):  # NCL's clustering, which NCLTrainer runs before each epoch
            m.e_step()
    batch = _batch(train)
    plain_terms = plain.calculate_loss(batch)
    plain_terms = plain_terms if isinstance(plain_terms, tuple) else (plain_terms,)
    seen = {}
    original_views = model.alignment.batch_views  # (γ 0: the step's views are the batch's own)

    def spy(item_rep, items, *args, **kwargs):
        seen["item_rep"] = item_rep.detach().clone()
        return original_views(item_rep, items, *args, **kwargs)

    model.alignment.batch_views = spy
    terms = model.calculate_loss(batch)
    assert len(terms) == len(plain_terms) + 2  # CMCL and W added, nothing replaced
    with torch.no_grad():  # the target is the backbone's own item representation (SGL: the un-augmented graph)
        if model.access.kind == "forward":
            expected = type(model).backbone.forward(model, *model.access.args(model))[model.access.index]
            if backbone in ("NGCF",):  # NGCF's message dropout draws again: compare shapes only
                assert seen["item_rep"].shape == expected.shape
            else:
                torch.testing.assert_close(seen["item_rep"], expected)
        else:
            torch.testing.assert_close(seen["item_rep"], getattr(model, model.access.attribute).weight)
    assert all(torch.isfinite(t) for t in terms)
    cut = len(plain_terms) - model.access.trailing_terms  # NCL: the alignment terms go before its proto term
    align = sum(terms[cut:cut + 2])
    if backbone not in ("NGCF", "SGL", "SimpleX"):  # (dropout / augmented graphs draw again) the backbone's terms
        for got, want in zip([*terms[:cut], *terms[cut + 2:]], plain_terms):
            torch.testing.assert_close(got.reshape(()), want.reshape(()))
    model.zero_grad()
    align.backward()
    for m in model.alignment.modalities:
        assert model.alignment.projections[m].weight.grad.abs().sum() > 0
        assert model.alignment.gats[m].layers[0].att_src.grad.abs().sum() > 0
    table = getattr(model, model.access.attribute) if model.access.kind == "embedding" else model.item_embedding
    assert table.weight.grad is not None and table.weight.grad.abs().sum() > 0


def test_ncl_warm_up_drops_proto_not_an_alignment_term(mini_ml):
    """NCLTrainer drops ``losses[-1]`` (NCL's prototype term) in its warm-up epochs: the alignment terms go
    before it, so warm-up keeps CMCL and W and drops proto, as on NCL itself."""
    _, model, train = _build(mini_ml, "NCL+Align")
    model.train()
    model.e_step()
    spied = {}
    original = model.ProtoNCE_loss

    def spy(*args):
        spied["proto"] = original(*args)
        return spied["proto"]

    model.ProtoNCE_loss = spy
    terms = model.calculate_loss(_batch(train))
    assert len(terms) == 5 and terms[-1] is spied["proto"]


def test_views_of_a_subset_of_modalities_accept_any_iterable():
    """FeatureAlignment.views(item_rep, modalities): only those modalities, in the module's order; a generator
    used to yield only the first name (the set of wanted names was rebuilt, from the spent generator, per name)."""
    from recgoat_core.feature_alignment import FeatureAlignment

    align = FeatureAlignment({"a": torch.randn(5, 4), "b": torch.randn(5, 4)},
                             {"embedding_size": 4, "use_gat": False, "use_oat": False})
    items = torch.randn(5, 4)
    assert list(align.views(items, (m for m in ["b", "a"]))) == ["a", "b"]
    assert list(align.views(items, ["b"])) == ["b"] and list(align.views(items)) == ["a", "b"]


def test_the_alignment_weighs_the_same_against_a_summed_ranking_loss(mini_ml):
    """SGL sums its BPR over the batch where LightGCN averages it: unscaled, the alignment terms were ~1/B of
    SGL's gradient and SGL+Align trained as SGL (ml-100k 0.2933 vs 0.2931, Scientific 0.0724 vs 0.0725). The
    alignment's gradient on the item table, relative to the ranking loss's, must be of the same order on both."""
    ratios = {}
    for backbone in ("LightGCN", "SGL"):
        _, model, train = _build(mini_ml, backbone + "+Align", n_layers=2, ssl_weight=0.0)
        model.train()
        base, *terms = model.calculate_loss(_batch(train))
        table = model.item_embedding.weight
        g_base = torch.autograd.grad(base, table, retain_graph=True)[0].norm()
        g_align = torch.autograd.grad(sum(terms), table)[0].norm()
        ratios[backbone] = float(g_align / g_base)
    assert 0.2 < ratios["SGL"] / ratios["LightGCN"] < 5, ratios


@pytest.mark.parametrize("backbone", ["LightGCN", "BPR", "SGL"])
def test_with_every_term_off_the_backbone_is_unchanged(mini_ml, backbone):
    """cmcl_weight = wasserstein_weight = γ = 0: the same losses and scores as RecBole's class, same weights."""
    off = {"cmcl_weight": 0.0, "wasserstein_weight": 0.0, "fusion_gamma": 0}
    _, model, train = _build(mini_ml, backbone + "+Align", **off)
    _, plain, _ = _build(mini_ml, backbone, **off)
    missing, unexpected = model.load_state_dict(plain.state_dict(), strict=False)
    assert not unexpected and all(key.startswith("alignment.") for key in missing)
    batch = _batch(train)
    np.random.seed(0)
    plain.train()  # SGL draws its augmented graphs in train()
    np.random.seed(0)
    model.train()
    ours, theirs = model.calculate_loss(batch), plain.calculate_loss(batch)
    assert len(ours) == 1
    torch.testing.assert_close(ours[0], theirs)
    model.eval(), plain.eval()
    torch.testing.assert_close(model.full_sort_predict(batch), plain.full_sort_predict(batch))


@pytest.mark.parametrize("backbone", ["LightGCN", "NCL", "SGL"])
def test_fusion_puts_the_views_into_the_score_where_the_backbone_allows_it(mini_ml, backbone):
    _, fused, train = _build(mini_ml, backbone + "+Align", fusion_gamma=0.5)
    _, plain, _ = _build(mini_ml, backbone + "+Align", fusion_gamma=0)
    plain.load_state_dict(fused.state_dict())
    batch = _batch(train)
    fused.eval(), plain.eval()
    users, items, *_ = type(plain).backbone.forward(plain, *plain.access.args(plain))
    views = plain.alignment.views(items, rows=plain.warm_items)  # fitted on the items with interactions
    modal = torch.stack(list(views.values())).mean(0)
    cold = plain.cold_items[:, None]  # (scored from their views alone: test_cold_scoring.py)
    expected = users @ torch.where(cold, modal, 0.5 * items + 0.5 * modal).T
    got = fused.full_sort_predict(batch).view(len(batch), -1)
    torch.testing.assert_close(got, expected[batch[plain.USER_ID]])
    if backbone == "SGL":  # the augmented graphs of a training step stay SGL's own (no views in its SSL loss)
        fused.train()
        fused._step = {}
        first = fused.forward(fused.train_graph)[1]
        second = fused.forward(fused.sub_graph1)[1]
        raw = type(fused).backbone.forward(fused, fused.sub_graph1)[1]
        fused._step = None
        torch.testing.assert_close(second, raw)
        assert not torch.allclose(first, type(fused).backbone.forward(fused, fused.train_graph)[1])


def test_fusion_needs_a_backbone_that_returns_every_item(mini_ml):
    with pytest.raises(ConfigError, match="fusion_gamma > 0.*BPR"):
        _build(mini_ml, "BPR+Align", fusion_gamma=0.5)


@pytest.mark.parametrize("name, why", [
    ("GRU4Rec+Align", "sequential model"), ("FM+Align", "context model"), ("EASE+Align", "no trainable item vectors"),
    ("ENMF+Align", "own user-wise data loader"), ("MultiVAE+Align", "own user-wise data loader"),
    ("RecGOAT+Align", "one of this project's models"), ("Nope+Align", "unknown model"),
])
def test_out_of_scope_backbones_are_one_clear_error(name, why):
    with pytest.raises(ValueError, match=why.split()[0]) as info:
        aligned(name)
    assert "\n" not in str(info.value)


def test_features_are_required_and_checked(mini_ml):
    with pytest.raises(ConfigError, match="needs item features"):
        _build(mini_ml, "LightGCN+Align", item_modalities=None)
    with pytest.raises(ConfigError, match="cmcl_weight"):
        _build(mini_ml, "LightGCN+Align", cmcl_weight=-1)


def test_one_config_change_trains_reloads_and_is_deterministic(mini_ml):
    """run_recbole with the registered name; the checkpoint reloads through load_data_and_model and scores the
    same; a second run with the same seed gives the same numbers; NCL+Align keeps NCL's own trainer."""
    settings = mini_config(mini_ml, user_profile_feat=None, epochs=2, fusion_gamma=0.5, align_gate=False)
    first = run_recbole(model="SGL+Align", config_dict=settings)
    second = run_recbole(model="SGL+Align", config_dict=settings)
    assert first["test_result"] == second["test_result"]
    import glob
    import os

    checkpoint = max(glob.glob("saved/SGL+Align-*.pth"), key=os.path.getmtime)
    config, model, _, _, _, test = load_data_and_model(checkpoint)
    assert type(model).__name__ == "SGL+Align"
    from recbole.trainer import Trainer

    model.restore_user_e = model.restore_item_e = None  # score from the reloaded parameters, not a saved cache
    reloaded = Trainer(config, model).evaluate(test, load_best_model=False, show_progress=False)
    assert dict(reloaded) == dict(first["test_result"])
    assert get_trainer(None, "NCL+Align").__name__ == "NCLTrainer"
    assert pickle.loads(pickle.dumps(aligned("SGL"))) is aligned("SGL")


def test_alignment_loss_falls_while_training(mini_ml):
    """Training moves the right way: the alignment term falls over a few epochs of LightGCN+Align."""
    config, model, train = _build(mini_ml, "LightGCN+Align", wasserstein_weight=0.0)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    curve = []
    for _ in range(6):
        total = 0.0
        for batch in train:
            terms = model.calculate_loss(batch)
            optimizer.zero_grad()
            sum(terms).backward()
            optimizer.step()
            total += float(terms[-1].detach())
        curve.append(total)
    assert curve[-1] < 0.9 * curve[0], curve


def test_bench_align_adds_a_row_after_each_backbone_with_a_grid_of_the_same_size(tmp_path):
    from recgoat_recbole.bench.design import build_specs
    from recgoat_recbole.bench.tuning import GRIDS, grid_for, grid_points, grid_specs

    from tests.conftest import two_dataset_configs

    configs = two_dataset_configs(tmp_path)
    specs = build_specs(["mm", "plain"], ["EASE", "SGL", "BPR"], [1], {}, configs, align=True, log=lambda _: None)
    assert [s.model for s in specs if s.dataset == "mm"] == ["EASE", "SGL", "SGL+Align", "BPR", "BPR+Align"]
    assert [s.model for s in specs if s.dataset == "plain"] == ["EASE", "SGL", "BPR"]
    for backbone in ("LightGCN", "SGL", "NCL", "BPR", "NGCF", "SimpleX"):
        grid = grid_for(backbone + "+Align", GRIDS)
        assert len(grid_points(grid)) == len(grid_points(GRIDS[backbone])) == 9 and "cmcl_weight" in grid
    runs = grid_specs(["mm"], ["SGL"], [1], {}, configs, GRIDS, align=True)
    assert sum(spec.model == "SGL+Align" for spec, _ in runs) == 9


def test_two_tower_example_shows_the_features_helping():
    """examples/two_tower_alignment.py: the losses in a non-RecBole loop; aligned beats ID-only on its data."""
    import importlib.util
    import os

    path = os.path.join(os.path.dirname(__file__), "..", "examples", "two_tower_alignment.py")
    spec = importlib.util.spec_from_file_location("two_tower_alignment", path)
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    plain = example.run(seed=0, align_on=False, gamma=0.0, epochs=15)
    aligned_ = example.run(seed=0, align_on=True, gamma=0.0, epochs=15)
    assert aligned_ > 1.2 * plain, (plain, aligned_)


def test_cmcl_max_items_bounds_the_infonce_batch_of_recgoat_and_the_plugin(mini_ml):
    """cmcl_max_items reaches the loss: with M rows, the CMCL term is InfoNCE over M of the batch's items."""
    from recgoat_core.alignment import info_nce

    for model_name in ("RecGOAT", "LightGCN+Align"):
        _, model, train = _build(mini_ml, model_name, cmcl_max_items=8, wasserstein_weight=0.0)
        assert model.alignment.cmcl.max_items == 8
        calls = []
        original = model.alignment.cmcl.forward

        def spy(view, target, original=original):
            out = original(view, target)
            calls.append(len(view))
            return out

        model.alignment.cmcl.forward = spy
        model.calculate_loss(_batch(train))
        assert calls and all(n > 8 for n in calls)  # the batch had more items; the loss saw 8 of them
        torch.manual_seed(0)
        v, t = torch.randn(20, 4), torch.randn(20, 4)
        torch.manual_seed(1)
        bounded = model.alignment.cmcl(v, t)
        torch.manual_seed(1)
        keep = torch.randperm(20)[:8]
        torch.testing.assert_close(bounded, info_nce(v[keep], t[keep], model.alignment.cmcl.temperature))
    with pytest.raises(ConfigError, match="cmcl_max_items"):
        _build(mini_ml, "RecGOAT", cmcl_max_items=0)


def test_recgoat_bench_align_flag_reaches_the_design(monkeypatch, tmp_path):
    import recgoat_cli
    import recgoat_recbole.bench.design as bench

    seen = {}

    def fake_build_specs(*args, **kwargs):
        seen.update(kwargs)
        return []

    monkeypatch.setattr(bench, "build_specs", fake_build_specs)
    yaml_file = tmp_path / "mm.yaml"
    yaml_file.write_text("dataset: mm\nitem_modalities: {text: text.npz}\n")
    try:
        recgoat_cli.main(["bench", "--datasets", "mm", "--config", f"mm={yaml_file}", "--models", "SGL", "--align",
                          "--report-only", "--out", str(tmp_path / "out")])
    except SystemExit:
        pass
    assert seen.get("align") is True


@pytest.mark.parametrize("qualified", ["os.Nope+Align", "recgoat_recbole.aligned.EASE+Align",
                                       "recgoat_recbole.aligned.Nope+Align", "os.SGL+Align"])
def test_checkpoint_names_with_align_are_refused_cleanly(qualified):
    """A checkpoint naming an impossible <X>+Align class is refused as unsafe, not a stray ValueError."""
    import pickle as pickle_module

    from recgoat_recbole.checkpoint import checkpoint_allowlist_entry
    from recgoat_recbole.patches.safe_checkpoints import _allowed_checkpoint_global

    assert checkpoint_allowlist_entry(qualified) is None
    with pytest.raises(pickle_module.UnpicklingError):
        _allowed_checkpoint_global(qualified)


@pytest.mark.parametrize("backbone", sorted(set(BACKBONES) - {"SGL"}))  # SGL+Align: the reload test above
def test_each_backbone_trains_and_evaluates_end_to_end(mini_ml, backbone):
    """run_recbole with `<Backbone>+Align`: the backbone's trainer, the alignment's parameters trained and
    saved with the checkpoint."""
    import glob

    settings = mini_config(mini_ml, user_profile_feat=None, epochs=1, align_gate=False,
                           **BACKBONE_SETTINGS.get(backbone, {}))
    result = run_recbole(model=backbone + "+Align", config_dict=settings)
    assert set(result["test_result"]) == {"recall@10", "ndcg@10"}
    state = torch.load(glob.glob(f"saved/{backbone}+Align-*.pth")[0], weights_only=False)["state_dict"]
    assert any(key.startswith("alignment.projections.") for key in state)



def test_cooccurrence_lift_separates_informative_from_random_features():
    """Features that encode the items' latent factors (which drive the interactions) have a lift far above 1;
    random features have a lift near 1."""
    from recgoat_core.feature_signal import cooccurrence_lift

    rng = np.random.default_rng(0)
    factors = rng.normal(size=(400, 8))
    users = rng.normal(size=(300, 8))
    pairs = [(u, i) for u in range(300) for i in np.argsort(-(users[u] @ factors.T))[:10]]
    u, i = torch.tensor([p[0] for p in pairs]), torch.tensor([p[1] for p in pairs])
    informative = torch.tensor(factors @ rng.normal(size=(8, 32)), dtype=torch.float32)
    noise = torch.tensor(rng.normal(size=(400, 32)), dtype=torch.float32)
    assert cooccurrence_lift(informative, u, i) > 3.0
    assert 0.6 < cooccurrence_lift(noise, u, i) < 1.6


@pytest.mark.parametrize("model_name", ["RecGOAT", "LightGCN+Align"])
def test_align_gate_turns_off_the_terms_of_a_modality_below_the_lift(mini_ml, model_name):
    """align_gate: a modality below align_gate_min_lift contributes no CMCL / W term; above it, it does."""
    _, closed, train = _build(mini_ml, model_name, align_gate=True, align_gate_min_lift=1000.0)
    assert set(closed.alignment.modality_weights.values()) == {0.0} and not closed.alignment.has_loss
    batch = _batch(train)
    terms = closed.calculate_loss(batch)
    assert len(terms) == 1  # the recommender's own loss only
    _, open_, _ = _build(mini_ml, model_name, align_gate=True, align_gate_min_lift=1.0)
    assert set(open_.alignment.modality_weights.values()) == {1.0}
    assert len(open_.calculate_loss(batch)) == 3


@pytest.mark.parametrize("model_name", ["RecGOAT", "LightGCN+Align"])
def test_a_closed_gate_says_so_on_the_console(mini_ml, model_name, caplog):
    """Issue 31: the gate closed every modality and fusion_gamma 0 kept them out of the score, so "RecGOAT" was
    its ID model, and only an INFO line in the log file said so."""
    import logging

    with caplog.at_level(logging.INFO):
        _build(mini_ml, model_name, align_gate=True, align_gate_min_lift=1000.0, fusion_gamma=0)
    closed = [r for r in caplog.records if "is not aligned" in r.getMessage()]
    assert closed and all(r.levelno == logging.WARNING for r in closed)
    assert all("< align_gate_min_lift 1000" in r.getMessage() and "align_gate: false" in r.getMessage()
               for r in closed)
    assert len(closed) == len({r.getMessage().split("'")[1] for r in closed})  # one line per modality
    assert any(r.levelno == logging.WARNING and "no modality is aligned and fusion_gamma is 0" in r.getMessage()
               for r in caplog.records)
    caplog.clear()
    with caplog.at_level(logging.INFO):
        _build(mini_ml, model_name, align_gate=True, align_gate_min_lift=1.0)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING and "align" in r.getMessage()]


@pytest.mark.parametrize("model_name", ["RecGOAT", "LightGCN+Align"])
def test_a_gated_off_modality_is_not_computed_and_the_model_is_its_id_part(mini_ml, model_name):
    """Every modality gated off and γ 0: no view is computed in training or scoring (no projection runs), and
    the scores are the ID part's own (RecGOAT: cold items too, as an untrained view is noise)."""
    _, closed, train = _build(mini_ml, model_name, align_gate=True, align_gate_min_lift=1000.0, fusion_gamma=0)
    calls = []
    for m in closed.alignment.modalities:
        closed.alignment.projections[m].register_forward_hook(lambda *_: calls.append(1))
    batch = _batch(train)
    closed.train()
    closed.calculate_loss(batch)[0].backward()
    closed.eval()
    scores = closed.full_sort_predict(batch)
    assert not calls
    if model_name == "RecGOAT":
        assert not closed.cold_items_from_features and closed.cold_items.any()
        with torch.no_grad():
            ego = torch.cat([closed.user_embedding.weight, closed.item_embedding.weight])
            users, items = torch.split(lightgcn_propagate(closed.adjacency, ego, closed.n_layers),
                                       [closed.n_users, closed.n_items])
        torch.testing.assert_close(scores.view(len(batch), -1), users[batch[closed.USER_ID]] @ items.T)
        assert closed.modality_views(items) == {} and not calls  # the public accessor skips them too
    # with the gate open the views are computed (the hook can fire)
    _, open_, _ = _build(mini_ml, model_name, align_gate=True, align_gate_min_lift=1.0, fusion_gamma=0)
    for m in open_.alignment.modalities:
        open_.alignment.projections[m].register_forward_hook(lambda *_: calls.append(1))
    open_.train()
    open_.calculate_loss(batch)
    assert calls


def test_the_lift_graph_keeps_every_item_row(monkeypatch):
    """The lift's kNN graph is over the items with training interactions: row 0 is an item, not the padding row,
    so it must not be skipped (it was: the first such item had no neighbours in the statistic)."""
    import recgoat_core.feature_signal as signal

    seen = {}
    real = signal.knn_graph

    def spy(x, k, chunk_size=2048, symmetric=True, skip_first=True, device=None, queries=None):
        seen["skip_first"] = skip_first
        return real(x, k, chunk_size, symmetric=symmetric, skip_first=skip_first, queries=queries)

    monkeypatch.setattr(signal, "knn_graph", spy)
    users = torch.tensor([0, 0, 1, 1, 2, 2])
    items = torch.tensor([1, 2, 2, 3, 3, 1])
    signal.cooccurrence_lift(torch.randn(4, 8), users, items, k=1)
    assert seen["skip_first"] is False


def test_align_max_items_and_oat_plan_every_reach_recgoat_and_the_plugin(mini_ml):
    """align_max_items: a step projects at most M items' features with autograd, and CMCL and W see those M;
    oat_plan_every: the second step of an epoch does not project every item."""
    for model_name in ("RecGOAT", "LightGCN+Align"):
        _, model, train = _build(mini_ml, model_name, align_max_items=8, oat_plan_every=5)
        alignment = model.alignment
        assert alignment.settings.align_max_items == 8 and alignment.settings.oat_plan_every == 5
        n_items = alignment.n_items
        rows, sizes = [], []
        for projection in alignment.projections.values():
            projection.register_forward_hook(lambda mod, inputs, out: rows.append(len(inputs[0])))
        original = alignment.batch_loss

        def spy(views, target, original=original):
            sizes.append(len(target))
            return original(views, target)

        alignment.batch_loss = spy
        model.train()
        batch = _batch(train)
        assert len(torch.unique(batch[model.ITEM_ID])) > 8
        model.calculate_loss(batch)
        assert sizes == [8] and sorted(set(rows)) == [8, n_items]  # the batch's 8, and every item for the plan
        rows.clear()
        model.calculate_loss(batch)
        assert set(rows) == {8}  # the plan was reused: only the batch's rows
    with pytest.raises(ConfigError, match="align_max_items"):
        _build(mini_ml, "RecGOAT", align_max_items=0)
    with pytest.raises(ConfigError, match="oat_plan_every"):
        _build(mini_ml, "LightGCN+Align", oat_plan_every=0)


@pytest.mark.parametrize("backbone", ["LightGCN", "SGL", "NCL"])
def test_with_every_modality_gated_off_the_speed_settings_change_nothing(mini_ml, backbone):
    """docs/protocol.md, issue 28: where the gate aligns no modality, `oat_plan_every` and `align_max_items` have no
    term to act on, so their candidates are the exact step there. Three optimiser steps with the cheapest
    candidate give the exact step's parameters bit for bit (no projection, no draw from the random stream that
    SGL's graphs and NCL's clusters also read)."""
    states = []
    for speed in ({}, {"oat_plan_every": 10, "align_max_items": 4}):
        _, model, train = _build(mini_ml, "RecGOAT", backbone=backbone, align_gate=True,
                                 align_gate_min_lift=1000.0, fusion_gamma=0, **speed)
        torch.manual_seed(0)
        optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
        model.train()
        if hasattr(model, "e_step"):
            model.e_step()
        for step, batch in zip(range(3), train):
            terms = model.calculate_loss(batch)
            loss = sum(terms) if isinstance(terms, tuple) else terms
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        states.append({k: v.detach().clone() for k, v in model.state_dict().items()})
    assert states[0].keys() == states[1].keys()
    for key in states[0]:
        torch.testing.assert_close(states[0][key], states[1][key], rtol=0, atol=0, msg=key)


@pytest.mark.parametrize("model_name", ["NCL+Align", "RecGOAT"])
def test_on_ncl_the_cluster_count_is_fitted_to_a_small_dataset(mini_ml, model_name, caplog):
    """NCL's default 1000 k-means clusters on a dataset with fewer users: faiss raised ('Number of training points
    (944) should be at least as large as number of clusters (1000)') from `recgoat run` and `run_recbole` with
    RecGOAT on NCL or NCL+Align (only `recgoat bench` fitted it). The model fits it, says so, and trains."""
    import logging

    with caplog.at_level(logging.WARNING):
        config, model, train = _build(mini_ml, model_name, backbone="NCL", num_clusters=1000)
    smaller = min(train.dataset.user_num, train.dataset.item_num)
    assert smaller < 1000 and config["num_clusters"] == max(2, smaller // 10) == model.k
    assert any(f"num_clusters 1000 is not below the {smaller} rows" in r.getMessage() for r in caplog.records)
    model.train()
    model.e_step()
    terms = model.calculate_loss(_batch(train))
    assert all(torch.isfinite(t) for t in terms)
    # a count that fits is kept
    config, model, _ = _build(mini_ml, model_name, backbone="NCL", num_clusters=5)
    assert config["num_clusters"] == 5 == model.k
