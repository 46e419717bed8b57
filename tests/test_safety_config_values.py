"""Config values are data, never code: on every path into RecBole's ``Config`` (``config_dict``, the command
line, ``--set``, ``--key=value``, ``--tuned best.yaml``, ``--grid``, YAML files) a value that is Python code is
one error and nothing in it runs; YAML files are plain data with bounded aliases. And the options keep what the
user said (repeated ``--config`` / ``--set``, distinct seeds, RecBole's own keys in range)."""
from __future__ import annotations

import os
import sys
import time

import pytest
import yaml

from recgoat_recbole.config_check import ConfigError
from tests.conftest import mini_config

#: the payload of the issue: it writes a marker file when evaluated
_PAYLOAD = "__import__('pathlib').Path('PWN').touch() or 1e-4"


def _cli(capsys, argv) -> tuple[int, str]:
    from recgoat_cli import main

    code = main(argv)
    return code, capsys.readouterr().err


def _one_line(err: str) -> bool:
    return err.strip().startswith("recgoat: error:") and len(err.strip().splitlines()) == 1


# ------------------------------------------------------------------------------------- the conversion rule
LITERALS = ["1e-4", "0.001", "-3", "[10, 20]", "{'a': 1}", "True", "False", "None", "'RS'", "(1, 2)", "[]",
            "1_000", "[0.8, 0.1, 0.1]"]


@pytest.mark.parametrize("text", LITERALS)
def test_literals_convert_exactly_as_recboles_eval_did(text):
    from recgoat_recbole.patches.safe_config_values import convert_value

    assert convert_value("k", text) == eval(text)  # noqa: S307 -- literals only: the reference


@pytest.mark.parametrize("text", ["ml-100k", "amazon-books", "yelp-2018", "RecGOAT", "uni100", "full",
                                  "saved/", "/tmp/x.pth", "a b c", "inf", "NDCG@10", "profiles.npz",
                                  "text_feat.npy", "auto:title,genre", "os.system", "a if b else c"])
def test_plain_text_stays_text(text):
    from recgoat_recbole.patches.safe_config_values import convert_value

    assert convert_value("k", text) == text


def test_true_false_in_any_case_are_booleans_as_before():
    from recgoat_recbole.patches.safe_config_values import convert_value

    assert convert_value("k", "true") is True and convert_value("k", "FALSE") is False


@pytest.mark.parametrize("text", [_PAYLOAD, "float('inf')", "os.system('id')", "().__class__", "lambda: 1",
                                  "[x for x in ()]", "2**10**10", "1/1000", "f'{x}'", "[open][0]('x')",
                                  "'a' * 10**9"])
def test_code_is_one_error_naming_the_key_and_nothing_runs(text, tmp_path):
    from recgoat_recbole.patches.safe_config_values import convert_value

    with pytest.raises(ConfigError, match="'reg_weight'.*not a value"):
        convert_value("reg_weight", text)
    assert not os.path.exists("PWN")


# ------------------------------------------------------------------------------------ every path into Config
def test_config_dict_and_command_line_values_are_never_evaluated(monkeypatch):
    """RecBole's ``Config`` evaluated both (``run_recbole(config_dict=...)`` and ``--key=value`` in sys.argv)."""
    from recbole.config import Config

    with pytest.raises(ConfigError, match="reg_weight"):
        Config(model="BPR", dataset="ml-100k", config_dict={"reg_weight": _PAYLOAD})
    monkeypatch.setattr(sys, "argv", ["run.py", f"--embedding_size={_PAYLOAD}"])
    with pytest.raises(ConfigError, match="embedding_size"):
        Config(model="BPR", dataset="ml-100k")
    assert not os.path.exists("PWN")
    monkeypatch.setattr(sys, "argv", ["run.py", "--learning_rate=2e-3", "--topk=[5,10]", "--shuffle=false"])
    config = Config(model="BPR", dataset="ml-100k")
    assert config["learning_rate"] == 2e-3 and config["topk"] == [5, 10] and config["shuffle"] is False


def test_every_recbole_models_config_is_what_recbole_builds():
    """The safe loader and the conversion change no value of RecBole's own configs (all its model YAMLs)."""
    import glob

    import recbole
    from recbole.config import Config

    from recgoat_recbole.patches import ORIGINALS

    names = sorted(os.path.basename(p)[:-5] for p in glob.glob(os.path.join(os.path.dirname(recbole.__file__),
                                                                            "properties", "model", "*.yaml")))
    assert len(names) > 80

    def build(name: str) -> object:
        try:
            return dict(Config(model=name, dataset="ml-100k",
                               config_dict={"reg_weight": "1e-4", "x": "ml-100k"}).final_config_dict)
        except ValueError as exc:  # RecBole's own refusal (CE loss with negative sampling): the same one
            return repr(exc)

    ours = {name: build(name) for name in names}
    patched = {k: getattr(Config, k) for k in ORIGINALS["safe_config_values"]}
    try:
        for k, fn in ORIGINALS["safe_config_values"].items():
            setattr(Config, k, fn)
        for name in names:
            assert ours[name] == build(name), name
    finally:
        for k, fn in patched.items():
            setattr(Config, k, fn)


