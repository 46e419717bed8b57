"""Cold items in the benchmark: a run record keeps the slices' metrics and per-user values only when its test
split has cold items; the report then adds the cold-item table (with a paired test per slice) and the CSV its
columns, and leaves both out otherwise."""
from __future__ import annotations

import csv
import json
import os

import numpy as np
import pytest
import torch

from recgoat_recbole.bench import execute, worker
from recgoat_recbole.bench.names import METRICS
from recgoat_recbole.bench.report import cold_table, markdown_table, summarise, write_outputs
from recgoat_recbole.bench.stats import decode_per_user, encode_per_user, paired_test, slice_records
from recgoat_recbole.training import COLD_SLICES, TrainingResult

SLICE_USERS = {"cold": np.arange(1, 201), "among_cold": np.arange(1, 201), "warm": np.arange(101, 401)}


def _cold(rng, shift: float) -> dict:
    per_user, test = {}, {}
    for name, users in SLICE_USERS.items():
        values = np.clip(rng.random(len(users)) * 0.5 + shift, 0, 1)
        per_user[name] = encode_per_user({"user_id": users, "ndcg@10": values, "recall@20": values})
        test[name] = {"users": len(users), "ndcg@10": float(values.mean()), "recall@20": float(values.mean()),
                      "recall@10": 0.1, "ndcg@20": 0.1}
    return {"items": 50, "test_items": 20, "test_interactions": 230, "test": test, "per_user": per_user}


def _run(label: str, seed: int, cold: dict | None) -> dict:
    users = np.arange(1, 401)
    values = np.full(400, 0.2)
    record = {"dataset": "d", "model": label, "label": label, "seed": seed, "key": f"d__{label}__seed{seed}",
              "epochs": 3, "epoch_s": 1.0, "total_s": 5.0, "peak_mib": 10.0, "device": "cpu",
              "valid": {"ndcg@10": 0.2}, "test": {m: 0.2 for m in METRICS},
              "per_user": encode_per_user({"user_id": users, "ndcg@10": values, "recall@20": values})}
    if cold is not None:
        record["cold"] = cold
    return record


def _fake_result(cold: dict | None) -> TrainingResult:
    from recbole.utils import ModelType

    config = {"device": torch.device("cpu"), "epochs": 2, "stopping_step": 10, "MODEL_TYPE": ModelType.GENERAL}
    return TrainingResult(config=config, best_valid_score=0.5, best_valid_result={"ndcg@10": 0.5},
                          test_result={"ndcg@10": 0.25}, valid_score_bigger=True, epoch_times=[1.0],
                          checkpoint=None, adjusted={}, build_s=0.1, total_s=1.0, cold=cold)


@pytest.mark.parametrize("with_cold", [True, False])
def test_the_record_keeps_the_slices_only_with_cold_items(monkeypatch, with_cold):
    import recgoat_recbole.training as training

    users = np.array([3, 1, 2])
    cold = {"items": 7, "test_items": 4, "test_interactions": 9,
            "test": {name: {"users": 3, "ndcg@10": 0.5, "recall@20": 0.25} for name in COLD_SLICES},
            "per_user": {name: {"user_id": users, "ndcg@10": np.array([0.1, 0.2, 0.3]),
                                "recall@20": np.array([0.0, 0.5, 1.0])} for name in COLD_SLICES}}
    monkeypatch.setattr(training, "run_training", lambda *a, **k: _fake_result(cold if with_cold else None))
    record = worker.run_spec({"model": "LightGCN", "seed": 1, "config_files": [], "overrides": {}})
    if not with_cold:
        assert "cold" not in record
        return
    got = record["cold"]
    assert (got["items"], got["test_items"], got["test_interactions"]) == (7, 4, 9)
    assert got["test"]["among_cold"] == {"users": 3, "ndcg@10": 0.5, "recall@20": 0.25}
    back = decode_per_user(got["per_user"]["warm"])
    assert back["user_id"].tolist() == [1, 2, 3] and back["ndcg@10"] == pytest.approx([0.2, 0.3, 0.1], abs=1e-4)
    # a saved record with it is a well-formed record; a damaged `cold` is not
    full = {**_run("A", 1, None), **record, "dataset": "d", "model": "A", "label": "A", "key": "k"}
    json.dumps(full)
    assert execute._malformed(full) == ""
    assert "cold" in execute._malformed({**full, "cold": {"test": {"cold": {"ndcg@10": "x"}}}})


def test_the_cold_table_and_columns_appear_only_with_cold_items(tmp_path):
    rng = np.random.default_rng(0)
    records = [_run("Good", s, _cold(rng, 0.3)) for s in (1, 2)] + [_run("Poor", s, _cold(rng, 0.0)) for s in (1, 2)]
    rows = summarise(records, METRICS)
    table = markdown_table(rows, METRICS)
    assert "Cold-start items" in table and "- d: 50 cold items, 20 of them in test (230 test interactions); test " \
        "users with a cold item 200, with a warm item 300." in table
    head = next(line for line in table.splitlines() if line.startswith("| dataset | model | cold NDCG@10"))
    assert head.split(" | ")[2:] == ["cold NDCG@10", "cold Recall@20", "vs best other (cold NDCG@10)",
                                     "among cold NDCG@10", "among cold Recall@20",
                                     "vs best other (among cold NDCG@10)", "warm NDCG@10", "warm Recall@20",
                                     "vs best other (warm NDCG@10)", "seeds |"]
    poor = [line for line in table.splitlines() if line.startswith("| d | Poor | ")][-1]  # (the cold table's)
    good = {r["model"]: r for r in rows}["Good"]["cold"]
    assert good["cold"]["ndcg@10"] == pytest.approx(np.mean([r["cold"]["test"]["cold"]["ndcg@10"]
                                                             for r in records[:2]]))
    # each slice's test pairs the slice's own users (warm: 300 users, not the 200 of the cold slices)
    for name in COLD_SLICES:
        expected = paired_test(slice_records(records[2:], name), slice_records(records[:2], name))
        other, test = {r["model"]: r for r in rows}["Poor"]["cold"][name]["test_vs"]
        assert other == "Good" and test == expected and test.users == len(SLICE_USERS[name])
        assert f"{expected.delta:+.4f} vs Good" in poor
    paths = write_outputs(records, str(tmp_path / "with"), METRICS, "# t")
    header = next(csv.reader(open(paths["csv"])))
    assert header[-6:] == ["cold ndcg@10", "cold recall@20", "among_cold ndcg@10", "among_cold recall@20",
                           "warm ndcg@10", "warm recall@20"]
    assert "Cold-start items" in open(paths["markdown"]).read()

    plain = [_run("Good", 1, None), _run("Poor", 1, None)]
    assert cold_table(summarise(plain, METRICS)) == ""
    assert "Cold-start items" not in markdown_table(summarise(plain, METRICS), METRICS)
    paths = write_outputs(plain, str(tmp_path / "without"), METRICS, "# t")
    header = next(csv.reader(open(paths["csv"])))
    assert header[-1] == "signed" and not any(h.startswith(("cold", "warm", "among")) for h in header)
    assert os.path.isfile(paths["markdown"])
