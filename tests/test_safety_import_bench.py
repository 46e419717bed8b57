"""Issue 30, items 5, 7 and parts of 8/9: concurrent re-imports keep the user's files, `recgoat tune` runs with
one --out do not clobber best.yaml, `bench --reuse` trusts only records this user's runs signed, and a bad --out,
--reuse or run record is one line or one warning, never a traceback (tiny data; no training: run_one is faked)."""
from __future__ import annotations

import fcntl
import json
import os
import shutil
import threading
import time
from dataclasses import asdict

import numpy as np
import pandas as pd
import pytest
import yaml

from recgoat_recbole import importers
from recgoat_recbole.bench import execute
from recgoat_recbole.bench.design import RunSpec
from recgoat_cli import main

N_ITEMS = 6


# ================================================================================================ import
def _mmrec(folder: str, seed: int = 0) -> str:
    rng = np.random.default_rng(seed)
    os.makedirs(folder, exist_ok=True)
    rows = [(u, i, 0 if i < 4 else (1 if i == 4 else 2)) for u in range(5) for i in range(N_ITEMS)]
    pd.DataFrame(rows, columns=["userID", "itemID", "x_label"]).to_csv(os.path.join(folder, "toy.inter"),
                                                                         sep="\t", index=False)
    np.save(os.path.join(folder, "image_feat.npy"), rng.normal(size=(N_ITEMS, 3)).astype(np.float32))
    return folder


def _imported_with_notes() -> None:
    importers.import_mmrec(_mmrec("src"), "out")
    with open("out/toy/notes.txt", "w") as f:
        f.write("my notes\n")
    _mmrec("src", seed=1)


