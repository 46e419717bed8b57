"""recgoat_cli: the subcommands, one-line user errors, `recgoat run` on a builtin and on RecGOAT, RecBole's
--key=value overrides next to --set, and the options `recgoat bench` passes on."""
from __future__ import annotations

import re

import numpy as np
import pytest
import yaml

from recgoat_cli import main
from recgoat_recbole.importers import import_lightgcn
from tests.conftest import mini_config


def test_help_lists_every_subcommand(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    for command in ("run", "features", "data", "bench", "demo"):
        assert f"    {command}" in out


@pytest.mark.parametrize("argv, message", [
    (["run", "--config", "missing.yaml"], "config file not found: missing.yaml"),
    (["run", "--model", "NoSuchModel"], "unknown model 'NoSuchModel'"),
    # a near miss is named, and RecBole's unrelated lightgbm import error is not
    (["run", "--model", "LightGCM"], "unknown model 'LightGCM'; did you mean 'LightGCN'"),
    (["run", "--model", "recgoat"], "unknown model 'recgoat'; did you mean 'RecGOAT'?"),
    (["data", "import", "--format", "mmrec", "nowhere", "out"], "source folder not found"),
    (["bench", "--datasets", "tiny", "--models", "BPR"], "no config for dataset 'tiny': pass --config tiny=FILE"),
    (["features", "text", "nope.item", "--columns", "a", "-o", "x.npz"], "table not found"),
])
def test_user_errors_are_one_line(capsys, argv, message):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("recgoat: error: ") and message in err and "\n" not in err


@pytest.mark.parametrize("argv, resume", [
    (["tune", "--datasets", "ml-100k", "--models", "BPR", "--out", "grid"], "the finished runs are in grid/runs"),
    (["bench", "--datasets", "ml-100k", "--models", "BPR", "--out", "table"], "the finished runs are in table/runs"),
    (["run", "--model", "BPR"], None),
])
def test_ctrl_c_is_one_line_that_says_how_to_resume(monkeypatch, capsys, argv, resume):
    """Ctrl-C (with --jobs 2 it reaches the thread that waits on the runs) ends with one line, exit status 130,
    not a traceback; for bench and tune the line says where the finished runs are and that a rerun resumes."""
    from recgoat_cli import commands

    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(commands, {"tune": "cmd_tune", "bench": "cmd_bench", "run": "cmd_run"}[argv[0]], interrupted)
    assert main(argv) == 130
    err = capsys.readouterr().err.strip()
    assert err.startswith("recgoat: interrupted") and "\n" not in err
    assert (resume in err and "the same command trains only what is missing" in err) if resume else err == "recgoat: interrupted"


def test_run_trains_a_builtin_and_recgoat(mini_ml, capsys):
    cfg = mini_config(mini_ml, epochs=1)
    with open("mini.yaml", "w") as f:
        yaml.safe_dump(cfg, f)
    assert main(["run", "--config", "mini.yaml", "--no-save"]) == 0
    assert main(["run", "--config", "mini.yaml", "--model", "LightGCN", "--no-save", "--set", "epochs=1"]) == 0
    out = capsys.readouterr().out
    assert out.count("test: recall@10") == 2


def test_run_fits_ncls_cluster_count_to_a_small_dataset(mini_ml, capsys):
    """`recgoat run --model NCL` on a dataset with fewer users than NCL's 1000 default clusters ended in faiss's
    traceback; it trains with the count `recgoat bench` gives it (a tenth of the smaller side)."""
    cfg = mini_config(mini_ml, epochs=1)
    cfg.pop("num_clusters", None)
    with open("mini.yaml", "w") as f:
        yaml.safe_dump(cfg, f)
    assert main(["run", "--config", "mini.yaml", "--model", "NCL", "--no-save"]) == 0
    assert "test: recall@10" in capsys.readouterr().out


def test_recgoat_run_without_a_validation_split_prints_instead_of_crashing(tmp_path, capsys):
    """The LightGCN layout makes valid.txt optional: `recgoat run` trains, tests and says there was no
    validation (it used to exit 1 with AttributeError: 'NoneType' object has no attribute 'items')."""
    from recgoat_cli import main

    src = tmp_path / "lg"
    src.mkdir()
    rng = np.random.default_rng(2)
    train, test = [], []
    for u in range(30):
        items = rng.choice(40, 7, replace=False)
        train.append(" ".join(map(str, [u, *items[:6]])))
        test.append(f"{u} {items[6]}")
    (src / "train.txt").write_text("\n".join(train) + "\n")
    (src / "test.txt").write_text("\n".join(test) + "\n")
    report = import_lightgcn(str(src), str(tmp_path / "out"), "lg")
    assert report.interactions["valid"] == 0
    code = main(["run", "--config", report.config, "--model", "LightGCN", "--no-save", "--set", "epochs=1",
                 "show_progress=false"])
    out = capsys.readouterr().out
    assert code == 0 and "best valid: none (no validation split" in out and "test: recall@10" in out


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


def test_bench_keeps_the_dataset_yaml_patience_unless_given():
    """`recgoat bench` used to force stopping_step 10 on every run, overriding the imported YAML's 50."""
    import argparse

    from recgoat_cli.commands import _bench_common

    args = argparse.Namespace(epochs=30, stopping_step=None, learning_rate=None, device=None, set=None)
    assert "stopping_step" not in _bench_common(args)
    args.stopping_step = 7
    assert _bench_common(args)["stopping_step"] == 7


def test_the_epoch_line_carries_loss_and_valid_score_and_the_run_says_how_it_ended(mini_ml, capsys):
    """Issue 31: the quiet epoch line dropped the loss and the validation score, and an early stop was silent."""
    with open("mini.yaml", "w") as f:
        yaml.safe_dump(mini_config(mini_ml, epochs=40), f)
    # a learning rate this large makes the validation score jump about: patience 1 ends the run early
    assert main(["run", "--config", "mini.yaml", "--model", "BPR", "--no-save", "--learning_rate=5",
                 "--stopping_step=1"]) == 0
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("epoch ")]
    assert re.match(r"epoch 1/40  loss \d+\.\d{4}  valid NDCG@10 \d\.\d{4} \(best\)  [\d.]+ s/epoch  ETA", lines[0])
    assert any(re.search(r"valid NDCG@10 \d\.\d{4} \(best \d\.\d{4} at \d+\)", line) for line in lines)
    stop = re.search(r"stopped early at epoch (\d+) of 40 \(valid NDCG@10 did not improve for stopping_step 1 "
                     r"validations\); best epoch (\d+), valid NDCG@10 \d\.\d{4}", err)
    assert stop and int(stop.group(1)) == len(lines) < 40 and int(stop.group(2)) < len(lines)


