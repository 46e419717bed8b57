"""RecGOAT's loss, term by term, against references computed by hand from ``model.representations()`` on a hand-made batch.

Each test pins one term to its formula (docs/method.md, "Fusion and objective"), so a sign flip, swapped or
permuted arguments, or a dropped term fails here in seconds, without training.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from recgoat_core.alignment import wasserstein_distance
from tests.helpers import build_recgoat, mean_margin, pairwise_batch


def _model_and_batch(mini_ml, **overrides):
    """An untrained RecGOAT in eval mode (no dropout, deterministic OAT plans) and a 32-row batch. The layer-0
    embeddings are redrawn from N(0, 2²) so that scores, margins and the regulariser are far from 0."""
    *_, train, _, model = build_recgoat(mini_ml, **overrides)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for table in (model.user_embedding.weight, model.item_embedding.weight):
            table.copy_(2.0 * torch.randn(table.shape, generator=g))
    model.eval()
    return model, pairwise_batch(model, train)


def _info_nce_by_hand(view: torch.Tensor, target: torch.Tensor, tau: float) -> torch.Tensor:
    """mean_i -log( exp(v_i·t_i/τ) / Σ_j exp(v_i·t_j/τ) ) on L2-normalised rows, in float64."""
    v, t = F.normalize(view.double(), dim=-1), F.normalize(target.double(), dim=-1)
    logits = v @ t.T / tau
    return (torch.logsumexp(logits, dim=1) - logits.diagonal()).mean()


def _scores(model, batch):
    with torch.no_grad():
        users, items, views = model.representations()
    u = users[batch[model.USER_ID]]
    pos = (u * items[batch[model.ITEM_ID]]).sum(-1)
    neg = (u * items[batch[model.NEG_ITEM_ID]]).sum(-1)
    return pos, neg, items, views


def test_bpr_term_is_minus_log_sigmoid_of_positive_minus_negative_score(mini_ml):
    """With λ_reg = 0 the first term is BPR, mean -log σ(s(u, pos) - s(u, neg)), positive and negative in that order."""
    model, batch = _model_and_batch(mini_ml, reg_weight=0.0)
    pos, neg, _, _ = _scores(model, batch)
    assert (pos - neg).mean().abs() > 0.5  # a swap changes the mean by mean(pos - neg)
    with torch.no_grad():
        rec = model.calculate_loss(batch)[0]
    torch.testing.assert_close(rec.reshape(()), F.softplus(neg - pos).mean(), rtol=1e-5, atol=1e-6)


def test_one_step_on_the_bpr_term_raises_positive_over_negative_scores(mini_ml):
    """Descending the first term (BPR + regulariser) once makes the batch's positives outscore its negatives more."""
    model, batch = _model_and_batch(mini_ml, gat_dropout=0.0)
    before = mean_margin(model, batch)
    model.train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    model.calculate_loss(batch)[0].sum().backward()
    optimizer.step()
    assert mean_margin(model, batch) > before + 0.1  # 0.63 -> 0.94 here; after a swapped BPR step, 0.27


def test_regulariser_is_reg_weight_times_emb_loss_of_the_batch_layer0_embeddings(mini_ml):
    """First term = BPR + λ_reg·EmbLoss(E⁰_u, E⁰_pos, E⁰_neg); RecBole's EmbLoss (no ``require_pow``) is the sum of
    the three batch matrices' Frobenius norms divided by the batch size."""
    model, batch = _model_and_batch(mini_ml, reg_weight=0.5)
    pos, neg, _, _ = _scores(model, batch)
    e_u = model.user_embedding.weight[batch[model.USER_ID]]
    e_pos = model.item_embedding.weight[batch[model.ITEM_ID]]
    e_neg = model.item_embedding.weight[batch[model.NEG_ITEM_ID]]
    reg = (e_u.norm() + e_pos.norm() + e_neg.norm()) / len(batch)
    assert reg > 1.0
    with torch.no_grad():
        first = model.calculate_loss(batch)[0]
    torch.testing.assert_close(first.reshape(()), F.softplus(neg - pos).mean() + 0.5 * reg, rtol=1e-5, atol=1e-6)


def test_cmcl_term_is_weighted_info_nce_of_each_view_against_its_fused_item(mini_ml):
    """The CMCL term is λ_c Σ_m InfoNCE(z~_m[b], z[b]) over the batch's unique positive items b: positive,
    minimised (not its negative), each view paired with its own item's fused vector."""
    model, batch = _model_and_batch(mini_ml, cmcl_weight=0.5, wasserstein_weight=0.0)
    _, _, items, views = _scores(model, batch)
    b = torch.unique(batch[model.ITEM_ID])
    expected = 0.5 * sum(_info_nce_by_hand(views[m][b], items[b], model.alignment.cmcl.temperature) for m in model.modalities)
    with torch.no_grad():
        terms = model.calculate_loss(batch)
    assert len(terms) == 2 and terms[1] > 0
    torch.testing.assert_close(terms[1].double(), expected, rtol=1e-5, atol=1e-6)


def test_cmcl_term_is_minimal_when_each_view_meets_its_own_item(mini_ml):
    """One modality with γ = 1 makes the fused item equal to its view; the term must then be λ_c·InfoNCE(v, v), the
    minimum over every pairing of views with targets (any permutation of the targets raises it)."""
    model, batch = _model_and_batch(mini_ml, item_modalities={"text": "text.npz"}, fusion_gamma=1.0,
                                    cmcl_weight=1.0, wasserstein_weight=0.0)
    _, _, items, views = _scores(model, batch)
    torch.testing.assert_close(items, views["text"])
    b = torch.unique(batch[model.ITEM_ID])
    v, tau = views["text"][b], model.alignment.cmcl.temperature
    with torch.no_grad():
        term = model.calculate_loss(batch)[1].double()
    torch.testing.assert_close(term, _info_nce_by_hand(v, v, tau), rtol=1e-5, atol=1e-6)
    g = torch.Generator().manual_seed(0)
    for perm in (v.roll(1, 0), v.flip(0), v[torch.randperm(len(v), generator=g)]):
        assert term < _info_nce_by_hand(v, perm, tau) - 1e-3


def test_wasserstein_term_is_weighted_w1_of_each_view_against_the_fused_items(mini_ml):
    """The W term is λ_ot Σ_m W_ε(z~_m[b], z[b]) with the configured ε and iterations (the batch is smaller than
    ``wasserstein_sample_size``, so no sampling)."""
    model, batch = _model_and_batch(mini_ml, cmcl_weight=0.0, wasserstein_weight=0.5)
    _, _, items, views = _scores(model, batch)
    b = torch.unique(batch[model.ITEM_ID])
    w = model.alignment.wasserstein
    expected = 0.5 * sum(wasserstein_distance(views[m][b], items[b], w.epsilon, w.max_iter, True, w.scaling_steps)
                         for m in model.modalities)
    with torch.no_grad():
        terms = model.calculate_loss(batch)
    assert len(terms) == 2 and terms[1] > 0
    torch.testing.assert_close(terms[1], expected, rtol=1e-5, atol=1e-7)
