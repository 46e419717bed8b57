"""Feature files: reading, validation errors, and alignment to RecBole ids by token."""
from __future__ import annotations

import numpy as np
import pytest

from recgoat_core.feature_files import FeatureFile, FeatureFileError, align_rows, read_features, write_features


def test_npy_uses_mmrec_row_convention_and_sidecar_overrides(tmp_path):
    np.save(tmp_path / "f.npy", np.arange(6, dtype=np.float32).reshape(3, 2))
    f = read_features(tmp_path / "f.npy")
    assert f.tokens.tolist() == ["0", "1", "2"]
    (tmp_path / "f.npy.ids").write_text("b\na\nc\n")
    f = read_features(tmp_path / "f.npy")
    assert f.tokens.tolist() == ["b", "a", "c"]


def test_align_rows_by_token_not_position(tmp_path):
    path = write_features(tmp_path / "f.npz", ["x", "y", "z"], np.array([[1, 1], [2, 2], [3, 3]]))
    f = read_features(path)
    out = align_rows(f, ["[PAD]", "z", "x", "y"])
    np.testing.assert_array_equal(out, [[0, 0], [3, 3], [1, 1], [2, 2]])


def test_missing_rows_error_or_zero_fill(tmp_path, caplog):
    f = read_features(write_features(tmp_path / "f.npz", ["a"], np.ones((1, 2))))
    with pytest.raises(FeatureFileError, match="1 of 2 dataset items have no feature row"):
        align_rows(f, ["[PAD]", "a", "b"])
    out = align_rows(f, ["[PAD]", "a", "b"], missing="zero")
    np.testing.assert_array_equal(out[2], [0, 0])
    assert "filled with zeros" in caplog.text
    # RecBole's tokens are numpy strings: the message names them as text, not as np.str_('50')
    with pytest.raises(FeatureFileError) as error:
        align_rows(f, np.array(["[PAD]", "a", "50", "51"]))
    assert "(e.g. tokens 50, 51)" in str(error.value) and "np.str_" not in str(error.value)


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda p: None, "not found"),
        (lambda p: np.save(p / "f.npy", np.ones(3)), "2-d"),
        (lambda p: np.save(p / "f.npy", np.array([["a", "b"]])), "numeric"),
        (lambda p: np.save(p / "f.npy", np.array([[1.0, np.nan], [1.0, 2.0]])), "NaN or Inf"),
        (lambda p: np.savez(p / "f.npz", ids=np.array(["a", "a"]), features=np.ones((2, 2))), "duplicate tokens"),
        (lambda p: np.savez(p / "f.npz", ids=np.array(["a"]), features=np.ones((2, 2))), "2 feature rows but 1"),
        (lambda p: np.savez(p / "f.npz", features=np.ones((2, 2))), "lacks"),
        (lambda p: (p / "f.npy").write_text("not numpy"), "cannot read"),
    ],
)
def test_bad_files_raise_one_clear_error_naming_the_file(tmp_path, make, message):
    make(tmp_path)
    path = tmp_path / ("f.npz" if (tmp_path / "f.npz").exists() else "f.npy")
    with pytest.raises(FeatureFileError, match=message) as info:
        read_features(path)
    assert str(path) in str(info.value)


def test_normalise_rows_in_blocks_is_the_whole_matrix_result_bit_for_bit(monkeypatch):
    """l2 and none run over blocks of rows (a ragged last one here): the same float32 bytes as one block, also
    written in place (out=x); standard (column statistics) stays whole."""
    import recgoat_core.feature_files as ff

    rng = np.random.default_rng(0)
    x = (rng.normal(size=(1001, 17)) * 10.0 ** rng.integers(-3, 3, size=(1001, 1))).astype(np.float32)
    x[::7] = 0
    for how in ("l2", "none", "standard"):
        whole = ff.normalise_rows(x, how, "f.npz")
        with monkeypatch.context() as m:
            m.setattr(ff, "_BLOCK_VALUES", 1000)  # 58 rows a block
            blocked = ff.normalise_rows(x, how, "f.npz")
            y = x.copy()
            in_place = ff.normalise_rows(y, how, "f.npz", out=y)
        assert blocked.dtype == np.float32 and blocked.tobytes() == whole.tobytes()
        assert in_place is y and y.tobytes() == whole.tobytes()
    with pytest.raises(ValueError, match="float32 array of shape"):
        ff.normalise_rows(x, "l2", "f.npz", out=np.zeros((3, 3), dtype=np.float32))


def test_loading_a_wide_feature_matrix_holds_no_full_size_temporary(monkeypatch):
    """Aligning and normalising a 32 MiB float32 matrix in place allocates a few blocks of float64, not the
    float64 copies of the whole matrix the one-piece computation made (8x the matrix at its peak)."""
    import tracemalloc

    import recgoat_core.feature_files as ff

    monkeypatch.setattr(ff, "_BLOCK_VALUES", 1 << 18)  # 2 MiB float64 blocks
    rng = np.random.default_rng(1)
    f = FeatureFile("f.npz", np.array([str(i) for i in range(8192)]),
                    rng.normal(size=(8192, 1024)).astype(np.float32))
    size = f.features.nbytes
    tracemalloc.start()
    try:
        aligned = align_rows(f, ["[PAD]", *f.tokens.tolist()])
        _, peak = tracemalloc.get_traced_memory()
        assert peak < 1.2 * size  # the aligned matrix itself, no temporary copy of the rows
        tracemalloc.reset_peak()
        before, _ = tracemalloc.get_traced_memory()
        ff.normalise_rows(aligned, "l2", "f.npz", out=aligned)
        _, peak = tracemalloc.get_traced_memory()
        assert peak - before < size / 2
    finally:
        tracemalloc.stop()
    np.testing.assert_allclose(np.linalg.norm(aligned[1:], axis=1), 1.0, rtol=1e-5)
