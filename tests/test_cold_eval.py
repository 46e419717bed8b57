"""Evaluation with cold items (no train interaction) in the test split: the plain full-ranking rows are RecBole's
own, the three slices (cold under full ranking, among cold items only, warm) match a computation by hand, a real
run reports them from the scores RecBole ranks, and `recgoat run` prints them."""
from __future__ import annotations

import math
import os

import numpy as np
import pandas as pd
import pytest
import torch

from recgoat_recbole.training import (COLD_SLICES, _cold_results, cold_item_mask, per_user_metrics,
                                      run_training, slice_rows, topk_rows)

CONFIG = {"metrics": ["Recall", "NDCG"], "topk": [1, 2, 4], "metric_decimal_place": 4,
          "eval_args": {"mode": "full"}, "device": torch.device("cpu")}


def _ndcg_recall(ranking: list[int], relevant: set[int], k: int) -> tuple[float, float]:
    """By hand: NDCG@k and Recall@k of a ranked item list (best first) for the relevant items."""
    hits = [i for i, item in enumerate(ranking[:k]) if item in relevant]
    dcg = sum(1 / math.log2(i + 2) for i in hits)
    idcg = sum(1 / math.log2(i + 2) for i in range(min(len(relevant), k)))
    return dcg / idcg, len(hits) / len(relevant)


def test_topk_rows_are_recboles_rec_topk_so_the_plain_metrics_are_recboles():
    """On scores with ties and -inf history, the rows are the Collector's, and their per-user metrics average to
    the Evaluator's numbers."""
    from recbole.evaluator import Collector, Evaluator

    rng = np.random.default_rng(0)
    scores = torch.from_numpy(rng.integers(0, 5, size=(9, 30)).astype(np.float32))  # many ties
    scores[:, 0] = -np.inf
    scores[torch.from_numpy(rng.random((9, 30)) < 0.2)] = -np.inf  # history
    positive_u = torch.tensor([0, 0, 1, 2, 3, 3, 3, 4, 5, 6, 7, 8, 8])
    positive_i = torch.tensor([3, 7, 11, 2, 5, 6, 29, 1, 14, 20, 22, 9, 10])
    scores[positive_u, positive_i] = torch.maximum(scores[positive_u, positive_i], torch.tensor(0.0))
    collector = Collector(CONFIG)
    collector.eval_batch_collect(scores, None, positive_u, positive_i)
    struct = collector.get_data_struct()
    positives = torch.zeros_like(scores, dtype=torch.bool)
    positives[positive_u, positive_i] = True
    rows = topk_rows(scores, positives, 4)
    assert torch.equal(rows, struct.get("rec.topk"))
    expected = Evaluator(CONFIG).evaluate(struct)
    users = [torch.arange(9)]
    mine = per_user_metrics(CONFIG, users, rows, list(expected))
    assert {k: round(float(np.mean(mine[k])), 4) for k in expected} == dict(expected)
    # no cold item: the warm slice is the plain ranking, every user kept
    none_cold = torch.zeros(30, dtype=torch.bool)
    keep, warm = slice_rows(scores, positive_u, positive_i, none_cold, 4)["warm"]
    assert keep.all() and torch.equal(warm, rows)


def _fabricated():
    """3 users, items 1..6 (0 = padding), items 5 and 6 cold; user 0 has item 3 in its history."""
    inf = -np.inf
    scores = torch.tensor([[inf, 0.9, 0.8, inf, 0.2, 0.7, 0.3],
                           [inf, 0.1, 0.5, 0.6, 0.4, 0.9, 0.8],
                           [inf, 0.9, 0.8, 0.7, 0.6, 0.1, 0.5]])
    positive_u = torch.tensor([0, 0, 1, 2, 2])
    positive_i = torch.tensor([2, 6, 1, 5, 6])
    cold = torch.tensor([False, False, False, False, False, True, True])
    return scores, positive_u, positive_i, cold


