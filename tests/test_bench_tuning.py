"""`recgoat tune`: equal grids, selection on validation only, best.yaml, and `recgoat bench --tuned`."""
from __future__ import annotations

import json
from dataclasses import replace
import os

import pandas as pd
import pytest
import yaml

from recgoat_recbole.bench.design import RunSpec
from recgoat_recbole.bench import execute
from recgoat_recbole.bench.execute import find_identical, run_all
from recgoat_recbole.bench.tuning import GRIDS, choose, grid_points, grid_specs, load_grids, tuning_table, write_choice
from recgoat_cli import main
from tests.conftest import mini_config


def _defaults(model: str) -> dict:
    """RecBole's (or RecGOAT's) model YAML plus the overall defaults, as a model starts from them."""
    import recbole

    from recgoat_recbole.keys import MODELS, defaults

    folder = os.path.dirname(recbole.__file__)
    values = yaml.safe_load(open(os.path.join(folder, "properties", "overall.yaml")))
    if model in MODELS:  # RecGOAT and the multimodal peers (FREEDOM, LGMRec)
        values.update(defaults(model))
    else:
        values.update(yaml.safe_load(open(os.path.join(folder, "properties", "model", f"{model}.yaml"))) or {})
    # PyYAML reads "1e-05" as a string (RecBole's own loader reads it as a float)
    return {k: float(v) if isinstance(v, str) and v[:1].isdigit() and "e" in v else v for k, v in values.items()}


@pytest.mark.parametrize("model", sorted(GRIDS))
def test_default_grids_have_nine_points_and_contain_the_defaults(model):
    grid = GRIDS[model]
    assert len(grid_points(grid)) == 9
    defaults = _defaults(model)
    for knob, values in grid.items():
        assert knob in defaults, f"{model}: {knob} is not one of its config keys"
        assert defaults[knob] in values, f"{model}: the grid of {knob} misses the default {defaults[knob]}"


def test_load_grids_replaces_only_the_named_models(tmp_path):
    path = tmp_path / "g.yaml"
    path.write_text("LightGCN: {n_layers: [1, 3]}\n")
    grids = load_grids(str(path))
    assert grids["LightGCN"] == {"n_layers": [1, 3]} and grids["SGL"] == GRIDS["SGL"]
    path.write_text("LightGCN: {n_layers: []}\n")
    with pytest.raises(ValueError, match="non-empty list"):
        load_grids(str(path))


def _record(spec: RunSpec, valid: float) -> dict:
    return {"key": spec.key, "valid": {"ndcg@10": valid}, "test": {"ndcg@10": 1.0 - valid}, "epochs": 3}


def test_choose_uses_the_mean_validation_over_seeds_never_test():
    grid = grid_specs(["d"], ["LightGCN", "EASE"], [1, 2], {"epochs": 3}, {"d": "d.yaml"},
                      {"LightGCN": {"n_layers": [1, 2, 3]}, "EASE": {"reg_weight": [10.0, 20.0]}})
    assert len(grid) == 10 and all(s.overrides["epochs"] == 3 for s, _ in grid)
    valid = {("LightGCN", 1): (0.30, 0.10), ("LightGCN", 2): (0.22, 0.22), ("LightGCN", 3): (0.50, None),
             ("EASE", 10.0): (0.2, 0.2), ("EASE", 20.0): (0.2, 0.2)}
    records = []
    for spec, point in grid:
        value = valid[(spec.model, next(iter(point.values())))][spec.seed - 1]
        if value is not None:
            records.append(_record(spec, value))
    choice = choose(records, grid)
    # n_layers 2 has the best mean (0.22 > 0.20); n_layers 3 lacks a seed; its test numbers are never looked at
    assert choice == {"d": {"LightGCN": {"n_layers": 2}, "EASE": {"reg_weight": 10.0}}}  # ties: the first
    table = tuning_table(records, grid, choice)
    assert "| d | LightGCN | n_layers=2 | **0.2200** | 0.0000 | 2 |" in table
    assert "| n_layers=1 | 0.2000 | 0.1414 | 2 |" in table and "| n_layers=3 | 0.5000 | – | 1 |" in table