def test_two_reimports_at_once_keep_the_users_files(monkeypatch):
    """B used to run inside A's window between its two renames: B saw no old folder and carried nothing over
    (notes.txt ended up only in a hidden .toy.old-*), and A failed. The window is widened here to 1 s."""
    _imported_with_notes()
    real_rename = os.rename
    widened = threading.Event()

    def slow_rename(src, dst, *args, **kwargs):
        real_rename(src, dst, *args, **kwargs)
        if ".toy.old-" in os.path.basename(str(dst)) and not widened.is_set():
            widened.set()
            time.sleep(1.0)  # the old folder is aside, the new one not yet in place

    monkeypatch.setattr(os, "rename", slow_rename)
    errors: list[BaseException] = []

    def one() -> None:
        try:
            importers.import_mmrec("src", "out")
        except BaseException as exc:  # noqa: BLE001 (reported below)
            errors.append(exc)

    threads = [threading.Thread(target=one) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert errors == []  # both succeed: the second waits for the first
    assert open("out/toy/notes.txt").read() == "my notes\n"
    np.testing.assert_array_equal(np.load("out/toy/image.npz")["features"], np.load("src/image_feat.npy"))
    assert os.listdir("out") == ["toy"]  # no .toy.old-*, .toy.tmp-* or lock file left


def test_a_file_written_into_the_folder_during_the_import_survives(monkeypatch):
    """The carry-over listing used to happen before the swap: a file written after it went with the old folder."""
    _imported_with_notes()
    real = importers._carry_over
    calls = []

    def carry_then_write(old, new):
        carried = real(old, new)
        if not calls:  # once, right after the (first) listing
            with open(os.path.join("out", "toy", "late.txt"), "w") as f:
                f.write("written during the import\n")
        calls.append((old, new))
        return carried

    monkeypatch.setattr(importers, "_carry_over", carry_then_write)
    importers.import_mmrec("src", "out")
    assert open("out/toy/late.txt").read() == "written during the import\n"
    assert open("out/toy/notes.txt").read() == "my notes\n"
    assert os.listdir("out") == ["toy"]


def test_debris_of_an_interrupted_import_is_removed_by_the_next_one():
    _imported_with_notes()
    for debris in (".toy.old-0123456789ab", ".toy.tmp-xyz"):
        os.makedirs(os.path.join("out", debris, "sub"))
        np.save(os.path.join("out", debris, "sub", "big.npy"), np.zeros(100))
    os.makedirs("out/.other.tmp-keep")  # another dataset's: not touched
    importers.import_mmrec("src", "out")
    assert sorted(os.listdir("out")) == [".other.tmp-keep", "toy"]
    assert open("out/toy/notes.txt").read() == "my notes\n"


def test_an_interrupt_in_the_final_delete_leaves_no_hidden_copy_for_ever(monkeypatch):
    _imported_with_notes()
    real_rmtree = shutil.rmtree

    def interrupted(path, *args, **kwargs):
        if ".toy.old-" in os.path.basename(str(path)):
            os.remove(os.path.join(path, "toy.train.inter"))  # part of it is gone, then Ctrl-C
            raise KeyboardInterrupt
        return real_rmtree(path, *args, **kwargs)

    monkeypatch.setattr(shutil, "rmtree", interrupted)
    with pytest.raises(KeyboardInterrupt):
        importers.import_mmrec("src", "out")
    monkeypatch.setattr(shutil, "rmtree", real_rmtree)
    # the new folder is in place, whole, with the user's file
    np.testing.assert_array_equal(np.load("out/toy/image.npz")["features"], np.load("src/image_feat.npy"))
    assert open("out/toy/notes.txt").read() == "my notes\n"
    importers.import_mmrec("src", "out")  # the next import removes the half-deleted copy
    assert os.listdir("out") == ["toy"]


def test_a_crash_between_the_two_renames_restores_the_old_folder():
    """Killed after moving the old folder aside: the next import puts it back first and keeps the user's files."""
    _imported_with_notes()
    os.rename("out/toy", "out/.toy.old-0123456789ab")
    importers.import_mmrec("src", "out")
    assert open("out/toy/notes.txt").read() == "my notes\n"
    np.testing.assert_array_equal(np.load("out/toy/image.npz")["features"], np.load("src/image_feat.npy"))
    assert os.listdir("out") == ["toy"]


def test_an_import_that_cannot_get_the_lock_is_one_line(monkeypatch, capsys):
    _imported_with_notes()
    monkeypatch.setattr(importers, "LOCK_TIMEOUT_S", 0.3, raising=False)
    with open("out/.toy.lock", "w") as held:  # another import holds it
        fcntl.flock(held.fileno(), fcntl.LOCK_EX)
        capsys.readouterr()
        rc = main(["data", "import", "--format", "mmrec", "src", "out"])
        err = capsys.readouterr().err.strip()
    assert rc == 2 and err.startswith("recgoat: error: ") and "\n" not in err, err
    assert ".toy.lock" in err and "another import" in err
    assert open("out/toy/notes.txt").read() == "my notes\n"
    assert sorted(os.listdir("out")) == [".toy.lock", "toy"]  # no temp folder left; the holder's lock kept


# ================================================================================================= tune
def test_two_tune_runs_writing_one_best_yaml_keep_both_choices(monkeypatch):
    """Both used to write the fixed best.yaml.tmp: B's choice vanished and A failed (FileNotFoundError)."""
    from recgoat_recbole.bench.tuning import write_choice

    real_dump = yaml.safe_dump
    barrier = threading.Barrier(2, timeout=1.0)

    def dump_together(*args, **kwargs):  # both writers inside the write at once (where the old code allows it)
        try:
            barrier.wait()
        except threading.BrokenBarrierError:
            pass
        return real_dump(*args, **kwargs)

    monkeypatch.setattr(yaml, "safe_dump", dump_together)
    os.makedirs("tune")
    errors: list[BaseException] = []

    def one(model: str, value: float) -> None:
        try:
            write_choice({"d": {model: {"reg_weight": value}}}, "tune/best.yaml", f"call {model}")
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=one, args=a) for a in (("EASE", 10.0), ("LightGCN", 1e-4))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert errors == []
    text = open("tune/best.yaml").read()
    assert yaml.safe_load(text) == {"d": {"EASE": {"reg_weight": 10.0}, "LightGCN": {"reg_weight": 1e-4}}}
    assert "# call EASE\n" in text and "# call LightGCN\n" in text
    assert sorted(os.listdir("tune")) == [".best.yaml.lock", "best.yaml"]  # no temp file left


# ================================================================================================ bench
_CALLS: list[str] = []


def _fake_run_one(spec: RunSpec, out_dir: str, timeout=None, verbose=True) -> dict:
    """What run_one saves for a finished run, without training."""
    _CALLS.append(spec.key)
    score = 0.1 + 0.001 * spec.seed
    record = {**asdict(spec), "label": spec.label, "key": spec.key,
              "test": {m: score for m in ("recall@10", "ndcg@10", "recall@20", "ndcg@20")},
              "valid": {"ndcg@10": score}, "epochs": 1, "epoch_s": 0.1, "total_s": 1.0, "peak_mib": 10.0,
              "device": "cpu", "adjusted": {}, "checkpoint": None,
              "config_sha": execute.config_digest([os.path.abspath(f) for f in spec.config_files])}
    return execute._save(record, os.path.join(out_dir, "runs", f"{spec.key}.json"))


@pytest.fixture
def fake_bench(monkeypatch):
    monkeypatch.setattr(execute, "run_one", _fake_run_one)
    _CALLS.clear()
    with open("d.yaml", "w") as f:
        f.write("dataset: d\n")
    return _CALLS