def test_the_slices_match_a_computation_by_hand():
    scores, positive_u, positive_i, cold = _fabricated()
    slices = {name: [] for name in COLD_SLICES}
    users = torch.tensor([10, 11, 12])
    for name, (keep, rows) in slice_rows(scores, positive_u, positive_i, cold, 4).items():
        slices[name].append((users[keep], rows))
    got = _cold_results(CONFIG, slices, {"items": 2, "test_items": 2, "test_interactions": 3})
    # the rankings by hand: user 0 over every item (item 3 is history): 1 2 5 6 4; among cold: 5 6
    # user 1: 5 6 3 2 4 1; user 2: 1 2 3 4 6 5 (among cold: 6 5)
    full = {10: [1, 2, 5, 6, 4], 11: [5, 6, 3, 2, 4, 1], 12: [1, 2, 3, 4, 6, 5]}
    among = {10: [5, 6], 11: [5, 6], 12: [6, 5]}
    relevant = {"cold": {10: {6}, 12: {5, 6}}, "among_cold": {10: {6}, 12: {5, 6}}, "warm": {10: {2}, 11: {1}}}
    ranking = {"cold": full, "among_cold": among, "warm": full}
    for name in COLD_SLICES:
        per_user = got["per_user"][name]
        assert per_user["user_id"].tolist() == sorted(relevant[name])
        assert got["test"][name]["users"] == len(relevant[name])
        for k in CONFIG["topk"]:
            by_hand = [_ndcg_recall(ranking[name][u], relevant[name][u], k) for u in sorted(relevant[name])]
            assert got["test"][name][f"ndcg@{k}"] == round(float(np.mean([n for n, _ in by_hand])), 4), (name, k)
            assert got["test"][name][f"recall@{k}"] == round(float(np.mean([r for _, r in by_hand])), 4), (name, k)
    # spot values: user 0's cold item 6 is 4th over every item, 2nd among the cold ones
    assert got["test"]["cold"]["recall@2"] == round((0 + 0) / 2, 4) and got["test"]["among_cold"]["recall@2"] == 1.0
    assert got["items"] == 2 and got["test_interactions"] == 3


def test_cold_item_mask_is_train_degree_zero_without_padding():
    cold = cold_item_mask(torch.tensor([1, 1, 3, 4]), 6)
    assert cold.tolist() == [False, False, True, False, False, True]


# ------------------------------------------------------------------------------------------- a real run
def _toy(folder: str, n_users: int = 60, n_items: int = 120) -> str:
    rng = np.random.default_rng(3)
    os.makedirs(folder)
    rows = [(u, int(i), 2 if k >= 10 else 1 if k == 9 else 0)
            for u in range(n_users) for k, i in enumerate(rng.choice(n_items, 12, replace=False))]
    pd.DataFrame(rows, columns=["userID", "itemID", "x_label"]).to_csv(f"{folder}/toy.inter", sep="\t",
                                                                        index=False)
    np.save(f"{folder}/text_feat.npy", rng.normal(size=(n_items, 8)).astype(np.float32))
    return folder


@pytest.fixture(scope="module")
def cold_run(tmp_path_factory):
    """LightGCN, one epoch, on the toy with 30% of its items held out (and once without)."""
    from recgoat_recbole.importers import import_mmrec
    from tests.conftest import working_dir

    root = tmp_path_factory.mktemp("cold")
    src = _toy(str(root / "src"))
    with working_dir(root):
        held = import_mmrec(src, str(root / "data"), cold_items=0.3, seed=1)
        plain = import_mmrec(src, str(root / "plain"))
        small = {"epochs": 1, "embedding_size": 16, "seed": 5, "show_progress": False}
        cold = run_training("LightGCN", config_file_list=[held.config], config_dict=small, log_details=False)
        warm = run_training("LightGCN", config_file_list=[plain.config], config_dict=small, log_details=False)
    return held, plain, cold, warm