def test_recgoat_run_set_and_recbole_form_refuse_code(mini_ml, capsys):
    with open("mini.yaml", "w", encoding="utf-8") as f:
        yaml.safe_dump(mini_config(mini_ml, epochs=1), f)
    for argv in (["run", "--config", "mini.yaml", "--no-save", "--set", f"embedding_size={_PAYLOAD}"],
                 ["run", "--config", "mini.yaml", "--no-save", f"--embedding_size={_PAYLOAD}"]):
        code, err = _cli(capsys, argv)
        assert code == 2 and _one_line(err) and "embedding_size" in err, err
    assert not os.path.exists("PWN")


def test_bench_tuned_file_with_code_is_refused_before_any_run(mini_ml, capsys):
    with open("mini.yaml", "w", encoding="utf-8") as f:
        yaml.safe_dump(mini_config(mini_ml, epochs=1), f)
    with open("best.yaml", "w", encoding="utf-8") as f:
        yaml.safe_dump({"ml-mini": {"BPR": {"reg_weight": _PAYLOAD}}}, f)
    code, err = _cli(capsys, ["bench", "--datasets", "ml-mini", "--config", "ml-mini=mini.yaml", "--models", "BPR",
                              "--tuned", "best.yaml", "--epochs", "1", "--out", "out"])
    assert code == 2 and _one_line(err) and "best.yaml" in err and "reg_weight" in err, err
    assert not os.path.exists("PWN") and not os.path.isdir(os.path.join("out", "runs"))


def test_tune_grid_with_code_is_refused_before_any_run(mini_ml, capsys):
    with open("mini.yaml", "w", encoding="utf-8") as f:
        yaml.safe_dump(mini_config(mini_ml, epochs=1), f)
    with open("grid.yaml", "w", encoding="utf-8") as f:
        yaml.safe_dump({"BPR": {"reg_weight": [0.0, _PAYLOAD]}}, f)
    code, err = _cli(capsys, ["tune", "--datasets", "ml-mini", "--config", "ml-mini=mini.yaml", "--models", "BPR",
                              "--grid", "grid.yaml", "--epochs", "1", "--out", "out"])
    assert code == 2 and _one_line(err) and "grid.yaml" in err and "reg_weight[1]" in err, err
    assert not os.path.exists("PWN") and not os.path.exists(os.path.join("out", "best.yaml"))


# ---------------------------------------------------------------------------------------------- YAML files
@pytest.mark.parametrize("tag", ["!!python/object/apply:os.system ['touch PWN']", "!!python/name:os.system",
                                 "!!python/object:collections.OrderedDict {}"])
def test_yaml_files_are_plain_data(tmp_path, tag):
    from recbole.config import Config

    path = tmp_path / "evil.yaml"
    path.write_text(f"reg_weight: {tag}\n")
    with pytest.raises(yaml.YAMLError):
        Config(model="BPR", dataset="ml-100k", config_file_list=[str(path)])
    assert not os.path.exists("PWN")