def test_write_choice_merges_separate_calls(tmp_path):
    path = str(tmp_path / "best.yaml")
    write_choice({"d": {"EASE": {"reg_weight": 10.0}}}, path, "first call")
    write_choice({"d": {"SGL": {"ssl_tau": 0.2}}, "e": {"EASE": {"reg_weight": 5.0}}}, path, "second call")
    text = open(path).read()
    assert text.startswith("# first call\n# second call\n")
    assert yaml.safe_load(text) == {"d": {"EASE": {"reg_weight": 10.0}, "SGL": {"ssl_tau": 0.2}},
                                    "e": {"EASE": {"reg_weight": 5.0}}}


def test_find_identical_needs_the_same_overrides_seed_and_config(tmp_path):
    folder = tmp_path / "tune"
    (folder / "runs").mkdir(parents=True)
    done = RunSpec("d", "EASE", 1, "tune: reg_weight=10", ("c.yaml",), {"epochs": 1, "reg_weight": 10.0})
    record = {**_record(done, 0.3), "dataset": "d", "model": "EASE", "seed": 1, "label": done.label,
              "config_files": [os.path.abspath("c.yaml")], "overrides": done.overrides, "epoch_s": 1.0,
              "total_s": 3.0, "peak_mib": 10.0, "device": "cpu"}
    execute._save(record, str(folder / "runs" / f"{done.key}.json"))  # signed, as a run of this user's saves it
    same = RunSpec("d", "EASE", 1, "", ("c.yaml",), {"reg_weight": 10.0, "epochs": 1}, "tuned")
    assert find_identical(same, str(folder))["key"] == done.key
    for other in (RunSpec("d", "EASE", 2, "", ("c.yaml",), same.overrides, "tuned"),
                  RunSpec("d", "EASE", 1, "", ("c.yaml",), {"reg_weight": 20.0, "epochs": 1}, "tuned"),
                  RunSpec("d", "EASE", 1, "", ("other.yaml",), same.overrides, "tuned")):
        assert find_identical(other, str(folder)) is None
    records = run_all([same], str(tmp_path / "bench"), reuse_from=[str(folder)], train=False)
    assert records[0]["reused_from"] == done.key and records[0]["label"] == "EASE (tuned)"
    # the same record unsigned (an older recgoat, or edited) is not reused
    path = folder / "runs" / f"{done.key}.json"
    json.dump({k: v for k, v in json.load(open(path)).items() if k != "signature"}, open(path, "w"))
    assert find_identical(same, str(folder)) is None


def test_tune_then_bench_tuned_end_to_end(mini_ml, capsys):
    """Two parallel jobs run the grid; bench --tuned reuses the grid's finished runs and trains the other seed."""
    with open("mini.yaml", "w") as f:
        yaml.safe_dump(mini_config(mini_ml, epochs=1), f)
    with open("grid.yaml", "w") as f:
        yaml.safe_dump({"LightGCN": {"n_layers": [1, 2]}, "EASE": {"reg_weight": [50.0, 500.0]}}, f)
    tune = ["tune", "--datasets", "ml-mini", "--config", "ml-mini=mini.yaml", "--models", "LightGCN", "EASE",
            "--grid", "grid.yaml", "--seeds", "1", "--epochs", "1", "--jobs", "2", "--out", "tune"]
    assert main(tune) == 0
    out = capsys.readouterr().out
    assert "test NDCG" not in out and out.count("valid NDCG@10") == 4
    best = yaml.safe_load(open("tune/best.yaml"))
    records = {json.load(open(os.path.join("tune/runs", n)))["key"]: json.load(open(os.path.join("tune/runs", n)))
               for n in os.listdir("tune/runs")}
    for model, knob, values in (("LightGCN", "n_layers", [1, 2]), ("EASE", "reg_weight", [50.0, 500.0])):
        scores = {v: next(r["valid"]["ndcg@10"] for r in records.values()
                          if r["model"] == model and r["overrides"][knob] == v) for v in values}
        assert best["ml-mini"][model] == {knob: max(values, key=lambda v: (scores[v], -values.index(v)))}
    assert "**" in open("tune/tuning.md").read()
    # parallel runs of one model may start in the same second, and RecBole names checkpoints by the second:
    # each run needs its own working directory (saved/, log/), or they delete each other's best model
    assert sorted(os.listdir("tune/work")) == sorted(records)

    bench = ["bench", "--datasets", "ml-mini", "--config", "ml-mini=mini.yaml", "--models", "LightGCN", "EASE",
             "--seeds", "1", "2", "--epochs", "1", "--tuned", "tune/best.yaml", "--reuse", "tune", "--out", "bench"]
    assert main(bench) == 0
    captured = capsys.readouterr()
    out = captured.out
    assert out.count("is finished, reused") == 2 and out.count(": running ...") == 2  # seed 2 of each model
    # seed 1 chose the settings and counts in the test means: said on the console and above the table
    assert "recgoat: warning: seed 1 chose the settings of tune/best.yaml" in captured.err
    assert "Warning: seed 1 chose the settings" in open("bench/results.md").read()
    rows = pd.read_csv("bench/results.csv")
    assert sorted(set(rows["model"])) == ["EASE (tuned)", "LightGCN (tuned)"] and len(rows) == 4
    assert "--tuned tune/best.yaml" in open("bench/results.md").read()
    assert main(bench[:-6] + ["--tuned", "mini.yaml", "--out", "bench"]) == 2  # not a best.yaml
    capsys.readouterr()
    assert main(bench[:-2] + ["--reuse", "bench", "--out", "bench2"]) == 0  # every run copied, none trained
    out = capsys.readouterr().out
    assert out.count("is finished, reused") == 4 and ": running ..." not in out


