"""Cold items (no training interaction) are scored from their features by every model that has them: the
plugin on each backbone and RecGOAT on its backbones. A cold item's score never reads its untrained ID row, training does not
teach the views that "never seen" means "bad", and on data whose features carry the signal the plugin ranks
cold items far above its ID-only backbone."""
from __future__ import annotations

import os

import numpy as np
import pandas as pd
import pytest
import torch
from recbole.config import Config
from recbole.data import create_dataset, data_preparation
from recbole.utils import get_model, init_seed

from recgoat_recbole.aligned import BACKBONES
from tests.conftest import mini_config

SETTINGS = {"NCL": {"num_clusters": 10}}


def _build(mini_ml, model: str, **overrides):
    base = {"align_gate": False, **SETTINGS.get(model.split("+")[0], {})}
    config = Config(model=model, config_dict=mini_config(mini_ml, user_profile_feat=None, **{**base, **overrides}))
    init_seed(config["seed"], True)
    train, _, _ = data_preparation(config, create_dataset(config))
    init_seed(config["seed"], True)
    return get_model(model)(config, train.dataset), train


def _item_table(model) -> torch.nn.Embedding:
    return getattr(model, model.access.attribute)


def _scores(model, batch) -> torch.Tensor:
    """Full-sort scores in evaluation, with every cached propagation dropped first."""
    model.eval()
    for cache in ("restore_user_e", "restore_item_e"):
        if hasattr(model, cache):
            setattr(model, cache, None)
    with torch.no_grad():
        return model.full_sort_predict(batch).view(len(batch), -1).clone()


def _scramble_cold_rows(model) -> None:
    cold = model.cold_items
    with torch.no_grad():
        table = _item_table(model).weight
        table[cold] = 50 * torch.randn_like(table[cold])


@pytest.mark.parametrize("use_gat", [False, True])
def test_views_fitted_on_rows_read_no_other_row_of_the_reference(use_gat):
    """recgoat_core: FeatureAlignment.views(item_rep, rows=mask) fits the OAT plan and the scale on the masked
    rows; the other rows of item_rep then reach no view (without the mask they do)."""
    from recgoat_core.feature_alignment import AlignmentSettings, FeatureAlignment

    torch.manual_seed(0)
    feats = {"text": torch.randn(40, 12), "image": torch.randn(40, 6)}
    module = FeatureAlignment(feats, AlignmentSettings(embedding_size=8, use_gat=use_gat, gat_heads=2, knn_k=4))
    module.eval()
    rows = torch.rand(40) > 0.3
    reference = torch.randn(40, 8)
    scrambled = reference.clone()
    scrambled[~rows] = 30 * torch.randn(int((~rows).sum()), 8)
    with torch.no_grad():
        fitted = module.views(reference, rows=rows)
        again = module.views(scrambled, rows=rows)
        plain, moved = module.views(reference), module.views(scrambled)
    for m in feats:
        torch.testing.assert_close(again[m], fitted[m])
        assert (moved[m] - plain[m]).abs().max() > 1e-3


@pytest.mark.parametrize("backbone", sorted(BACKBONES))
def test_a_cold_items_score_does_not_read_its_id_row(mini_ml, backbone):
    """<Backbone>+Align in evaluation: scrambling the cold items' ID rows changes no score (warm items' either);
    with cold_items_from_features off, the cold items' scores follow the scrambled rows (the test can fail)."""
    model, train = _build(mini_ml, backbone + "+Align")
    batch = next(iter(train))[torch.arange(32)]
    cold = model.cold_items
    assert cold[1:].any() and model.cold_items_from_features
    before = _scores(model, batch)
    _scramble_cold_rows(model)
    table = _item_table(model).weight.detach().clone()
    torch.testing.assert_close(_scores(model, batch), before)
    # the table is back as it was before scoring (BPR, SimpleX score through its cold rows)
    assert torch.equal(_item_table(model).weight, table)

    off, _ = _build(mini_ml, backbone + "+Align", cold_items_from_features=False)
    first = _scores(off, batch)
    _scramble_cold_rows(off)
    moved = (_scores(off, batch) - first).abs()
    assert moved[:, cold].max() > 1e-3
    # (with it on, the cold items' scores are their views'; the warm items' are the backbone's own)
    torch.testing.assert_close(before[:, ~cold], first[:, ~cold])


