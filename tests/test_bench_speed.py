"""The speed benchmark at the paper's shapes (benchmarks/bench_speed.py, recgoat_recbole.bench.speed; issue 28),
at tiny scale: the records (one per measurement, signed, round-tripping), the tables rebuilt from the records
alone (byte for byte by --report-only and by `recgoat results`), the goal marks, the scaling table, the timed
phases of the model build, one command measuring a tiny synthetic shape, and the one-line refusal of
--device cuda without CUDA. The synthetic data: tests/test_bench_synthetic.py."""
from __future__ import annotations

import copy
import importlib.util
import json
import os
from types import SimpleNamespace

import pytest
import torch

from recgoat_recbole.bench import speed
from recgoat_recbole.bench.docs import regenerate
from recgoat_recbole.bench.synthetic import SHAPES, scaled

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _script():
    spec = importlib.util.spec_from_file_location("bench_speed", os.path.join(ROOT, "benchmarks", "bench_speed.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# ------------------------------------------------------------------------------------------ the script
def test_the_script_names_every_synthetic_shape():
    assert _script().SYNTHETIC == list(SHAPES)
    assert _script().PAPER_SETS == [k for k, s in SHAPES.items() if s.paper]


# ----------------------------------------------------------------------------------------------- records
def _shape(name="synthetic-baby", factor=1.0) -> dict:
    s = scaled(SHAPES[name], factor)
    return {"users": s.users, "items": s.items, "interactions": s.interactions, "dims": dict(s.dims)}


def _run(job, epoch, eval_s, peak, shape=None, dataset="synthetic-baby", use_gat=False, gate_open=True,
         code="after", round_=1, knn_s=None, gate_s=None, cores=2, device="cpu") -> dict:
    baseline = job in ("LightGCN", "NCL")
    recgoat = {} if baseline else {"use_gat": use_gat, "use_oat": True, "cmcl_weight": 0.032,
                                            "wasserstein_weight": 0.001, "align_gate": job != "paper"}
    knn = [] if knn_s is None else [{"label": "item kNN graph (image, k=10)", "rows": 10, "dim": 4, "k": 10,
                                     "edges": 5, "seconds": knn_s, "built": True, "in_gate": False}]
    gate = None if gate_s is None else {"seconds": gate_s, "weights": {"image": 1.0, "text": 1.0 if gate_open else 0.0}}
    settings = {"embedding_size": 64, "n_layers": 2, "train_batch_size": 2048, "epochs": 3, "evals": 3,
                "dataset": dataset, "job": job}
    return {"kind": speed.RUN, "key": f"{dataset}__{code}__{job}__r{round_}", "dataset": dataset, "job": job,
            "model": job if baseline else "RecGOAT", "code": code, "round": round_,
            "settings": settings, "shape": shape or _shape(), "device": device,
            "epoch_s": [epoch * 3, epoch, epoch * 0.9],  # (its median: neither its mean nor its minimum)
            "eval_s": [eval_s] * 3, "peak_mib": peak, "build_s": 0.5, "params": 1000, "knn": knn, "gate": gate,
            "recgoat": recgoat, "cores": cores, "threads": 2, "torch": "2.x", "recbole": "1.2.1", "python": "3.11",
            "git_commit": "a" * 40, "recgoat_version": "0.1.0"}


def _import(import_s, shape=None, dataset="synthetic-baby", round_=1, cores=2) -> dict:
    return {"kind": speed.IMPORT, "key": f"{dataset}__import__r{round_}", "dataset": dataset, "code": "after",
            "round": round_, "settings": {"dataset": dataset}, "shape": shape or _shape(), "import_s": import_s,
            "peak_mib": 900.0, "device": "cpu", "cores": cores, "git_commit": "a" * 40, "recgoat_version": "0.1.0"}


def _ratio_rows(text: str) -> dict[tuple[str, str], list[str]]:
    rows = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if line.startswith("| synthetic") and len(cells) > 8:
            rows[(cells[0], cells[1])] = cells
    return rows


def test_ratios_are_marked_against_the_goals_at_the_papers_shapes_only():
    small = _shape("synthetic-baby", 0.01)
    records = [
        _run("LightGCN", 1.0, 1.0, 1000.0), _run("LightGCN", 0.9, 1.2, 1100.0, round_=2),  # best: 0.9 / 1.0
        _run("shipped", 1.07, 1.2, 1290.0, gate_s=0.1),  # epoch 1.19x ✓, eval 1.2x ✗, peak 1.29x ✓
        _run("paper", 1.35, 1.05, 1400.0, use_gat=True, knn_s=2.0),  # GAT: epoch 1.5x ✓, eval ✓, peak 1.4x ✗
        _run("all-terms", 1.4, 1.0, 1000.0, use_gat=True, knn_s=2.0, gate_s=0.1, gate_open=False),  # 1.56x ✗
        _run("LightGCN", 1.0, 1.0, 1000.0, shape=small, dataset="synthetic-baby x0.01"),
        _run("shipped", 2.0, 2.0, 2000.0, shape=small, dataset="synthetic-baby x0.01", gate_s=0.1),
    ]
    rows = _ratio_rows(speed.render(records))
    assert rows[("synthetic-baby", "shipped")][6:9] == ["1.19x ✓", "1.20x ✗", "1.29x ✓"]
    assert rows[("synthetic-baby", "paper")][6:9] == ["1.50x ✓", "1.05x ✓", "1.40x ✗"]
    assert rows[("synthetic-baby", "all-terms")][6] == "1.56x ✗"
    assert rows[("synthetic-baby", "shipped")][3:6] == ["LightGCN", "0.90", "1.07"]  # each model's best round
    assert rows[("synthetic-baby x0.01", "shipped")][6:9] == ["2.00x", "2.00x", "2.00x"]  # not a paper shape
    assert "gate open" in rows[("synthetic-baby", "shipped")][2]
    assert "gate closed: text" in rows[("synthetic-baby", "all-terms")][2]
    assert rows[("synthetic-baby", "paper")][2] == "GAT views, OAT, CMCL, W; no gate"


def test_the_scaling_table_shows_each_part_growing_with_the_shape():
    big = _shape("synthetic-sports")
    records = [_import(10.0), _import(40.0, shape=big, dataset="synthetic-sports"),
               _run("LightGCN", 1.0, 0.5, 1000.0), _run("paper", 1.2, 0.6, 1200.0, use_gat=True, knn_s=2.0),
               _run("LightGCN", 3.0, 2.0, 2500.0, shape=big, dataset="synthetic-sports"),
               _run("paper", 3.3, 2.2, 2600.0, shape=big, dataset="synthetic-sports", use_gat=True, knn_s=5.0)]
    text = speed.render(records)
    lines = {line.split(" | ")[0].strip("| "): line for line in text.splitlines() if line.startswith("| ")}
    assert lines["part"] == "| part | synthetic-baby | synthetic-sports |"  # ordered by size
    assert lines["interactions"] == "| interactions | 160,792 | 296,337 (×1.8) |"
    assert lines["feature widths"] == "| feature widths | image 4096, text 384 | image 4096, text 384 |"
    assert lines["import (s)"] == "| import (s) | 10.00 | 40.00 (×4.0) |"
    assert lines["kNN graphs, cold (s): paper"] == "| kNN graphs, cold (s): paper | 2.00 | 5.00 (×2.5) |"
    assert lines["import + kNN graphs + gate (s): paper"].endswith("| 12.00 | 45.00 (×3.8) |")
    assert lines["epoch (s): LightGCN"] == "| epoch (s): LightGCN | 1.00 | 3.00 (×3.0) |"
    assert lines["peak memory (MiB): paper"] == "| peak memory (MiB): paper | 1,200 | 2,600 (×2.2) |"
    assert "gate, with its kNN graph (s): paper" not in lines  # the paper's configuration has no gate


def test_the_preparation_goal_is_marked_for_electronics_on_2_cores():
    shape = _shape("synthetic-electronics")
    runs = [_run("LightGCN", 1.0, 1.0, 1.0, shape=shape, dataset="synthetic-electronics"),
            _run("all-terms", 1.0, 1.0, 1.0, shape=shape, dataset="synthetic-electronics", use_gat=True,
                 knn_s=200.0, gate_s=50.0)]
    row = "| import + kNN graphs + gate (s): all-terms | "
    assert row + "550.00 ✓ |" in speed.render(runs + [_import(300.0, shape, "synthetic-electronics")])
    assert row + "650.00 ✗ |" in speed.render(runs + [_import(400.0, shape, "synthetic-electronics")])
    assert row + "550.00 |" in speed.render(runs + [_import(300.0, shape, "synthetic-electronics", cores=16)])


def test_a_record_round_trips_and_report_only_rebuilds_the_tables_byte_for_byte(tmp_path, capsys):
    script = _script()
    out = tmp_path / "out"
    records = [_import(10.0), _run("LightGCN", 1.0, 1.0, 1000.0), _run("shipped", 1.1, 1.0, 1100.0, gate_s=0.2)]
    for record in records:
        speed.save(record, str(out / "runs" / f"{record['key']}.json"))
    (out / "commands.txt").write_text("python benchmarks/bench_speed.py --dataset synthetic-baby --out out\n")
    loaded = speed.load_folder(str(out), check_signature=True)
    assert [{k: v for k, v in r.items() if k != "signature"} for r in loaded] == sorted(
        records, key=lambda r: r["key"])  # every field back as written, and signed by this user
    assert all(r["signature"] and "unverified" not in r for r in loaded)
    assert speed.render(loaded) == speed.render(records)

    written = script.report(str(out))  # what a measuring run ends with
    assert open(out / "speed.md", encoding="utf-8").read() == written
    assert "--dataset synthetic-baby --out out" in written and "| synthetic-baby | shipped |" in written
    os.remove(out / "speed.md")
    script.main(["--report-only", "--out", str(out)])
    assert capsys.readouterr().out == written
    assert open(out / "speed.md", encoding="utf-8").read() == written

    # the tables are the records': an edited record changes them, and is marked as not signed by this user
    path = out / "runs" / f"{records[2]['key']}.json"
    edited = json.loads(path.read_text())
    edited["epoch_s"] = [2.2, 2.2, 2.2]
    path.write_text(json.dumps(edited))
    script.main(["--report-only", "--out", str(out)])
    again = capsys.readouterr().out
    assert "| synthetic-baby † | shipped |" in again and "2.20x" in again and "† 1 of 3 records" in again


def test_malformed_speed_records_are_named_and_left_out(tmp_path, capsys):
    out = tmp_path / "out"
    good = _run("LightGCN", 1.0, 1.0, 1.0)
    speed.save(good, str(out / "runs" / "good.json"))
    bad = copy.deepcopy(good)
    bad["epoch_s"] = []
    (out / "runs" / "bad.json").write_text(json.dumps(bad))
    (out / "runs" / "cut.json").write_text('{"kind": "speed-run", "key": ')
    lines = []
    assert [r["key"] for r in speed.load_folder(str(out), log=lines.append)] == [good["key"]]
    assert any("bad.json" in line and "epoch_s" in line for line in lines)
    assert any("cut.json" in line and "not valid JSON" in line for line in lines)


def test_recgoat_results_rebuilds_a_speed_block_from_committed_records(tmp_path):
    folder = tmp_path / "results" / "speed-toy"
    for record in (_run("LightGCN", 1.0, 1.0, 1000.0), _run("shipped", 1.1, 1.0, 1100.0, gate_s=0.2)):
        speed.save(record, str(folder / "runs" / f"{record['key']}.json"))
    (folder / "commands.txt").write_text("python benchmarks/bench_speed.py --out results/speed-toy\n")
    (tmp_path / "docs").mkdir()
    doc = tmp_path / "docs" / "speed.md"
    doc.write_text("# Speed\n\n<!-- results speed-toy -->\nstale\n<!-- /results -->\n")
    assert regenerate([str(doc)], str(tmp_path), check=True) == [f"{doc}: speed-toy"]
    regenerate([str(doc)], str(tmp_path))
    text = doc.read_text()
    assert "| synthetic-baby | shipped |" in text and "1.10x ✓" in text and "stale" not in text
    assert "(2 measurements)" in text and not os.path.exists(tmp_path / "docs" / "img")  # tables, no figure
    assert regenerate([str(doc)], str(tmp_path), check=True) == []


# ------------------------------------------------------------------------------------------- measuring
def test_the_phases_of_the_model_build_are_timed_cold(tmp_path):
    """The gate and the kNN graphs, timed where the model build calls them; a graph built inside the gate is
    counted as the gate's, and every graph in a fresh cache is built, not read."""
    script = _script()
    import recgoat_recbole.knn_cache as knn_cache
    import recgoat_recbole.model as model

    phases = script.Phases().install()
    try:
        rng = torch.Generator().manual_seed(0)
        x = torch.randn(30, 8, generator=rng)
        config = {"feature_cache_dir": str(tmp_path), "dataset": "toy", "knn_chunk_size": 16, "knn_k": 3,
                  "align_gate": True, "align_gate_min_lift": 2.0, "fusion_gamma": 0.0}
        knn_cache.knn_edges(config, x, 3, "item", "image")
        users, items = torch.randint(0, 20, (200,), generator=rng), torch.randint(1, 30, (200,), generator=rng)
        dataset = SimpleNamespace(inter_feat={"u": users, "i": items}, uid_field="u", iid_field="i")
        weights = model.modality_gate(config, {"image": x}, dataset, "RecGOAT")
    finally:
        phases.remove()
    assert model.modality_gate.__name__ == "modality_gate"  # put back
    view, in_gate = phases.knn
    assert (view["rows"], view["dim"], view["k"], view["built"], view["in_gate"]) == (30, 8, 3, True, False)
    assert in_gate["in_gate"] and in_gate["built"] and in_gate["seconds"] <= phases.gate["seconds"]
    assert phases.gate["weights"] == {"image": weights["image"]}


def _in_process(script, monkeypatch):
    """The children run in this process (the same functions a child runs; no interpreter start-up)."""
    calls = []

    def run_child(cmd, tmp, code=script.ROOT):
        role, payload = cmd[cmd.index("--child") + 1], cmd[cmd.index("--payload") + 1]
        calls.append(role)
        import contextlib
        import io

        buffer = io.StringIO()
        with contextlib.redirect_stdout(buffer):
            script.child_main(script.parse_args(["--child", role, "--payload", payload]))
        return json.loads(buffer.getvalue().strip().splitlines()[-1])

    monkeypatch.setattr(script, "run_child", run_child)
    return calls


def test_one_command_measures_a_tiny_synthetic_shape_into_records(tmp_path, monkeypatch, capsys):
    script = _script()
    calls = _in_process(script, monkeypatch)
    argv = ["--dataset", "synthetic-baby", "--scale", "0.01", "--epochs", "1", "--evals", "1", "--rounds", "2",
            "--variant", "shipped", "--device", "cpu", "--out", "out", "--cache", "cache"]
    script.main(argv)
    printed = capsys.readouterr().out
    assert calls == ["make-data", "import", "LightGCN", "warm-up", "RecGOAT", "import", "LightGCN", "RecGOAT"]
    runs = sorted(os.listdir("out/runs"))
    assert runs == [f"synthetic-baby_x0.01__{what}__r{n}.json" for what in (
        "cpu-d64-l2-b2048__after__LightGCN", "cpu-d64-l2-b2048__after__shipped", "import") for n in (1, 2)]
    records = {r["key"]: r for r in speed.load_folder("out", check_signature=True)}
    shipped = records["synthetic-baby_x0.01__cpu-d64-l2-b2048__after__shipped__r1"]
    shape = scaled(SHAPES["synthetic-baby"], 0.01)
    assert {k: shipped["shape"][k] for k in ("users", "items", "interactions")} == {
        "users": shape.users, "items": shape.items, "interactions": shape.interactions}  # as RecBole saw it
    assert shipped["shape"]["dims"] == {"image": 4096, "text": 384}
    assert shipped["settings"]["embedding_size"] == 64 and shipped["device"] == "cpu"
    assert len(shipped["epoch_s"]) == 1 and len(shipped["eval_s"]) == 1 and shipped["gate"] is not None
    assert shipped["recgoat"]["align_gate"] is True and shipped["torch"] == torch.__version__
    for n in (1, 2):  # every round builds its kNN graphs cold (a fresh feature cache), the gate's own ones here
        knn = records[f"synthetic-baby_x0.01__cpu-d64-l2-b2048__after__shipped__r{n}"]["knn"]
        assert len(knn) == 2 and all(k["built"] and k["in_gate"] for k in knn)
    assert not [f for _, _, files in os.walk("cache") for f in files if f.startswith("knn-")]
    assert records["synthetic-baby_x0.01__import__r1"]["imported"]["users"] == shape.users
    assert open("out/commands.txt").read() == "python benchmarks/bench_speed.py " + " ".join(argv) + "\n"
    assert printed == open("out/speed.md", encoding="utf-8").read()
    # a rerun measures nothing: every measurement is recorded
    calls.clear()
    script.main(argv)
    assert calls == ["make-data"] and capsys.readouterr().out == printed


def test_cuda_on_a_machine_without_it_is_refused_with_one_line(tmp_path, monkeypatch):
    script = _script()
    calls = _in_process(script, monkeypatch)
    monkeypatch.setattr(script, "probe", lambda: {"cuda": False, "torch": "2.x+cpu"})
    with pytest.raises(SystemExit) as exc:
        script.main(["--dataset", "synthetic-paper", "--device", "cuda", "--embedding-size", "800", "--n-layers",
                     "3", "--batch-size", "4096", "--out", "out", "--cache", "cache"])
    message = str(exc.value)
    assert "\n" not in message and "--device cuda" in message and "no CUDA device" in message
    assert calls == ["probe"] and not os.path.exists("out") and not os.path.exists("cache/bench_data")


def test_a_before_checkout_gets_its_own_ratio_column():
    records = [_run("LightGCN", 1.0, 1.0, 1000.0), _run("shipped", 1.1, 1.0, 1000.0, gate_s=0.1),
               _run("LightGCN", 1.0, 1.0, 1000.0, code="before"),
               _run("shipped", 1.6, 1.0, 1000.0, gate_s=0.1, code="before")]
    text = speed.render(records)
    assert "| epoch / baseline | epoch / baseline before |" in text
    row = _ratio_rows(text)[("synthetic-baby", "shipped")]
    assert row[6:8] == ["1.10x ✓", "1.60x"]  # (the goal marks this checkout's ratio, not the old one)
    assert "(the --before checkout) (2 records)" in text


def test_the_alignment_column_names_the_speed_options_a_run_had_on():
    """A speed table row says when a run traded the exact step for a cheaper one (docs/speed.md); a record from
    before these options (no such keys) reads as the exact step."""
    from recgoat_recbole.bench.speed import _alignment

    base = {"use_oat": True, "cmcl_weight": 0.032, "wasserstein_weight": 0.001, "align_gate": False}
    assert _alignment({"recgoat": base}) == "OAT, CMCL, W; no gate"
    exact = {**base, "oat_plan_every": 1, "align_max_items": None, "knn_search": "exact"}
    assert _alignment({"recgoat": exact}) == "OAT, CMCL, W; no gate"
    fast = {**base, "oat_plan_every": 10, "align_max_items": 512, "knn_search": "hnsw"}
    assert _alignment({"recgoat": fast}) == "OAT, CMCL, W, plan every 10 steps, ≤ 512 items, HNSW kNN; no gate"


def test_another_baseline_gets_its_own_rows_and_only_lightgcns_are_marked_against_the_goals():
    """`bench_speed.py --baseline NCL`: RecGOAT on its NCL branch against RecBole's NCL (what the alignment costs
    over its own ID branch) next to the ratio to LightGCN; issue 28's goals are about LightGCN, so only those
    ratios carry ✓ / ✗, and a baseline builds no kNN graph row of its own in the scaling table."""
    records = [_run("LightGCN", 1.0, 1.0, 1000.0), _run("NCL", 4.0, 1.0, 1100.0),
               _run("shipped", 4.4, 1.0, 1210.0, gate_s=0.1, knn_s=2.0)]
    records[-1]["recgoat"]["backbone"] = "NCL"
    text = speed.render(records)
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in text.splitlines()
            if line.startswith("| synthetic-baby | shipped")]
    assert [r[3] for r in rows] == ["LightGCN", "NCL"] and rows[0][1] == "shipped (NCL branch)"
    assert rows[0][6:9] == ["4.40x ✗", "1.00x ✓", "1.21x ✓"]
    assert rows[1][6:9] == ["1.10x", "1.00x", "1.10x"]
    assert "kNN graphs, cold (s): shipped" in text and "kNN graphs, cold (s): NCL" not in text