def test_a_failed_run_does_not_stop_the_others(mini_ml):
    with open("mini.yaml", "w") as f:
        yaml.safe_dump(mini_config(mini_ml, epochs=1), f)
    broken = RunSpec("ml-mini", "Pop", 1, "", ("mini.yaml",), {"epochs": 1, "eval_args": {"split": "nonsense"}})
    fine = RunSpec("ml-mini", "Pop", 2, "", ("mini.yaml",), {"epochs": 1})
    with pytest.raises(RuntimeError, match=r"1 of 2 runs failed: ml-mini__Pop__seed1;"):
        run_all([broken, fine], "bench", verbose=False, jobs=2)
    assert os.listdir("bench/runs") == [f"{fine.key}.json"]


def test_a_choice_on_the_edge_of_its_grid_is_named_under_the_table():
    from recgoat_recbole.bench.design import RunSpec
    from recgoat_recbole.bench.tuning import grid_points, on_edges, tuning_table

    grid = [(RunSpec("d", "FREEDOM", 1, str(p), ("x.yaml",), p), p)
            for p in grid_points({"dropout": [0.5, 0.7, 0.8], "reg_weight": [1e-4, 1e-3, 1e-2]})]
    inside = {"d": {"FREEDOM": {"dropout": 0.7, "reg_weight": 1e-3}}}
    edge = {"d": {"FREEDOM": {"dropout": 0.8, "reg_weight": 1e-3}}}
    assert on_edges(inside, grid) == {} and on_edges(edge, grid) == {("d", "FREEDOM"): ["dropout"]}
    assert "On the edge: FREEDOM on d chose the smallest or largest value of dropout" in tuning_table([], grid, edge)
    assert "On the edge" not in tuning_table([], grid, inside)


@pytest.mark.parametrize("values, edge, rule, expected", [
    ([25.0, 50.0, 4000.0, 8000.0], 8000.0, None, 16000.0),    # positive floats: by the edge's ratio
    ([25.0, 50.0, 4000.0, 8000.0], 25.0, None, 12.5),
    ([1e-5, 1e-4, 1e-3], 1e-5, None, 1e-6),
    ([1, 2, 3], 3, None, 4),                                 # evenly spaced integers: by their step
    ([1, 2, 3], 1, None, None),                              # ... not down to 0
    ([4, 16, 64], 4, None, 1),                               # other integers: by the ratio, rounded
    ([0.0, 1e-5, 1e-4], 0.0, None, None),                    # not below 0
    ([0.0, 1e-5, 1e-4], 1e-4, None, 1e-3),
    ([0.0, 0.1, 0.3], 0.3, None, 0.9),                       # a RecBole dropout: up to below 1 ...
    ([0.0, 0.1, 0.3, 0.9], 0.9, None, None),                 # ... not to 1 or more
    ([0.5, 0.7, 0.8], 0.8, "PROB", 0.914286),                # this package's rule decides where it has one
    ([0.5, 0.7, 0.8, 0.914286], 0.914286, "PROB", None),
    ([0.2, 0.3, 0.6], 0.6, "WEIGHT", 1.2),
    ([1, 2, 3], 2, None, None),                              # not an edge
    (["a", "b", "c"], "c", None, None),                      # not numbers
])
def test_beyond_steps_past_an_edge_by_the_written_rule(values, edge, rule, expected):
    from recgoat_recbole import config_check
    from recgoat_recbole.bench.tuning import beyond

    assert beyond(values, edge, getattr(config_check, rule) if rule else None) == expected