def test_a_table_backbones_cold_views_are_computed_once_per_parameter_state(mini_ml):
    """BPR+Align scores in batches of users: the cold rows' views are computed for the first batch and reused
    while no parameter changes; after an optimiser-like update they are computed again."""
    model, train = _build(mini_ml, "BPR+Align")
    batch = next(iter(train))
    projected = []
    for m in model.alignment.modalities:
        model.alignment.projections[m].register_forward_hook(lambda *_: projected.append(1))
    first = _scores(model, batch[torch.arange(8)])
    calls = len(projected)
    assert calls == len(model.alignment.modalities)
    _scores(model, batch[torch.arange(8, 16)])
    assert len(projected) == calls  # the same parameters: reused
    again = _scores(model, batch[torch.arange(8)])
    torch.testing.assert_close(again, first)
    with torch.no_grad():
        model.alignment.projections[model.alignment.modalities[0]].weight.mul_(1.5)
    moved = _scores(model, batch[torch.arange(8)])
    assert len(projected) == 2 * calls
    assert not torch.allclose(moved[:, model.cold_items], first[:, model.cold_items])


@pytest.mark.parametrize("backbone", ["LightGCN", "SGL"])
def test_training_keeps_the_backbones_own_cold_vectors_and_the_views_ignore_them(mini_ml, backbone):
    """In training, a cold item is only ever a sampled negative: its vector stays the backbone's own, and the
    alignment terms (views fitted on the warm items) do not move when its ID row does."""
    model, train = _build(mini_ml, backbone + "+Align")
    plain = type(model).backbone
    batch = next(iter(train))
    model.train()
    out = model.forward(*model.access.args(model))[model.access.index]
    with torch.no_grad():
        own = plain.forward(model, *model.access.args(model))[model.access.index]
    torch.testing.assert_close(out, own)

    def align_terms() -> list[float]:
        torch.manual_seed(0)  # SGL's augmented graphs stay drawn; the backbone's own terms are not compared
        terms = model.calculate_loss(batch)
        return [float(t) for t in terms[-2:]]

    if backbone == "SGL":
        model.train()  # draws SGL's graphs once; calculate_loss does not redraw them
    first = align_terms()
    _scramble_cold_rows(model)
    assert align_terms() == pytest.approx(first, rel=1e-5)


@pytest.mark.parametrize("backbone", ["LightGCN", "SGL", "BPR"])
def test_recgoats_cold_score_does_not_read_its_id_row(mini_ml, backbone):
    """RecGOAT follows the plugin's rule (γ 0.5 here: the views in every warm score too); with
    cold_items_from_features off its cold scores follow the scrambled rows."""
    extra = {"fusion_gamma": 0.5, "use_user_graph": False} if backbone != "BPR" else {"use_user_graph": False}
    model, train = _build(mini_ml, "RecGOAT", backbone=backbone, **extra)
    batch = next(iter(train))[torch.arange(32)]
    before = _scores(model, batch)
    _scramble_cold_rows(model)
    torch.testing.assert_close(_scores(model, batch), before)
    off, _ = _build(mini_ml, "RecGOAT", backbone=backbone, cold_items_from_features=False, **extra)
    first = _scores(off, batch)
    _scramble_cold_rows(off)
    assert (_scores(off, batch) - first).abs()[:, model.cold_items].max() > 1e-3


