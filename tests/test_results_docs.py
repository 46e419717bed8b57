"""Results as code: the docs' result tables are generated blocks, rebuilt from committed run records
(recgoat_recbole.bench.docs, `recgoat results`), and the committed docs match what their records give."""
from __future__ import annotations

import glob
import json
import os

import numpy as np
import pytest

from recgoat_cli import main
from recgoat_recbole.bench.docs import ResultsError, find_blocks, image_path, regenerate
from recgoat_recbole.bench.stats import encode_per_user

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _doc_files(root: str) -> list[str]:
    return [p for p in [os.path.join(root, "README.md"), *sorted(glob.glob(os.path.join(root, "docs", "*.md")))]
            if os.path.isfile(p)]


def test_the_committed_docs_are_what_their_records_regenerate():
    """Every generated block of README.md and docs/*.md equals what `recgoat results` rebuilds from
    results/NAME/runs, and its figure exists. On failure: run `recgoat results` and commit the result."""
    files = _doc_files(ROOT)
    blocks = [b for path in files for b in find_blocks(path)]
    assert any(b.name for b in blocks), "docs/results.md has no generated block"
    assert regenerate(files, ROOT, check=True) == []


def _write_folder(root, name: str, values: dict[str, float], users: int = 200) -> None:
    runs = root / "results" / name / "runs"
    runs.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for model, level in values.items():
        for seed in (1, 2):
            per = np.clip(level + rng.normal(0, 0.1, users), 0, 1)
            mean = float(per.mean())
            record = {"dataset": "toy", "model": model, "label": model, "seed": seed, "key": f"toy__{model}__{seed}",
                      "test": {"recall@10": mean, "ndcg@10": mean, "recall@20": mean, "ndcg@20": mean},
                      "valid": {"ndcg@10": mean}, "epochs": 12, "epoch_s": 0.5, "total_s": 9.0, "peak_mib": 300.0,
                      "device": "cpu", "epochs_cap": 100, "stopping_step": 5, "model_type": "GENERAL",
                      "valid_curve": [[e, min(e, 7) / 10] for e in range(1, 13)], "recgoat_version": "0.1.0",
                      "git_commit": "a" * 40, "signature": "not ours",
                      "per_user": encode_per_user({"user_id": np.arange(1, users + 1), "ndcg@10": per,
                                                   "recall@20": per})}
            (runs / f"{record['key']}.json").write_text(json.dumps(record))
    (root / "results" / name / "commands.txt").write_text(f"recgoat bench --datasets toy --out results/{name}\n")


def test_blocks_are_rebuilt_from_the_records_and_the_prose_is_kept(tmp_path, capsys):
    _write_folder(tmp_path, "toy-run", {"Strong": 0.5, "Weak": 0.3})
    (tmp_path / "docs").mkdir()
    doc = tmp_path / "docs" / "results.md"
    doc.write_text("# Results\n\nProse before.\n\n<!-- results toy-run -->\nstale table\n<!-- /results -->\n\n"
                   "Prose after.\n")
    assert regenerate([str(doc)], str(tmp_path), check=True) == [f"{doc}: toy-run"]
    assert "stale table" in doc.read_text()  # --check writes nothing

    assert main(["results", "--root", str(tmp_path)]) == 0
    text = doc.read_text()
    assert text.startswith("# Results\n\nProse before.\n\n<!-- results toy-run -->\n") and text.endswith(
        "<!-- /results -->\n\nProse after.\n")
    assert "stale table" not in text and "recgoat bench --datasets toy --out results/toy-run" in text
    strong = next(line for line in text.splitlines() if line.startswith("| toy | Strong"))
    assert "vs Weak, p = " in strong and "± " in strong  # the test against the best other, mean ± std
    assert text.index("| toy | Strong") < text.index("| toy | Weak")  # best first
    assert "The cap binds nowhere" in text and "†" not in text  # committed records: no signature marks
    assert "![results/toy-run](img/results-toy-run.png)" in text
    assert os.path.isfile(image_path(str(tmp_path), "toy-run"))
    assert main(["results", "--root", str(tmp_path), "--check"]) == 0

    # a record changed after the docs were built: the check names the block
    path = sorted((tmp_path / "results" / "toy-run" / "runs").glob("*.json"))[0]
    record = json.loads(path.read_text())
    record["test"]["ndcg@10"] += 0.01
    path.write_text(json.dumps(record))
    assert main(["results", "--root", str(tmp_path), "--check"]) == 1
    assert "differs from its records: " in capsys.readouterr().err
    # a missing figure counts too
    main(["results", "--root", str(tmp_path)])
    os.remove(image_path(str(tmp_path), "toy-run"))
    assert regenerate([str(doc)], str(tmp_path), check=True) == [f"{doc}: toy-run"]