def _fake_scores(records_of: dict[str, dict]):
    """``records_for`` of :func:`extend_edges` over synthetic validation scores: ``score(dataset, point)``."""
    def peaked(dataset: str, point: dict) -> float:  # n_layers best at 5 on "a", at 2 on "b"; EASE flat
        best = {"a": 5, "b": 2}[dataset]
        return 0.5 - 0.01 * abs(point.get("n_layers", best) - best)

    def records_for(grid: list) -> list[dict]:
        for spec, point in grid:
            records_of.setdefault(spec.key, {**_record(spec, peaked(spec.dataset, point)), "model": spec.model})
        return list(records_of.values())

    return records_for


def test_extend_edges_trains_past_an_edge_until_the_choice_is_inside():
    """On "a" the best depth (5) lies past the grid's edge (3): --extend-edges adds 4, then 5, then 6, where the
    choice is inside; "b" chose inside its grid and keeps it. The docs rebuild the same grid from the records
    and the command."""
    from recgoat_recbole.bench.docs import tune_grid
    from recgoat_recbole.bench.tuning import extend_edges, on_edges

    grids = {"LightGCN": {"n_layers": [1, 2, 3]}}
    records: dict[str, dict] = {}

    def grid_of(per):
        return [run for d in ("a", "b") for run in grid_specs([d], ["LightGCN"], [1], {}, {"a": "x.yaml", "b": "x.yaml"},
                                                             per[d])]

    grid, found = extend_edges(["a", "b"], grids, grid_of, _fake_scores(records))
    depths = {d: sorted(p["n_layers"] for s, p in grid if s.dataset == d) for d in ("a", "b")}
    assert depths == {"a": [1, 2, 3, 4, 5, 6], "b": [1, 2, 3]} and len(found) == 9
    choice = choose(found, grid)
    assert choice == {"a": {"LightGCN": {"n_layers": 5}}, "b": {"LightGCN": {"n_layers": 2}}}
    assert on_edges(choice, grid) == {}
    assert extend_edges(["a", "b"], grids, grid_of, _fake_scores({}), rounds=1)[0] != grid  # capped: 4 only
    assert len(extend_edges(["a", "b"], grids, grid_of, _fake_scores({}), rounds=0)[0]) == 6

    command = "recgoat tune --datasets a b --models LightGCN --seeds 1 --extend-edges --grid g.yaml --out t"
    os.makedirs("root", exist_ok=True)
    with open("root/g.yaml", "w") as f:
        yaml.safe_dump(grids, f)
    rebuilt, _ = tune_grid("root", found, [command])
    assert [s.key for s, _ in rebuilt] == [s.key for s, _ in grid]
    assert len(tune_grid("root", found, [command.replace(" --extend-edges", "")])[0]) == 6