def test_recgoat_trains_with_its_fused_cold_vectors(mini_ml):
    """In training RecGOAT's cold items keep their fused vector (ID part and views by the fusion weights), as
    the plugin's keep the backbone's: the views are not taught that "never seen" means "bad"."""
    model, _ = _build(mini_ml, "RecGOAT", backbone="LightGCN", fusion_gamma=0.5, use_user_graph=False)
    model.train()
    _, items, views = model.representations()
    with torch.no_grad():
        own = type(model).backbone.forward(model)[1]
    modal = torch.stack([views[m] for m in sorted(views)]).mean(0)
    torch.testing.assert_close(items, 0.5 * own + 0.5 * modal)


@pytest.mark.parametrize("model_name", ["BPR+Align", "RecGOAT"])
def test_embedding_backbones_score_cold_items_from_their_views(mini_ml, model_name):
    """BPR scores from its item table: in evaluation the cold rows hold the views, so a cold item's score is
    the user's vector against its mean view."""
    extra = {"backbone": "BPR", "use_user_graph": False} if model_name == "RecGOAT" else {}
    model, train = _build(mini_ml, model_name, **extra)
    batch = next(iter(train))[torch.arange(8)]
    scores = _scores(model, batch)
    cold = model.cold_items
    with torch.no_grad():
        views = model._cold_views(_item_table(model).weight)
        modal = torch.stack([views[m] for m in sorted(views)]).mean(0)
        users = model.user_embedding(batch[model.USER_ID])
    torch.testing.assert_close(scores[:, cold], users @ modal[cold].T)


# ------------------------------------------------------------------------------ a run on telling features
def _clustered(folder: str, n_users: int = 240, n_items: int = 240, clusters: int = 8) -> str:
    """Items in clusters, each user buying from one cluster; an item's feature is its cluster's centre plus
    noise, so features say which users an item suits, and 30% of the items are held out of training."""
    rng = np.random.default_rng(11)
    os.makedirs(folder)
    cluster = np.arange(n_items) % clusters
    centres = rng.normal(size=(clusters, 16))
    feats = centres[cluster] + 0.3 * rng.normal(size=(n_items, 16))
    rows = []
    for u in range(n_users):
        mine = np.flatnonzero(cluster == u % clusters)
        for k, i in enumerate(rng.choice(mine, 14, replace=False)):
            rows.append((u, int(i), 2 if k >= 12 else 1 if k >= 10 else 0))
    pd.DataFrame(rows, columns=["userID", "itemID", "x_label"]).to_csv(f"{folder}/clustered.inter", sep="\t",
                                                                        index=False)
    np.save(f"{folder}/text_feat.npy", feats.astype(np.float32))
    return folder


def test_on_telling_features_the_plugin_ranks_cold_items_far_above_its_backbone(tmp_path):
    """LightGCN+Align vs LightGCN, same budget and seed, on the clustered fixture with 30% of the items cold:
    among the cold items, the plugin's NDCG@10 is well above the ID-only backbone's (whose cold rows are
    random), and the gain is the cold scoring's: the same plugin with cold_items_from_features off is no better
    than the backbone there. (That the cold scoring leaves warm items' scores as they are is exact:
    test_a_cold_items_score_does_not_read_its_id_row.)"""
    from recgoat_recbole.importers import import_mmrec
    from recgoat_recbole.training import run_training
    from tests.conftest import working_dir

    src = _clustered(str(tmp_path / "src"))
    with working_dir(tmp_path):
        held = import_mmrec(src, str(tmp_path / "data"), cold_items=0.3, seed=1)
        budget = {"epochs": 30, "embedding_size": 32, "seed": 3, "show_progress": False, "stopping_step": 30,
                  "learning_rate": 0.01}
        runs = {label: run_training(model, config_file_list=[held.config], config_dict={**budget, **extra},
                                    log_details=False, saved=False)
                for label, model, extra in (("LightGCN", "LightGCN", {}), ("plugin", "LightGCN+Align", {}),
                                            ("plugin, off", "LightGCN+Align", {"cold_items_from_features": False}))}
    among = {label: r.cold["test"]["among_cold"]["ndcg@10"] for label, r in runs.items()}
    assert among["plugin"] > 2 * among["LightGCN"] + 0.05, among
    assert among["plugin"] > 2 * among["plugin, off"] + 0.05, among
