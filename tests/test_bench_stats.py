"""Per-user records (recgoat_recbole.bench.stats), the paired test, and the budget notes of the tables."""
from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import wilcoxon

from recgoat_recbole.bench.names import METRICS
from recgoat_recbole.bench.report import cap_binds, markdown_table, summarise
from recgoat_recbole.bench.stats import decode_per_user, encode_per_user, paired_test, user_means


def _run(label: str, seed: int, values: np.ndarray, users: np.ndarray | None = None, **extra) -> dict:
    users = np.arange(1, len(values) + 1) if users is None else users
    ndcg = float(np.mean(values))
    return {"dataset": "d", "model": label, "label": label, "seed": seed, "epochs": 3, "epoch_s": 1.0,
            "total_s": 5.0, "peak_mib": 10.0, "device": "cpu",
            "test": {"recall@10": ndcg, "ndcg@10": ndcg, "recall@20": ndcg, "ndcg@20": ndcg},
            "per_user": encode_per_user({"user_id": users, "ndcg@10": values, "recall@20": values}), **extra}


def test_per_user_values_round_trip_within_the_quantisation_in_user_order():
    rng = np.random.default_rng(0)
    users = rng.permutation(np.arange(1, 3001))  # (as evaluation batches give them: any order)
    values = rng.random(3000) * (rng.random(3000) < 0.3)
    packed = encode_per_user({"user_id": users, "ndcg@10": values})
    assert len(packed["ndcg@10"]) < 4500  # compact: a few KB for 3,000 users
    back = decode_per_user(packed)
    order = np.argsort(users)
    assert np.array_equal(back["user_id"], users[order])
    assert np.max(np.abs(back["ndcg@10"] - values[order])) <= 0.5 / 65535 + 1e-12
    damaged = dict(packed, **{"ndcg@10": packed["ndcg@10"][:-8]})
    with pytest.raises(ValueError, match="per_user"):
        decode_per_user(damaged)
    with pytest.raises(ValueError, match="format"):
        decode_per_user(dict(packed, format="float32"))


def test_the_paired_test_is_scipys_wilcoxon_on_per_user_means_over_seeds():
    rng = np.random.default_rng(1)
    base = rng.random(400)
    a = [_run("A", s, np.clip(base + 0.05 + rng.normal(0, 0.1, 400), 0, 1)) for s in (1, 2, 3)]
    b = [_run("B", s, np.clip(base + rng.normal(0, 0.1, 400), 0, 1)) for s in (1, 2)]
    test = paired_test(a, b)
    ua, ma = user_means(a, "ndcg@10")
    ub, mb = user_means(b, "ndcg@10")
    assert np.array_equal(ua, ub) and test.users == 400
    assert test.p == pytest.approx(wilcoxon(ma, mb, zero_method="wilcox").pvalue)  # the exact reference
    assert test.delta == pytest.approx(ma.mean() - mb.mean()) and test.delta > 0 and test.significant
    # a difference inside the noise is not significant
    noise = [_run("C", s, np.clip(base + rng.normal(0, 0.1, 400), 0, 1)) for s in (1, 2)]
    assert not paired_test(noise, b).significant
    # every user equal: no test (NaN), never "significant"
    same = paired_test([_run("A", 1, base)], [_run("B", 1, base)])
    assert math.isnan(same.p) and not same.significant
    # other test users (another split), or no per-user values: no test at all
    assert paired_test([_run("A", 1, base, users=np.arange(2, 402))], [_run("B", 1, base)]) is None
    assert paired_test([{**_run("A", 1, base), "per_user": None}], [_run("B", 1, base)]) is None


def test_tables_report_the_test_against_the_best_other_model():
    rng = np.random.default_rng(2)
    base = rng.random(300)
    records = ([_run("Best", s, np.clip(base + 0.1, 0, 1)) for s in (1, 2)] +
               [_run("Close", s, np.clip(base + 0.1 + rng.normal(0, 0.01, 300), 0, 1)) for s in (1, 2)] +
               [_run("Worse", s, base * 0.5) for s in (1, 2)])
    rows = {r["model"]: r for r in summarise(records, METRICS)}
    best_other = {name: row["test_vs"][0] for name, row in rows.items()}
    top = max(rows, key=lambda n: rows[n]["ndcg@10"])
    runner_up = sorted(rows, key=lambda n: -rows[n]["ndcg@10"])[1]
    assert best_other[top] == runner_up and all(best_other[n] == top for n in rows if n != top)
    assert rows["Worse"]["test_vs"][1].significant and rows["Worse"]["test_vs"][1].delta < 0
    table = markdown_table(list(rows.values()), METRICS)
    assert "vs best other (NDCG@10)" in table and "Wilcoxon" in table
    worse = next(line for line in table.splitlines() if line.startswith("| d | Worse"))
    assert f"vs {top}, p = " in worse


def test_cap_binds_only_when_the_run_was_still_improving_at_the_cap():
    def rec(epochs, curve, cap=10, patience=3, kind="GENERAL"):
        return {"epochs": epochs, "epochs_cap": cap, "stopping_step": patience, "model_type": kind,
                "valid_curve": [[i + 1, v] for i, v in enumerate(curve)]}

    rising = [0.1 * i for i in range(10)]
    assert cap_binds(rec(10, rising)) is True  # best at the last epoch of the budget
    assert cap_binds(rec(10, rising[:7] + [0.5, 0.5, 0.5])) is False  # best 4 validations before the end: patience 3
    assert cap_binds(rec(10, rising[:7] + [0.75, 0.7, 0.6])) is True  # best within the last 3
    assert cap_binds(rec(6, rising[:6])) is False  # early stopping ended it
    assert cap_binds(rec(1, [0.3], cap=1, kind="TRADITIONAL")) is None  # closed form: no budget
    assert cap_binds({"epochs": 3}) is None  # an older record says nothing


def test_the_table_says_where_the_budget_binds():
    base = np.linspace(0, 1, 50)
    still = {"epochs": 10, "epochs_cap": 10, "stopping_step": 2, "model_type": "GENERAL",
             "valid_curve": [[e, e / 10] for e in range(1, 11)]}
    stopped = {**still, "epochs": 6, "valid_curve": [[e, min(e, 4) / 10] for e in range(1, 7)]}
    records = [{**_run("Capped", 1, base), **still}, {**_run("Stopped", 1, base * 0.9), **stopped}]
    table = markdown_table(summarise(records, METRICS), METRICS)
    assert "| 10 ‡ |" in table and "| 6 |" in table
    assert "Budget: at most 10 epochs, patience 2" in table
    assert "‡ the cap binds: Capped on d (1 of 1 runs)" in table
    table = markdown_table(summarise([{**_run("Stopped", 1, base), **stopped}], METRICS), METRICS)
    assert "The cap binds nowhere" in table and "‡" not in table