def test_tune_extend_edges_from_the_command_line(monkeypatch, capsys):
    """`recgoat tune --extend-edges`: the depth past the grid's edge trains, best.yaml takes the inside choice,
    and a rerun trains nothing; without the flag the edge is only named."""
    from dataclasses import asdict

    trained = []

    def fake_run_one(spec, out_dir, timeout=None, verbose=True):  # validation peaks at n_layers 5
        trained.append(spec.key)
        score = 0.5 - 0.01 * abs(spec.overrides["n_layers"] - 5)
        record = {**asdict(spec), "label": spec.label, "key": spec.key, "valid": {"ndcg@10": score},
                  "test": {"ndcg@10": score}, "epochs": 1, "epoch_s": 0.1, "total_s": 1.0, "peak_mib": 10.0,
                  "device": "cpu", "adjusted": {}, "checkpoint": None,
                  "config_sha": execute.config_digest([os.path.abspath(f) for f in spec.config_files])}
        return execute._save(record, os.path.join(out_dir, "runs", f"{spec.key}.json"))

    monkeypatch.setattr(execute, "run_one", fake_run_one)
    with open("d.yaml", "w") as f:
        f.write("dataset: d\n")
    with open("g.yaml", "w") as f:
        yaml.safe_dump({"LightGCN": {"n_layers": [1, 2, 3]}}, f)
    argv = ["tune", "--datasets", "d", "--config", "d=d.yaml", "--models", "LightGCN", "--grid", "g.yaml",
            "--seeds", "1", "--epochs", "1", "--out", "t"]
    assert main(argv) == 0 and len(trained) == 3
    assert yaml.safe_load(open("t/best.yaml"))["d"]["LightGCN"] == {"n_layers": 3}
    assert "On the edge" in capsys.readouterr().out
    assert main(argv + ["--extend-edges"]) == 0 and len(trained) == 6  # 4, 5, then 6, where 5 is inside
    assert yaml.safe_load(open("t/best.yaml"))["d"]["LightGCN"] == {"n_layers": 5}
    assert "On the edge" not in capsys.readouterr().out
    assert main(argv + ["--extend-edges"]) == 0 and len(trained) == 6