def _bench(capsys, *extra: str, out: str = "bench") -> tuple[int, str, str]:
    capsys.readouterr()
    rc = main(["bench", "--datasets", "d", "--config", "d=d.yaml", "--models", "LightGCN", "--seeds", "1", "2",
               "--epochs", "1", "--out", out, *extra])
    captured = capsys.readouterr()
    return rc, captured.out, captured.err


def _edit(path: str, ndcg: float = 0.99) -> None:
    record = json.load(open(path))
    record["test"]["ndcg@10"] = ndcg
    json.dump(record, open(path, "w"), indent=1)


RUN1 = "bench/runs/d__LightGCN__seed1.json"


def test_records_say_which_code_and_settings_wrote_them_and_are_signed(fake_bench, capsys):
    from recgoat_recbole import __version__
    from recgoat_recbole.signing import verify

    assert _bench(capsys)[0] == 0
    record = json.load(open(RUN1))
    assert record["recgoat_version"] == __version__
    assert "git_commit" in record and (record["git_commit"] is None or len(record["git_commit"]) == 40)
    assert record["overrides"]["epochs"] == 1 and record["config_files"] == ["d.yaml"]
    assert record["config_sha"] == execute.config_digest(["d.yaml"])
    body = json.dumps({k: v for k, v in record.items() if k != "signature"}, sort_keys=True).encode()
    assert verify(body, record["signature"])


def test_an_edited_record_is_not_reused_on_resume(fake_bench, capsys):
    assert _bench(capsys)[0] == 0 and len(fake_bench) == 2
    _edit(RUN1)
    rc, out, err = _bench(capsys)
    assert rc == 0 and "Traceback" not in err
    warning = [line for line in (out + err).splitlines() if "d__LightGCN__seed1.json" in line and "signature" in line]
    assert len(warning) == 1, out + err
    assert fake_bench[2:] == ["d__LightGCN__seed1"]  # trained again; seed 2 reused
    assert 0.99 not in set(pd.read_csv("bench/results.csv")["ndcg@10"])
    assert "0.99" not in open("bench/results.md").read()


def _retyped(text: str, **fields) -> str:
    return json.dumps({**json.loads(text), **fields})


MALFORMED = {
    "truncated": lambda text: text[: len(text) // 2],
    "not an object": lambda text: "[1, 2]",
    "missing fields": lambda text: '{"key": 1}',
    "not UTF-8": lambda text: b'{"dataset": "\xe9\xff"}',
    "deeply nested": lambda text: "[" * 100_000,
    "metric not a number": lambda text: _retyped(text, test={"ndcg@10": "0.99"}),
    "config file not a name": lambda text: _retyped(text, config_files=[1]),
    "reused_dir not a string": lambda text: _retyped(text, reused_dir=["x"]),
}


@pytest.mark.parametrize("damage", list(MALFORMED))
@pytest.mark.parametrize("report_only", [False, True])
def test_a_malformed_record_warns_and_is_trained_again(fake_bench, capsys, damage, report_only):
    assert _bench(capsys)[0] == 0
    bad = MALFORMED[damage](open(RUN1).read())
    open(RUN1, "wb").write(bad if isinstance(bad, bytes) else bad.encode("utf-8"))
    rc, out, err = _bench(capsys, *(["--report-only"] if report_only else []))
    assert rc == 0 and "Traceback" not in err, err
    assert any("d__LightGCN__seed1.json" in line and "not reused" in line for line in (out + err).splitlines())
    if report_only:  # left out of the tables, nothing trained
        assert len(fake_bench) == 2 and list(pd.read_csv("bench/results.csv")["seed"]) == [2]
    else:
        assert fake_bench[2:] == ["d__LightGCN__seed1"]
        json.load(open(RUN1))  # whole again


def test_reuse_trusts_only_records_this_user_signed(fake_bench, capsys, monkeypatch, tmp_path):
    assert _bench(capsys, out="other")[0] == 0
    # another user's runs: the same records, signed under another key
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "someone-else"))
    for name in os.listdir("other/runs"):
        path = os.path.join("other/runs", name)
        execute._save({k: v for k, v in json.load(open(path)).items() if k != "signature"}, path)
    monkeypatch.delenv("XDG_CACHE_HOME")
    _edit("other/runs/d__LightGCN__seed2.json")  # and one also edited
    os.makedirs("third/runs")
    open("third/runs/d__LightGCN__seed1.json", "w").write('{"dataset": "d", "model": "LightGCN", "se')
    fake_bench.clear()
    rc, out, err = _bench(capsys, "--reuse", "other", "third")
    assert rc == 0 and "Traceback" not in err, err
    assert sorted(fake_bench) == ["d__LightGCN__seed1", "d__LightGCN__seed2"]  # nothing reused: both trained
    lines = (out + err).splitlines()
    for name in ("other/runs/d__LightGCN__seed1.json", "other/runs/d__LightGCN__seed2.json",
                 "third/runs/d__LightGCN__seed1.json"):
        assert sum(name in line and "not reused" in line for line in lines) == 1, out
    assert "is finished, reused" not in out
    assert 0.99 not in set(pd.read_csv("bench/results.csv")["ndcg@10"])


