"""The first hour with recgoat (issue #18): imports that work as documented, a dataset folder that can be
moved, RecBole's --key=value overrides, honest tables, a quiet console, and eval batches that fit."""
from __future__ import annotations

import os
import shutil

import numpy as np
import pytest
import yaml

from recgoat_recbole.cli import main
from tests.conftest import mini_config


def _lightgcn_source(folder, n_users: int = 30, n_items: int = 40, seed: int = 3):
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True)
    lines = {s: [] for s in ("train", "valid", "test")}
    for u in range(n_users):
        items = rng.choice(n_items, 8, replace=False)
        lines["train"].append(" ".join(map(str, [u, *items[:6]])))
        lines["valid"].append(f"{u} {items[6]}")
        lines["test"].append(f"{u} {items[7]}")
    for split, rows in lines.items():
        (folder / f"{split}.txt").write_text("\n".join(rows) + "\n")
    np.save(folder / "img.npy", rng.normal(size=(n_items, 5)).astype(np.float32))
    return folder


def test_feature_paths_are_looked_up_in_the_source_folder(tmp_path, capsys):
    """docs/data.md: `recgoat data import --format lightgcn SRC DST --feature image=img.npy` with img.npy in SRC
    (it used to be looked up in the working directory only: 'feature file not found: img.npy')."""
    src = _lightgcn_source(tmp_path / "gowalla")
    assert main(["data", "import", "--format", "lightgcn", str(src), "out", "--feature", "image=img.npy"]) == 0
    assert os.path.isfile("out/gowalla/image.npz")
    # a file only in the working directory still works; a file in neither place is one clear line
    shutil.copy(src / "img.npy", "here.npy")
    assert main(["data", "import", "--format", "lightgcn", str(src), "out2", "--feature", "image=here.npy"]) == 0
    capsys.readouterr()
    assert main(["data", "import", "--format", "lightgcn", str(src), "out3", "--feature", "image=none.npy"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("recgoat: error: feature file not found: none.npy") and "\n" not in err


def test_imported_folder_can_be_moved_and_still_runs(tmp_path, capsys):
    """The generated YAML used to hard-code an absolute data_path: after moving the folder, runs failed."""
    src = _lightgcn_source(tmp_path / "src")
    assert main(["data", "import", "--format", "lightgcn", str(src), str(tmp_path / "old"), "--name", "lg",
                 "--feature", "image=img.npy"]) == 0
    config = yaml.safe_load((tmp_path / "old" / "lg" / "lg.yaml").read_text())
    assert not any(str(tmp_path) in str(v) for v in config.values())  # no absolute path in it
    shutil.move(str(tmp_path / "old"), str(tmp_path / "elsewhere" / "moved"))
    os.chdir(tmp_path / "elsewhere")  # and from another working directory
    capsys.readouterr()
    assert main(["run", "--config", "moved/lg/lg.yaml", "--model", "LightGCN", "--no-save", "--epochs=1"]) == 0
    assert "test: recall@10" in capsys.readouterr().out


def test_recbole_style_overrides_next_to_set(mini_ml, capsys):
    """`recgoat run --epochs=1 --learning_rate=0.01`, as with run_recbole; a bad value is one line."""
    with open("mini.yaml", "w") as f:
        yaml.safe_dump(mini_config(mini_ml, epochs=3), f)
    assert main(["run", "--config", "mini.yaml", "--model", "LightGCN", "--no-save", "--epochs=1",
                 "--learning_rate=0.01", "--set", "train_batch_size=512"]) == 0
    captured = capsys.readouterr()
    assert "epoch 1/1" in captured.err and "epoch 2/" not in captured.err  # --epochs=1 reached the config
    assert main(["run", "--config", "mini.yaml", "--no-save", "--gat_heads=0"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "recgoat: error: config key 'gat_heads' must be an integer ≥ 1, got 0"
    with pytest.raises(SystemExit):  # not KEY=VALUE: argparse's usage error, as before
        main(["run", "--config", "mini.yaml", "--bogus"])


def _record(label: str, seed: int, ndcg: float) -> dict:
    return {"dataset": "d", "label": label, "seed": seed, "epochs": 3, "epoch_s": 1.0, "total_s": 5.0,
            "peak_mib": 10.0, "device": "cpu",
            "test": {"recall@10": ndcg + 0.1, "ndcg@10": ndcg, "recall@20": ndcg + 0.2, "ndcg@20": ndcg + 0.05}}


def test_tables_and_plots_say_what_the_numbers_are(tmp_path):
    """One seed prints the value alone (it used to print '± 0.0000'); the split, the seeds and the meaning of ±
    are stated in the table and on the plot; Recall sits next to NDCG."""
    from recgoat_recbole.bench.names import METRICS
    from recgoat_recbole.bench.report import markdown_table, summarise, write_outputs

    one = markdown_table(summarise([_record("A", 1, 0.2)], METRICS), METRICS)
    assert "±" not in one.split("\n", 1)[1] and "0.2000" in one
    assert "Test split" in one and "validation" in one and "1 seed" in one
    assert "shared machine" in one and "bench_speed.py" in one  # the time columns are not a clean measurement
    header = next(line for line in one.splitlines() if line.startswith("| dataset"))
    assert header.index("recall@10") < header.index("ndcg@10") < header.index("recall@20")
    three = markdown_table(summarise([_record("A", s, 0.2 + 0.01 * s) for s in (1, 2, 3)], METRICS), METRICS)
    assert "mean ± std over 3 seeds" in three and "0.2200 ± 0.0100" in three
    paths = write_outputs([_record("A", 1, 0.2), _record("B", 1, 0.3)], str(tmp_path), METRICS, "title")
    assert os.path.getsize(paths["png"]) > 0 and "1 seed" in open(paths["markdown"]).read()


def test_bench_is_quiet_shows_epochs_and_ends_with_one_block(mini_ml, capfd):
    """No pandas / torch FutureWarnings by default, `epoch k/N` with an ETA, and a final block that says where
    the table, logs, CSV, Markdown and PNG are; --verbose shows RecBole's log."""
    with open("mini.yaml", "w") as f:
        yaml.safe_dump(mini_config(mini_ml, epochs=2), f)
    argv = ["bench", "--datasets", "ml-mini", "--config", "ml-mini=mini.yaml", "--models", "LightGCN",
            "--seeds", "1", "--epochs", "2", "--out", "bench"]
    assert main(argv) == 0
    out, err = capfd.readouterr()
    assert "FutureWarning" not in err and "epoch 1 training" not in err
    assert "epoch 2/2" in out and "ETA run" in out and "all ≤" in out
    block = out[out.rindex("=" * 100, 0, len(out) - 101):]
    assert "Test split" in block and "| ml-mini | LightGCN |" in block
    for word in ("logs:", "checkpoints:", "csv:", "markdown:", "png:"):
        assert word in block
    assert main(argv[:-1] + ["bench-v", "--verbose"]) == 0
    assert "epoch 1 training" in capfd.readouterr().err


def test_eval_batch_fits_the_item_count(tmp_path, caplog):
    """TikTok evaluated one user per batch (eval_batch_size 4096 < 6,711 items): the shipped configs and the
    generated YAMLs fit 64 users, and a setting that forces one user per batch logs one warning line."""
    from types import SimpleNamespace

    from recgoat_recbole.importers import import_lightgcn
    from recgoat_recbole.training import _warn_one_user_per_batch

    root = os.path.join(os.path.dirname(__file__), "..", "recbole_configs")
    for name, items in (("tiktok", 6_711), ("baby", 7_051), ("sports", 18_358), ("electronics", 63_002)):
        with open(os.path.join(root, f"{name}.yaml")) as f:
            assert yaml.safe_load(f)["eval_batch_size"] >= 64 * items, name
    src = _lightgcn_source(tmp_path / "src", n_items=5000)  # img.npy has a row for each of the 5,000 items
    report = import_lightgcn(str(src), str(tmp_path / "out"), "big", {"image": "img.npy"})
    assert yaml.safe_load(open(report.config))["eval_batch_size"] >= 64 * 5000
    config = {"eval_args": {"mode": "full"}, "eval_batch_size": 4096}
    import logging

    with caplog.at_level(logging.WARNING):
        _warn_one_user_per_batch(config, SimpleNamespace(item_num=6711), logging.getLogger("t"))
        _warn_one_user_per_batch(config, SimpleNamespace(item_num=1683), logging.getLogger("t"))
    assert [r.getMessage().split(":")[0] for r in caplog.records] == ["eval_batch_size 4096 < 2 x 6,711 items"]


def test_profiles_file_has_the_documented_mask(tmp_path):
    """docs/features.md: every extractor writes ids, features and mask; the profiles file had no mask."""
    from recgoat_recbole.features.profiles import _embed_profiles

    path = _embed_profiles({"1": "likes drama", "2": ""}, str(tmp_path / "p.npz"), None, show_progress=False)
    with np.load(path) as data:
        assert data["mask"].tolist() == [True, False] and list(data["ids"]) == ["1", "2"]


def test_allow_download_message_does_not_ask_for_the_flag_already_given(monkeypatch):
    import sentence_transformers

    from recgoat_recbole.features.text import load_text_encoder

    def fail(*args, **kwargs):
        raise OSError("no such repo")

    monkeypatch.setattr(sentence_transformers, "SentenceTransformer", fail)
    with pytest.raises(FileNotFoundError) as given:
        load_text_encoder("someone/model", allow_download=True)
    assert "--allow-download" not in str(given.value) and "no such repo" in str(given.value)
    with pytest.raises(FileNotFoundError) as not_given:
        load_text_encoder("someone/model")
    assert "--allow-download" in str(not_given.value)


def test_run_recbole_reads_a_generated_yaml_from_any_directory(tmp_path, monkeypatch):
    """The generated YAML's relative data_path is read against the YAML by RecBole's own Config (not only by
    `recgoat`): run_recbole users need no data_path override after moving the folder."""
    import os

    from recbole.config import Config

    from recgoat_recbole.yaml_paths import ORIGINALS, resolve_data_path

    folder = tmp_path / "moved" / "toy"
    folder.mkdir(parents=True)
    (folder / "toy.yaml").write_text("dataset: toy\ndata_path: ..\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    config = Config(model="LightGCN", config_file_list=[str(folder / "toy.yaml")])
    assert os.path.samefile(config["data_path"], tmp_path / "moved" / "toy")  # RecBole appends the dataset name
    # RecBole alone reads it against the working directory
    raw = ORIGINALS["_load_config_files"](config, [str(folder / "toy.yaml")])
    assert raw["data_path"] == ".."
    # a data_path whose dataset folder is not next to the YAML is left for the working directory
    assert resolve_data_path({"dataset": "other", "data_path": "data"}, str(folder / "toy.yaml"))["data_path"] == "data"
    # config_dict still wins
    config = Config(model="LightGCN", config_file_list=[str(folder / "toy.yaml")],
                    config_dict={"data_path": str(elsewhere)})
    assert os.path.normpath(config["data_path"]) == os.path.normpath(str(elsewhere / "toy"))


def test_imported_multimodal_yaml_carries_the_validated_defaults(tmp_path):
    """#17: an imported dataset with item features gets RecGOAT's validated defaults (no GAT views, γ 0, the
    alignment gate) and patience 50 for every model; one without features gets no RecGOAT keys."""
    src = _lightgcn_source(tmp_path / "src")
    assert main(["data", "import", "--format", "lightgcn", str(src), "out", "--name", "mm",
                 "--feature", "image=img.npy"]) == 0
    config = yaml.safe_load(open("out/mm/mm.yaml"))
    assert config["use_gat"] is False and config["fusion_gamma"] == 0.0 and config["align_gate"] is True
    assert config["stopping_step"] == 50
    assert main(["data", "import", "--format", "lightgcn", str(src), "out", "--name", "plain"]) == 0
    plain = yaml.safe_load(open("out/plain/plain.yaml"))
    assert "use_gat" not in plain and "align_gate" not in plain and plain["stopping_step"] == 50


def test_bench_keeps_the_dataset_yaml_patience_unless_given():
    """`recgoat bench` used to force stopping_step 10 on every run, overriding the imported YAML's 50."""
    import argparse

    from recgoat_recbole.cli import _bench_common

    args = argparse.Namespace(epochs=30, stopping_step=None, learning_rate=None, device=None, set=None)
    assert "stopping_step" not in _bench_common(args)
    args.stopping_step = 7
    assert _bench_common(args)["stopping_step"] == 7