def test_a_run_reports_the_slices_of_the_scores_recbole_ranks(cold_run):
    """Every test user's slice metrics, recomputed by hand from RecBole's full-sort scores of the tested model
    (history masked as in evaluation), are the run's."""
    from recbole.utils.case_study import full_sort_scores

    held, _, result, _ = cold_run
    train, _, test = result.data
    dataset = test._dataset
    iid, uid = dataset.iid_field, dataset.uid_field
    cold = cold_item_mask(train._dataset.inter_feat[iid], dataset.item_num)
    tokens = dataset.field2id_token[iid]
    held_ids = set(held.held_out.test_ids)
    assert {int(tokens[i]) for i in torch.nonzero(cold).flatten().tolist()} >= held_ids  # the held-out items are cold
    users = torch.unique(dataset.inter_feat[uid])
    with torch.no_grad():
        scores = full_sort_scores(users.numpy(), result.model, test)
    positives: dict[int, set] = {}
    for u, i in zip(dataset.inter_feat[uid].tolist(), dataset.inter_feat[iid].tolist()):
        positives.setdefault(u, set()).add(i)
    by_hand: dict[str, dict[int, tuple[float, float]]] = {name: {} for name in COLD_SLICES}
    for row, u in enumerate(users.tolist()):
        s = scores[row].numpy().astype(np.float64)
        full = [int(i) for i in np.argsort(-s, kind="stable")]
        among = [i for i in full if cold[i]]
        cold_pos = {i for i in positives[u] if cold[i]}
        warm_pos = positives[u] - cold_pos
        for name, ranking, relevant in (("cold", full, cold_pos), ("among_cold", among, cold_pos),
                                        ("warm", full, warm_pos)):
            if relevant:
                ndcg, _ = _ndcg_recall(ranking, relevant, 10)
                _, recall = _ndcg_recall(ranking, relevant, 20)
                by_hand[name][u] = (ndcg, recall)
    got = result.cold
    assert got["items"] == int(cold.sum()) and got["test_items"] == len(held_ids)
    assert got["test_interactions"] == held.held_out.test_interactions
    for name in COLD_SLICES:
        per_user = got["per_user"][name]
        assert per_user["user_id"].tolist() == sorted(by_hand[name]) and got["test"][name]["users"] == len(by_hand[name])
        expected = np.array([by_hand[name][u] for u in per_user["user_id"].tolist()])
        np.testing.assert_allclose(per_user["ndcg@10"], expected[:, 0], atol=1e-9)
        np.testing.assert_allclose(per_user["recall@20"], expected[:, 1], atol=1e-9)
    assert 0 < got["test"]["cold"]["users"] < len(users) and got["test"]["warm"]["users"] <= len(users)
    # the plain per-user values stay RecBole's test metrics
    assert round(float(result.per_user["ndcg@10"].mean()), 4) == pytest.approx(result.test_result["ndcg@10"], abs=1e-4)


def test_no_cold_items_no_slices(cold_run):
    _, plain, _, warm = cold_run
    assert plain.cold["test"] == 0  # (the toy's own split has no cold test item; a cold valid item is no slice)
    assert warm.cold is None and warm.per_user is not None


def test_recgoat_run_prints_a_line_per_slice(cold_run):
    from recgoat_cli.commands import _cold_lines

    _, _, result, warm = cold_run
    lines = _cold_lines(result.cold)
    users = {name: result.cold["test"][name]["users"] for name in COLD_SLICES}
    assert [line.split(":")[0] for line in lines] == [
        f"test (cold items, {users['cold']:,} users)", f"test (among cold items, {users['among_cold']:,} users)",
        f"test (warm items, {users['warm']:,} users)"]
    assert lines[0].split(": ", 1)[1] == "  ".join(f"{k} {result.cold['test']['cold'][k]:.4f}"
                                                   for k in ("recall@10", "recall@20", "ndcg@10", "ndcg@20"))
    assert _cold_lines(warm.cold) == []