def test_reused_runs_are_named_in_the_report(fake_bench, capsys):
    assert _bench(capsys, out="first")[0] == 0
    fake_bench.clear()
    rc, out, _ = _bench(capsys, "--reuse", "first")
    assert rc == 0 and fake_bench == [] and out.count("is finished, reused") == 2
    md = open("bench/results.md").read()
    assert "reused 2 runs from first" in md
    assert "reused 2 runs from first" in out.rsplit("=" * 100, 2)[1]  # the final block says it too
    record = json.load(open(RUN1))
    assert record["reused_from"] == "d__LightGCN__seed1" and record["reused_dir"] == os.path.abspath("first")
    assert set(pd.read_csv("bench/results.csv")["reused_from"]) == {os.path.abspath("first")}
    # a resume of that folder still says where its runs came from, and the copies verify
    rc, out, _ = _bench(capsys)
    assert rc == 0 and fake_bench == [] and "reused 2 runs from first" in open("bench/results.md").read()


def test_report_only_keeps_unverified_records_and_marks_them(fake_bench, capsys):
    assert _bench(capsys)[0] == 0
    _edit(RUN1, 0.5)
    rc, out, err = _bench(capsys, "--report-only")
    assert rc == 0 and len(fake_bench) == 2, err
    md = open("bench/results.md").read()
    assert "1 of 2 runs not signed by this user's runs" in md and "†" in md
    assert any("d__LightGCN__seed1.json" in line and "signature" in line for line in (out + err).splitlines())
    assert set(pd.read_csv("bench/results.csv")["signed"]) == {True, False}


@pytest.mark.parametrize("make", ["missing", "no runs"])
def test_a_reuse_folder_without_runs_is_one_line(fake_bench, capsys, make):
    if make == "no runs":
        os.makedirs("empty")
    rc, out, err = _bench(capsys, "--reuse", "nowhere" if make == "missing" else "empty")
    assert rc == 2 and err.strip().startswith("recgoat: error: --reuse ") and "\n" not in err.strip(), err
    assert ("nowhere" if make == "missing" else "empty") in err
    assert fake_bench == []


def test_out_pointing_at_a_file_is_one_line_before_training(fake_bench, capsys):
    open("afile", "w").write("not a folder\n")
    for extra in ((), ("--report-only",)):
        rc, out, err = _bench(capsys, *extra, out="afile")
        assert rc == 2 and err.strip().startswith("recgoat: error: ") and "\n" not in err.strip(), err
        assert "afile" in err and "not a folder" in err
    assert fake_bench == [] and open("afile").read() == "not a folder\n"


def test_an_unusable_signing_key_stops_training_but_not_a_report(fake_bench, capsys, monkeypatch, tmp_path):
    assert _bench(capsys)[0] == 0
    cache = tmp_path / "planted"
    (cache / "recgoat_recbole").mkdir(parents=True)
    key = cache / "recgoat_recbole" / "cache.key"
    key.write_bytes(b"k" * 32)
    key.chmod(0o644)  # readable by others: proves nothing
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache))
    rc, out, err = _bench(capsys, out="fresh")
    assert rc == 2 and "signing key" in err and "\n" not in err.strip() and fake_bench[2:] == [], err
    assert not os.path.exists("fresh/runs")  # before anything ran
    rc, out, err = _bench(capsys, "--report-only")
    assert rc == 0 and fake_bench[2:] == [], err
    assert "2 of 2 runs not signed by this user's runs" in open("bench/results.md").read()
    assert sum("signing key" in line for line in out.splitlines()) == 1  # one warning, not one per record


def test_a_huge_token_in_an_mmrec_inter_file_is_one_short_line(tmp_path, capsys):
    from recgoat_cli import main

    src = tmp_path / "src"
    src.mkdir()
    rows = ["userID\titemID\trating\ttimestamp\tx_label"]
    rows += [f"{u}\t{i}\t4\t{u * 10 + i}\t{min(2, max(0, i - 2))}" for u in range(5) for i in range(5)]
    (src / "src.inter").write_text("\n".join(rows + ["x" * 200_000 + "\t1\t4\t1\t0"]) + "\n")
    code = main(["data", "import", "--format", "mmrec", str(src), str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("recgoat: error:") and "200,000 characters" in err and len(err) < 400