def test_a_block_naming_no_folder_is_one_error_line(tmp_path, capsys):
    doc = tmp_path / "README.md"
    doc.write_text("<!-- results nowhere -->\n<!-- /results -->\n")
    with pytest.raises(ResultsError, match="nowhere"):
        regenerate([str(doc)], str(tmp_path), check=True)
    assert main(["results", "--root", str(tmp_path), str(doc)]) == 2
    assert capsys.readouterr().err.startswith("recgoat: error: ")


def test_bench_writes_the_command_a_results_folder_was_made_by(tmp_path, monkeypatch):
    from recgoat_cli import commands

    monkeypatch.chdir(tmp_path)
    commands._record_command("out", "recgoat bench --datasets a")
    commands._record_command("out", "recgoat bench --datasets a")
    commands._record_command("out", "recgoat bench --datasets b")
    assert (tmp_path / "out" / "commands.txt").read_text() == "recgoat bench --datasets a\nrecgoat bench --datasets b\n"


def test_a_tune_folder_block_shows_validation_only_with_the_across_rule(tmp_path):
    """A committed `recgoat tune --across` folder (docs/protocol.md's candidates) renders as the validation table
    and the rule's ratios, from its records and the grid file its command names; its records' test numbers (which
    RecBole computes at the end of every run) appear nowhere, and there is no figure."""
    from recgoat_recbole.bench.design import RunSpec
    from recgoat_recbole.bench.tuning import _label

    points = [{"backbone": "LightGCN"}, {"backbone": "SGL"}, {"backbone": "NCL"}]
    (tmp_path / "grids").mkdir()
    (tmp_path / "grids" / "c.yaml").write_text("RecGOAT:\n" + "".join(f"  - {{backbone: {p['backbone']}}}\n"
                                                                      for p in points))
    folder = tmp_path / "results" / "cands"
    (folder / "runs").mkdir(parents=True)
    valid = {("a", "LightGCN"): 0.10, ("a", "SGL"): 0.14, ("a", "NCL"): 0.11,
             ("b", "LightGCN"): 0.20, ("b", "SGL"): 0.19, ("b", "NCL"): 0.21}
    for (dataset, backbone), level in valid.items():
        for seed in (1, 2):
            spec = RunSpec(dataset, "RecGOAT", seed, _label({"backbone": backbone}))
            value = level + (0.002 if seed == 1 else -0.002)
            record = {"dataset": dataset, "model": "RecGOAT", "variant": spec.variant, "label": spec.label,
                      "seed": seed, "key": spec.key, "test": {"ndcg@10": 0.777, "recall@10": 0.777},
                      "valid": {"ndcg@10": value}, "epochs": 12, "epoch_s": 0.5, "total_s": 9.0,
                      "peak_mib": 300.0, "device": "cpu", "epochs_cap": 100, "stopping_step": 5,
                      "model_type": "GENERAL", "valid_curve": [[1, value]], "recgoat_version": "0.1.0",
                      "git_commit": "a" * 40, "signature": "not ours"}
            (folder / "runs" / f"{spec.key}.json").write_text(json.dumps(record))
    (folder / "commands.txt").write_text("recgoat tune --across --datasets a b --models RecGOAT --grid grids/c.yaml "
                                         "--seeds 1 2 --out results/cands\n")
    (tmp_path / "docs").mkdir()
    doc = tmp_path / "docs" / "protocol.md"
    doc.write_text("<!-- results cands -->\n<!-- /results -->\n")
    assert main(["results", "--root", str(tmp_path)]) == 0
    text = doc.read_text()
    assert "0.777" not in text and "validation only" in text
    assert "| a | RecGOAT | backbone=SGL | **0.1400** | 0.0028 | 2 |" in text  # chosen across: SGL (1.175)
    assert "| RecGOAT | backbone=SGL | 1.4000 | 0.9500 | **1.1750** |" in text
    assert not os.path.exists(image_path(str(tmp_path), "cands"))
    assert main(["results", "--root", str(tmp_path), "--check"]) == 0
    # the grid file its command names must be there: its order says which candidate is the reference
    os.remove(tmp_path / "grids" / "c.yaml")
    with pytest.raises(ResultsError, match="grids/c.yaml is not in the repository"):
        regenerate([str(doc)], str(tmp_path), check=True)