def test_extend_edges_and_across_are_one_line_error(capsys):
    argv = ["tune", "--datasets", "ml-100k", "--models", "BPR", "--extend-edges", "--across", "--out", "t"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("recgoat: error: --extend-edges") and "\n" not in err


def test_a_grid_file_may_list_candidates_one_by_one(tmp_path):
    path = tmp_path / "g.yaml"
    path.write_text("RecGOAT:\n  - {backbone: LightGCN}\n  - {backbone: SGL, align_gate: false}\n")
    grids = load_grids(str(path))
    assert grid_points(grids["RecGOAT"]) == [{"backbone": "LightGCN"}, {"backbone": "SGL", "align_gate": False}]
    runs = grid_specs(["d"], ["RecGOAT"], [1], {}, {"d": "d.yaml"}, grids)
    assert [s.overrides for s, _ in runs] == [{"backbone": "LightGCN"}, {"backbone": "SGL", "align_gate": False}]
    assert len({s.key for s, _ in runs}) == 2  # (each its own run folder)
    for bad in ("RecGOAT: []\n", "RecGOAT: [1, 2]\n", "RecGOAT:\n  - {a: 1}\n  - {a: 1}\n"):
        path.write_text(bad)
        with pytest.raises(ValueError, match="RecGOAT"):
            load_grids(str(path))


def test_choose_across_picks_one_point_for_every_dataset_by_the_mean_ratio_to_the_first():
    from recgoat_recbole.bench.tuning import across_table, choose_across

    points = [{"backbone": "LightGCN"}, {"backbone": "SGL"}, {"backbone": "NCL"}]
    grid = grid_specs(["a", "b"], ["RecGOAT"], [1, 2], {}, {"a": "a.yaml", "b": "b.yaml"}, {"RecGOAT": points})
    # (mean over the two seeds) SGL wins "a" by far and loses "b" by a little; NCL wins "b" and is second on "a":
    # the per-dataset rule splits the choice, the rule across datasets takes SGL
    valid = {("a", "LightGCN"): (0.10, 0.10), ("a", "SGL"): (0.14, 0.14), ("a", "NCL"): (0.11, 0.11),
             ("b", "LightGCN"): (0.20, 0.20), ("b", "SGL"): (0.19, 0.19), ("b", "NCL"): (0.21, 0.21)}
    records = [_record(spec, valid[(spec.dataset, point["backbone"])][spec.seed - 1]) for spec, point in grid]
    assert choose(records, grid) == {"a": {"RecGOAT": {"backbone": "SGL"}}, "b": {"RecGOAT": {"backbone": "NCL"}}}
    choice = choose_across(records, grid)
    # SGL: (1.4 + 0.95) / 2 = 1.175 > NCL: (1.1 + 1.05) / 2 = 1.075 > LightGCN 1
    assert choice == {"a": {"RecGOAT": {"backbone": "SGL"}}, "b": {"RecGOAT": {"backbone": "SGL"}}}
    table = across_table(records, grid, choice)
    assert "| RecGOAT | backbone=SGL | 1.4000 | 0.9500 | **1.1750** |" in table
    assert "| RecGOAT | backbone=LightGCN | 1.0000 | 1.0000 | 1.0000 |" in table
    # a candidate missing a seed on one dataset does not compete (nor is it shown with a mean)
    partial = [r for r in records if r["key"] != "b__RecGOAT-tune__backbone_SGL__seed2"]
    assert len(partial) == len(records) - 1
    assert choose_across(partial, grid)["a"]["RecGOAT"] == {"backbone": "NCL"}
    assert "| RecGOAT | backbone=SGL | 1.4000 | – | – |" in across_table(partial, grid, {})


def test_a_run_at_the_defaults_is_not_reused_once_the_defaults_change(tmp_path, monkeypatch):
    """RecGOAT's default backbone changing must not let `--reuse` copy a run of the old default as the new one."""
    from recgoat_recbole import keys

    folder = tmp_path / "old"
    (folder / "runs").mkdir(parents=True)

    def save(model: str, **extra) -> RunSpec:
        spec = RunSpec("d", model, 1, "", ("c.yaml",), {"epochs": 1})
        record = {**_record(spec, 0.3), "dataset": "d", "model": model, "seed": 1, "label": spec.label,
                  "config_files": [os.path.abspath("c.yaml")], "overrides": spec.overrides, "epoch_s": 1.0,
                  "total_s": 3.0, "peak_mib": 10.0, "device": "cpu", **extra}
        execute._save(record, str(folder / "runs" / f"{spec.key}.json"))
        return spec

    goat = save("RecGOAT", defaults_sha=execute.defaults_digest("RecGOAT"))
    assert find_identical(goat, str(folder))["model"] == "RecGOAT"
    changed = tuple(replace(k, default="SGL") if k.name == "backbone" else k for k in keys.MODELS["RecGOAT"])
    monkeypatch.setitem(keys.MODELS, "RecGOAT", changed)
    execute.defaults_digest.cache_clear()
    try:
        assert find_identical(goat, str(folder)) is None
        assert "defaults of RecGOAT changed" in execute.settings_differ(
            execute.load_record(str(folder / "runs" / f"{goat.key}.json"))[0], goat)
        # a record from before the digest: trusted for RecBole's own models (pinned by RecBole's version), not
        # for a model whose defaults this package defines
        assert find_identical(save("LightGCN"), str(folder))["model"] == "LightGCN"
        assert find_identical(save("FREEDOM"), str(folder)) is None
        assert find_identical(save("SGL+Align"), str(folder)) is None
        # in its own --out: a report shows it as trained (with a warning), a resume refuses to mix the two
        lines = []
        assert run_all([goat], str(folder), log=lines.append, train=False)[0]["model"] == "RecGOAT"
        assert any("defaults of RecGOAT changed" in line for line in lines)
        with pytest.raises(FileExistsError, match="defaults of RecGOAT changed"):
            run_all([goat], str(folder), log=lines.append)
    finally:
        execute.defaults_digest.cache_clear()


_GRIDS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks", "grids")


@pytest.mark.parametrize("name", sorted(f for f in os.listdir(_GRIDS) if f.endswith(".yaml")))
def test_committed_grid_files_name_recgoats_keys_within_their_rules(name):
    """A grid file of the repository's protocols loads, and each RecGOAT point names RecGOAT keys with values in
    range (a typo in a key would otherwise be a candidate that silently equals the defaults)."""
    from recgoat_recbole.config_check import validate
    from recgoat_recbole.keys import defaults, rules

    path = os.path.join(_GRIDS, name)
    grids = load_grids(path)
    assert "RecGOAT" in grids
    for point in grid_points(grids["RecGOAT"]):
        assert set(point) <= set(defaults("RecGOAT")), point
        validate({**defaults("RecGOAT"), **point}, rules("RecGOAT"))