def _laughs(path, levels: int = 9) -> str:
    lines = ['a0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for i in range(1, levels):
        lines.append(f"a{i}: &a{i} [" + ",".join([f"*a{i - 1}"] * 9) + "]")
    lines.append("epochs: 1")
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def test_a_yaml_alias_bomb_is_one_error_at_once(tmp_path, capsys):
    """9 levels of 9 aliases: 387 million strings once expanded (RecBole's logger printed them all)."""
    from recbole.config import Config

    path = _laughs(tmp_path / "laughs.yaml")
    start = time.perf_counter()
    with pytest.raises(ConfigError, match="expands to more than"):
        Config(model="BPR", dataset="ml-100k", config_file_list=[path])
    code, err = _cli(capsys, ["run", "--config", path, "--model", "BPR"])
    assert code == 2 and _one_line(err) and "laughs.yaml" in err, err
    assert time.perf_counter() - start < 10


def test_ordinary_yaml_aliases_still_work(tmp_path):
    from recbole.config import Config

    path = tmp_path / "ok.yaml"
    path.write_text("base: &m [Recall, NDCG]\nmetrics: *m\nlearning_rate: 1e-3\n")
    config = Config(model="BPR", dataset="ml-100k", config_file_list=[str(path)])
    assert config["metrics"] == ["Recall", "NDCG"] and config["learning_rate"] == 1e-3


# ------------------------------------------------------------------------------- options keep what was said
def test_repeated_config_and_set_options_are_all_kept():
    from recgoat_cli.parser import _parse, build_parser

    args = _parse(build_parser(), ["run", "--config", "a.yaml", "--config", "b.yaml", "--set", "x=1", "--set",
                                   "y=2", "--epochs=3"])
    assert args.config == ["a.yaml", "b.yaml"] and args.set == ["x=1", "y=2", "epochs=3"]
    from recgoat_cli.commands import _overrides

    assert _overrides(["epochs=50", "x=1", "epochs=1"]) == {"epochs": 1, "x": 1}  # the last one wins
    args = _parse(build_parser(), ["bench", "--datasets", "a", "--datasets", "b", "--seeds", "1", "--seeds", "2"])
    assert args.datasets == ["a", "b"] and args.seeds == [1, 2]
    args = _parse(build_parser(), ["bench"])
    assert args.datasets == ["ml-100k"] and args.seeds == [2020]


@pytest.mark.parametrize("argv", [["bench", "--seeds", "2020", "2020"], ["tune", "--datasets", "a", "a"],
                                  ["bench", "--models", "BPR", "--models", "BPR"],
                                  ["features", "profiles", "-o", "p.npz", "--max-items", "0"]])
def test_contradictory_or_repeated_options_are_refused(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        _cli(capsys, argv)
    assert exc.value.code == 2


@pytest.mark.parametrize(("key", "value"), [("train_batch_size", 0), ("epochs", -1), ("epochs", 0),
                                            ("epochs", "1e1"), ("topk", "[0]"), ("topk", "[]"), ("seed", "abc"),
                                            ("eval_batch_size", -5), ("learning_rate", 0)])
def test_recboles_own_keys_out_of_range_are_one_line_before_training(mini_ml, capsys, key, value):
    with open("mini.yaml", "w", encoding="utf-8") as f:
        yaml.safe_dump(mini_config(mini_ml, epochs=1), f)
    code, err = _cli(capsys, ["run", "--config", "mini.yaml", "--model", "BPR", "--no-save", f"--{key}={value}"])
    assert code == 2 and _one_line(err) and key in err, err
    assert not os.path.isdir("saved")


def test_a_dataset_name_typo_or_path_is_one_line(mini_ml, capsys):
    with open("mini.yaml", "w", encoding="utf-8") as f:
        yaml.safe_dump(mini_config(mini_ml, epochs=1), f)
    code, err = _cli(capsys, ["run", "--config", "mini.yaml", "--model", "BPR", "--dataset", "ml-minii"])
    assert code == 2 and _one_line(err) and "did you mean 'ml-mini'" in err, err
    code, err = _cli(capsys, ["run", "--config", "mini.yaml", "--model", "BPR", "--dataset", "../ml-mini"])
    assert code == 2 and _one_line(err) and "plain folder name" in err, err
    assert not os.path.isdir("log") or not any(".." in n for _, _, files in os.walk("log") for n in files)


def test_a_huge_token_in_an_atomic_file_is_one_line(tmp_path, capsys):
    folder = tmp_path / "big"
    folder.mkdir()
    rows = "".join(f"{u}\t{i}\t4\t{u * 10 + i}\n" for u in range(1, 6) for i in range(1, 6))
    (folder / "big.inter").write_text("user_id:token\titem_id:token\trating:float\ttimestamp:float\n" + rows
                                      + "x" * 200_000 + "\t1\t4\t1\n")
    code, err = _cli(capsys, ["run", "--model", "BPR", "--dataset", "big", "--no-save",
                              f"--data_path={tmp_path}", "--epochs=1"])
    assert code == 2 and _one_line(err) and "field" in err, err


def test_tuned_entries_for_models_not_run_are_named(mini_ml, capsys, monkeypatch):
    from recgoat_cli import commands as cli

    with open("best.yaml", "w", encoding="utf-8") as f:
        yaml.safe_dump({"ml-mini": {"BPR": {"reg_weight": 0.0}, "LightGCN": {"reg_weight": 0.0}}}, f)
    with open("mini.yaml", "w", encoding="utf-8") as f:
        yaml.safe_dump(mini_config(mini_ml, epochs=1), f)
    monkeypatch.setattr(cli, "_run_suite", lambda *a, **k: {})  # the tables are not the point here
    code, err = _cli(capsys, ["bench", "--datasets", "ml-mini", "--config", "ml-mini=mini.yaml", "--models", "BPR",
                              "--tuned", "best.yaml"])
    assert code == 0 and "LightGCN on ml-mini are not used" in err, err


def test_every_recbole_models_defaults_pass_the_run_checks():
    """The run checks refuse bad values only: no RecBole model's own defaults (Pop has no embedding_size)."""
    import glob

    import recbole
    from recbole.config import Config

    from recgoat_recbole.config_check import RUN_RULES, validate

    checked = 0
    for path in sorted(glob.glob(os.path.join(os.path.dirname(recbole.__file__), "properties", "model", "*.yaml"))):
        try:
            config = Config(model=os.path.basename(path)[:-5], dataset="ml-100k")
        except ValueError:  # RecBole's own refusal on ml-100k's defaults (sequential CE models)
            continue
        validate(config, RUN_RULES)
        checked += 1
    assert checked > 60