def test_recgoats_defaults_are_what_the_protocol_chose_from_its_committed_records():
    """docs/protocol.md, step 6: the winner of `recgoat tune --across` over results/protocol-default (validation
    only, every candidate with all its seeds on both datasets) is RecGOAT's defaults in keys.py. A default edited
    by hand, or a record that would change the choice, fails here."""
    from recgoat_recbole.bench.docs import load_folder, tune_grid
    from recgoat_recbole.bench.tuning import choose_across
    from recgoat_recbole.keys import defaults

    records, commands = load_folder(os.path.join(ROOT, "results", "protocol-default"))
    grid, across = tune_grid(ROOT, records, commands)
    assert across and len(records) == len(grid) == 30  # five candidates x two datasets x three seeds
    chosen = {tuple(sorted(p.items())) for models in choose_across(records, grid).values() for p in models.values()}
    assert len(chosen) == 1
    point = dict(next(iter(chosen)))
    assert {key: defaults("RecGOAT")[key] for key in point} == point


def test_recgoats_speed_settings_are_what_issue_28s_rule_chose_from_its_committed_records():
    """docs/protocol.md, "Issue 28: the speed settings": a candidate passes when its validation NDCG@10 over the
    three seeds (results/speed-settings, Scientific; TikTok passes by construction) is >= 0.99x the exact step's
    (S0); RecGOAT's default is the passing candidate with the smallest epoch / LightGCN at the synthetic Baby shape
    (results/speed-cpu-s0, -s1, -s2: each measure's best round, as the speed tables). The plugin keeps the exact
    step. A default edited by hand, or a record that would change the choice, fails here."""
    from recgoat_recbole.bench import speed
    from recgoat_recbole.bench.docs import load_folder, tune_grid
    from recgoat_recbole.bench.tuning import _across
    from recgoat_recbole.keys import defaults

    records, commands = load_folder(os.path.join(ROOT, "results", "speed-settings"))
    grid, _ = tune_grid(ROOT, records, commands)
    (names, rows), = _across(records, grid, "ndcg@10").values()
    assert names == ["scientific"] and len(rows) == 4 and len(records) == 12
    passing = [point for point, ratios, score in rows if score is not None and min(ratios.values()) >= 0.99]
    assert len(passing) == 3  # S0 (the reference), S1 and S2; S3 fails

    ratio = {}
    for name in ("s0", "s1", "s2"):
        runs = speed.load_folder(os.path.join(ROOT, "results", f"speed-cpu-{name}"))
        recgoat = [r for r in runs if r.get("model") == "RecGOAT"]
        lightgcn = [r for r in runs if r.get("model") == "LightGCN"]
        assert recgoat and lightgcn and all(r["shape"]["items"] == 7050 for r in recgoat + lightgcn)
        setting = {k: recgoat[0]["recgoat"][k] for k in ("oat_plan_every", "align_max_items")}
        assert all({k: r["recgoat"][k] for k in setting} == setting for r in recgoat)
        ratio[tuple(sorted(setting.items()))] = speed._best(recgoat)["epoch_s"] / speed._best(lightgcn)["epoch_s"]
    chosen = min(passing, key=lambda point: ratio[tuple(sorted(point.items()))])
    assert {key: defaults("RecGOAT")[key] for key in chosen} == chosen
    assert {key: defaults("Align")[key] for key in chosen} == rows[0][0]  # the plugin: the exact step
