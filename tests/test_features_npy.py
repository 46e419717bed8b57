"""`recgoat features text -o X.npy` writes MMRec's layout -- a plain float32 [n_items, d] array whose row i is
item id i -- and everything that would keep it from doing so is refused before anything is encoded."""
from __future__ import annotations

import os

import numpy as np
import pytest

from recgoat_cli import main
from recgoat_core.feature_files import read_features, write_features


class _Encoder:
    """A deterministic stand-in for a SentenceTransformer (no model is loaded)."""

    def get_sentence_embedding_dimension(self) -> int:
        return 3

    def encode(self, texts, **kwargs) -> np.ndarray:
        out = np.array([[len(t), t.count("o") + 1.0, 1.0] for t in texts], dtype=np.float32)
        return out / np.linalg.norm(out, axis=1, keepdims=True)


@pytest.fixture
def encoder(monkeypatch):
    monkeypatch.setattr("recgoat_recbole.features.text.load_text_encoder", lambda *a, **k: _Encoder())


@pytest.fixture
def no_encoding(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("encoded although the command was going to fail")

    monkeypatch.setattr("recgoat_recbole.features.text.load_text_encoder", refuse)
    monkeypatch.setattr("recgoat_recbole.features.text.encode_texts", refuse)


def _table(rows: list[tuple[str, str]]) -> str:
    with open("items.tsv", "w") as f:
        f.write("itemID\ttitle\n" + "".join(f"{i}\t{t}\n" for i, t in rows))
    return "items.tsv"


def _cli(capsys, argv) -> tuple[int, str]:
    code = main(argv)
    return code, capsys.readouterr().err


def test_npy_row_i_is_item_i_with_zero_rows_for_ids_the_table_lacks(encoder, capsys):
    table = _table([("3", "Heat"), ("0", "Toy Story"), ("1", "Jumanji")])  # no item 2, not in id order
    assert _cli(capsys, ["features", "text", table, "--columns", "title", "-o", "text.npy", "--quiet"])[0] == 0
    assert _cli(capsys, ["features", "text", table, "--columns", "title", "-o", "text.npz", "--quiet"])[0] == 0
    plain = np.load("text.npy", allow_pickle=False)  # what MMRec does: no sidecar, row i = item i
    assert plain.dtype == np.float32 and plain.shape == (4, 3)
    npz = read_features("text.npz")
    for token in ("0", "1", "3"):
        np.testing.assert_array_equal(plain[int(token)], npz.features[npz.tokens.tolist().index(token)])
    assert not plain[2].any()  # item 2 has no text: a zero row, as for an empty text
    assert read_features("text.npy").tokens.tolist() == ["0", "1", "2", "3"]


@pytest.mark.parametrize("rows, needle", [
    ([("B00A", "Heat"), ("B00B", "Jumanji")], "needs integer item ids"),
    ([("007", "Heat"), ("1", "Jumanji")], "needs integer item ids"),
    ([("0", "Heat"), ("5000", "Jumanji")], "would take 5,001 rows for 2 items"),
], ids=["asin_tokens", "leading_zero", "mostly_gaps"])
def test_ids_that_do_not_fit_mmrec_layout_are_refused_before_encoding(no_encoding, capsys, rows, needle):
    code, err = _cli(capsys, ["features", "text", _table(rows), "--columns", "title", "-o", "text.npy", "--quiet"])
    assert code == 2 and err.startswith("recgoat: error: output text.npy:") and len(err.strip().splitlines()) == 1
    assert needle in err and "write .npz instead" in err and not os.path.exists("text.npy")


def test_an_output_that_exists_and_is_not_a_file_is_refused_before_encoding(no_encoding, capsys):
    os.mkfifo("text.npy")
    code, err = _cli(capsys, ["features", "text", _table([("0", "Heat")]), "--columns", "title", "-o", "text.npy",
                              "--quiet"])
    assert code == 2 and "text.npy exists and is not a regular file" in err and len(err.strip().splitlines()) == 1


def test_write_features_keeps_table_order_for_other_tokens():
    """The Python API still writes any token to .npy (the sidecar names the rows); only MMRec ids are laid out."""
    write_features("x.npy", ["b", "0", "7"], np.arange(6, dtype=np.float32).reshape(3, 2))
    assert np.load("x.npy").tolist() == [[0, 1], [2, 3], [4, 5]]
    assert read_features("x.npy").tokens.tolist() == ["b", "0", "7"]
