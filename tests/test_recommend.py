"""`recgoat recommend CHECKPOINT -o topk.tsv`: each user's top k from a safely loaded checkpoint, in MMRec's
layout with the dataset's own tokens, the training interactions excluded -- checked against the trained model's
own full_sort_predict, and against bad input (a checkpoint that runs code, unknown users, a bad output)."""
from __future__ import annotations

import os

import numpy as np
import pandas as pd
import pytest
import torch

from recgoat_cli import main
from tests.conftest import PAYLOAD, Reduce, mini_config, working_dir


@pytest.fixture(scope="module")
def trained(mini_ml, tmp_path_factory):
    """One RecGOAT training (1 epoch, checkpoint kept), and the model in memory with the checkpoint's weights
    (the test evaluation reloads the best checkpoint into it)."""
    from recgoat_recbole.training import run_training

    folder = tmp_path_factory.mktemp("recgoat")
    with working_dir(folder):
        result = run_training(model="RecGOAT", config_dict=mini_config(mini_ml, epochs=1, topk=[5, 10]),
                              log_details=False)
    train, valid, test = (loader._dataset for loader in result.data)
    return {"checkpoint": os.path.join(folder, result.checkpoint), "model": result.model, "train": train,
            "valid": valid, "test": test}


def _expected(trained, k: int, splits=("train",)) -> dict[str, list[str]]:
    """Each user's top k by the in-memory model's full_sort_predict, the padding item and the items of
    ``splits`` masked, mapped to the dataset's tokens: computed here, without the command's code."""
    from recbole.data.interaction import Interaction

    train = trained["train"]
    model = trained["model"].eval()
    users = torch.arange(1, train.user_num)
    with torch.no_grad():
        scores = model.full_sort_predict(Interaction({train.uid_field: users})).view(len(users), -1).clone()
    scores[:, 0] = -np.inf
    for name in splits:
        part = trained[name]
        u, i = part.inter_feat[train.uid_field], part.inter_feat[train.iid_field]
        scores[u - 1, i] = -np.inf
    top = torch.topk(scores, k, dim=1).indices.numpy()
    user_tokens = train.field2id_token[train.uid_field]
    item_tokens = train.field2id_token[train.iid_field]
    return {user_tokens[u]: [item_tokens[i] for i in row] for u, row in zip(users.tolist(), top)}


def _read(path: str) -> pd.DataFrame:
    return pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)


def test_every_users_top_k_is_the_models_full_sort_ranking_without_training_items(trained, capsys):
    assert main(["recommend", trained["checkpoint"], "-k", "10", "-o", "out/topk.tsv", "--device", "cpu"]) == 0
    assert "out/topk.tsv: top 10 of RecGOAT on ml-mini for 150 users" in capsys.readouterr().out
    table = _read("out/topk.tsv")
    assert list(table.columns) == ["id"] + [f"top_{i}" for i in range(10)]  # MMRec's header
    expected = _expected(trained, 10)
    assert table["id"].tolist() == list(expected)  # every user, in the dataset's order, by token
    got = {row[0]: list(row[1:]) for row in table.itertuples(index=False)}
    assert got == expected
    # the tokens are the dataset's own ids, not RecBole's internal ones (which differ on this data)
    train = trained["train"]
    assert any(train.field2id_token[train.uid_field][u] != str(u) for u in range(1, train.user_num))


def test_the_default_k_is_the_checkpoints_largest_topk_and_exclude_all_masks_every_split(trained, capsys):
    assert main(["recommend", trained["checkpoint"], "-o", "topk.tsv", "--exclude", "all"]) == 0
    table = _read("topk.tsv")
    assert len(table.columns) == 1 + 10  # topk: [5, 10]
    got = {row[0]: list(row[1:]) for row in table.itertuples(index=False)}
    assert got == _expected(trained, 10, splits=("train", "valid", "test"))


def test_users_file_picks_and_orders_the_users(trained, capsys):
    tokens = _read_tokens(trained)
    with open("users.txt", "w") as f:
        f.write(f"user_id\n{tokens[2]}\n\n{tokens[0]}\n{tokens[2]}\n")  # a header, a blank line, a repeat
    assert main(["recommend", trained["checkpoint"], "--users", "users.txt", "-k", "3", "-o", "some.tsv"]) == 0
    table = _read("some.tsv")
    assert table["id"].tolist() == [tokens[2], tokens[0]]
    expected = _expected(trained, 3)
    assert [list(r[1:]) for r in table.itertuples(index=False)] == [expected[tokens[2]], expected[tokens[0]]]


def _read_tokens(trained) -> list[str]:
    train = trained["train"]
    return list(train.field2id_token[train.uid_field][1:])


@pytest.mark.parametrize("make, needle", [
    (lambda: open("users.txt", "w").write("no-such-user\n"), "1 users are not in the checkpoint's dataset"),
    (lambda: open("users.txt", "w").write("\n\n"), "no user tokens"),
    (lambda: open("users.txt", "w").write("[PAD]\n"), "1 users are not in the checkpoint's dataset"),
], ids=["unknown_user", "empty", "padding_user"])
def test_bad_users_file_is_one_line(trained, capsys, make, needle):
    make()
    code = main(["recommend", trained["checkpoint"], "--users", "users.txt", "-o", "x.tsv"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("recgoat: error: --users users.txt") and needle in err
    assert len(err.splitlines()) == 1 and not os.path.exists("x.tsv")


def test_a_checkpoint_that_would_run_code_is_refused_in_one_line(capsys):
    torch.save({"config": Reduce(eval, (PAYLOAD,)), "state_dict": {}}, "evil.pth", pickle_protocol=2)
    code = main(["recommend", "evil.pth", "-o", "x.tsv"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "refusing to load checkpoint" in err and "builtins.eval" in err
    assert len(err.splitlines()) == 1 and not os.path.exists("PWNED") and not os.path.exists("x.tsv")


@pytest.mark.parametrize("argv, needle", [
    (["-o", "folder"], "output folder is a folder"),
    (["-o", "afile/x.tsv"], "afile is a file"),
    (["-o", "x.tsv", "--device", "cuda:0"], "CUDA is not available"),
], ids=["output_folder", "parent_is_a_file", "no_cuda"])
def test_bad_options_fail_before_loading(capsys, argv, needle, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    os.mkdir("folder")
    open("afile", "w").close()
    open("model.pth", "wb").close()
    code = main(["recommend", "model.pth", *argv])
    err = capsys.readouterr().err.strip()
    assert code == 2 and needle in err and "\n" not in err


def test_a_file_that_is_no_checkpoint_is_one_line(capsys):
    with open("model.pth", "wb") as f:
        f.write(b"not a checkpoint at all")
    code = main(["recommend", "model.pth", "-o", "x.tsv"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("recgoat: error:") and "model.pth" in err and "\n" not in err


def test_k_below_one_is_refused_by_the_parser(capsys):
    with pytest.raises(SystemExit) as info:  # argparse: usage, then one error line
        main(["recommend", "model.pth", "-o", "x.tsv", "-k", "0"])
    assert info.value.code == 2 and "expected an integer ≥ 1, got 0" in capsys.readouterr().err
