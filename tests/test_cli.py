"""recgoat_cli: the subcommands, one-line user errors, `recgoat run` on a builtin and on RecGOAT, RecBole's
--key=value overrides next to --set, and the options `recgoat bench` passes on."""
from __future__ import annotations

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
    (["data", "import", "--format", "mmrec", "nowhere", "out"], "source folder not found"),
    (["features", "text", "nope.item", "--columns", "a", "-o", "x.npz"], "table not found"),
])
def test_user_errors_are_one_line(capsys, argv, message):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("recgoat: error: ") and message in err and "\n" not in err


def test_run_trains_a_builtin_and_recgoat(mini_ml, capsys):
    cfg = mini_config(mini_ml, epochs=1)
    with open("mini.yaml", "w") as f:
        yaml.safe_dump(cfg, f)
    assert main(["run", "--config", "mini.yaml", "--no-save"]) == 0
    assert main(["run", "--config", "mini.yaml", "--model", "LightGCN", "--no-save", "--set", "epochs=1"]) == 0
    out = capsys.readouterr().out
    assert out.count("test: recall@10") == 2


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