def test_progress_lines_without_validation_and_with_several_loss_terms():
    from recgoat_recbole.training import _ProgressLines

    out: list[str] = []
    config = {"valid_metric": "NDCG@10", "eval_step": 2, "valid_metric_bigger": True}
    lines = _ProgressLines(out.append, config, 3, None)
    lines.on_epoch(0, 0.1, (1.5, 0.25, 0.0125))  # no validation after epoch 1 (eval_step 2): written at once
    assert out[-1].startswith("epoch 1/3  loss 1.7625 (1.5 + 0.25 + 0.0125)  ") and "valid" not in out[-1]
    lines.on_epoch(1, 0.1, 1.0)
    assert len(out) == 1  # waits for its validation
    lines.on_valid(2, 0.3)
    assert "epoch 2/3  loss 1.0000  valid NDCG@10 0.3000 (best)" in out[-1]
    lines.on_epoch(2, 0.1, 0.5)
    lines.finish(3, 10)
    assert out[-2].startswith("epoch 3/3  loss 0.5000  ") and out[-1] == (
        "trained all 3 epochs; best epoch 2, valid NDCG@10 0.3000")


def test_a_typo_in_a_config_key_warns_with_the_key_it_meant(mini_ml, capsys, caplog):
    """Issue 31: `embeding_size: 32`, `--learning_rat`, `--epoch=1` ran silently with the defaults."""
    cfg = {**mini_config(mini_ml, epochs=1), "embeding_size": 32}
    with open("mini.yaml", "w") as f:
        yaml.safe_dump(cfg, f)
    assert main(["run", "--config", "mini.yaml", "--model", "BPR", "--no-save", "--learning_rat=0.1",
                 "--epoch=2", "--knn_kk=3"]) == 0
    err = caplog.text  # (RecBole's console handler, on the console: shown with --verbose or not)
    assert "lightgbm" not in err
    for typo, meant in (("embeding_size", "embedding_size"), ("learning_rat", "learning_rate"), ("epoch", "epochs"),
                        ("knn_kk", "knn_k")):
        assert f"config key '{typo}' is unknown: no run reads it, so it changes nothing; did you mean '{meant}'?" \
            in err
    # the keys RecBole and this package read, from a YAML shared by several models, are not flagged
    assert "'eval_args' is unknown" not in err and "'item_modalities'" not in err and err.count("is unknown") == 4


def test_mmrec_style_value_lists_point_to_tune(mini_ml, capsys):
    with open("mini.yaml", "w") as f:
        yaml.safe_dump({**mini_config(mini_ml, epochs=1), "reg_weight": [0.0, 1.0e-05]}, f)
    assert main(["run", "--config", "mini.yaml", "--model", "LightGCN", "--no-save"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("recgoat: error: config key 'reg_weight' must be one number, got [0.0, 1e-05]") and \
        "`recgoat tune --grid`" in err and "\n" not in err
    with open("mini.yaml", "w") as f:
        yaml.safe_dump(mini_config(mini_ml, epochs=1), f)
    assert main(["run", "--config", "mini.yaml", "--model", "RecGOAT", "--no-save", "--set", "knn_k=[5, 10]"]) == 2
    err = capsys.readouterr().err.strip()
    assert "'knn_k'" in err and "`recgoat tune --grid`" in err and "\n" not in err


def test_progress_lines_are_not_lost_when_no_validation_comes():
    """RecBole skips validation without validation data (or with eval_step above the epochs): every epoch line
    is still written, each once."""
    from recgoat_recbole.training import _ProgressLines

    out: list[str] = []
    lines = _ProgressLines(out.append, {"valid_metric": "NDCG@10", "eval_step": 1, "valid_metric_bigger": True}, 3,
                           None)
    for epoch in range(3):
        lines.on_epoch(epoch, 0.1, 1.0)
    lines.finish(3, 10)
    assert [line.split("  ")[0] for line in out] == ["epoch 1/3", "epoch 2/3", "epoch 3/3", "trained all 3 epochs"]


def test_keys_read_outside_recboles_yamls_are_not_unknown():
    from types import SimpleNamespace

    from recgoat_recbole.keys import unknown_keys

    config = SimpleNamespace(file_config_dict={"encoding": "utf-8", "dist_backend": "gloo", "learning_rat": 1},
                             variable_config_dict={}, cmd_config_dict={}, internal_config_dict={})
    assert unknown_keys(config) == [("learning_rat", "learning_rate")]
