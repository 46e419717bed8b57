"""Safe loading and finite numerics: every bad feature file is one FeatureFileError naming it (issue item 6),
and the alignment losses stay finite and well-defined at their edges (item 8). Unit-level, tiny arrays."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from recgoat_core.alignment import OATMap, WassersteinLoss, info_nce, sinkhorn_plan, wasserstein_distance
from recgoat_core.feature_files import FeatureFileError, read_features, write_features


# ------------------------------------------------------------------------------------ item 6: feature files
def _good_npz(path) -> bytes:
    write_features(path, ["a", "b", "c"], np.arange(12, dtype=np.float32).reshape(3, 4))
    return path.read_bytes()


def _rename(src, dst):
    src.rename(dst)


def _torch_file(p, name):
    torch.save(torch.ones(3, 4), p / name)


BAD_FILES = {
    # name: (file to create, how to create it in folder p, what the message must say)
    "empty_npy": ("f.npy", lambda p: (p / "f.npy").write_bytes(b""), "empty"),
    "empty_npz": ("f.npz", lambda p: (p / "f.npz").write_bytes(b""), "empty"),
    "truncated_npz": (
        "f.npz",
        lambda p: (p / "f.npz").write_bytes((lambda b: b[: len(b) // 2])(_good_npz(p / "good.npz"))),
        "truncated or corrupt",
    ),
    "torch_named_npy": ("f.npy", lambda p: _torch_file(p, "f.npy"), "torch"),
    "torch_named_npz": ("f.npz", lambda p: _torch_file(p, "f.npz"), "torch"),
    "npz_named_npy": ("f.npy", lambda p: (_good_npz(p / "g.npz"), _rename(p / "g.npz", p / "f.npy")), "rename"),
    "npy_named_npz": ("f.npz", lambda p: (np.save(p / "g.npy", np.ones((2, 2))), _rename(p / "g.npy", p / "f.npz")),
                      "rename"),
    "no_columns_npy": ("f.npy", lambda p: np.save(p / "f.npy", np.ones((3, 0), np.float32)), "0 columns"),
    "no_rows_npy": ("f.npy", lambda p: np.save(p / "f.npy", np.ones((0, 4), np.float32)), "no rows"),
    "no_rows_npz": ("f.npz", lambda p: write_features(p / "f.npz", [], np.ones((0, 4), np.float32)), "no rows"),
    "timedelta_dtype": ("f.npy", lambda p: np.save(p / "f.npy", np.ones((2, 2), "m8[s]")), "numeric"),
    "beyond_float32": ("f.npy", lambda p: np.save(p / "f.npy", np.full((2, 2), 1e300)), "float32"),
    "ids_not_1d": ("f.npz", lambda p: np.savez(p / "f.npz", ids=np.array("a"), features=np.ones((1, 2))), "ids"),
    "ids_2d": ("f.npz", lambda p: np.savez(p / "f.npz", ids=np.array([["a"], ["b"]]), features=np.ones((2, 2))),
               "ids"),
    "mask_not_bool": ("f.npz", lambda p: np.savez(p / "f.npz", ids=np.array(["a"]), features=np.ones((1, 2)),
                                                   mask=np.array(["no"])), "mask"),
}


@pytest.mark.parametrize("case", list(BAD_FILES))
def test_bad_feature_file_is_one_feature_file_error_naming_it(tmp_path, case):
    name, make, message = BAD_FILES[case]
    make(tmp_path)
    path = tmp_path / name
    with pytest.raises(FeatureFileError, match=message) as info:
        read_features(path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda p: np.save(p / "f.npy", np.array([[object(), 1]], dtype=object), allow_pickle=True), "object"),
        (lambda p: np.save(p / "f.npy", np.ones((2, 2), np.complex64)), "numeric"),
    ],
    ids=["pickled_object_npy", "complex_dtype"],
)
def test_files_already_refused_stay_refused(tmp_path, make, message):
    make(tmp_path)
    with pytest.raises(FeatureFileError, match=message) as info:
        read_features(tmp_path / "f.npy")
    assert str(tmp_path / "f.npy") in str(info.value)


def test_normalise_rows_keeps_huge_rows_in_l2_and_standard():
    from recgoat_core.feature_files import normalise_rows

    x = np.array([[1e30, 1e30, 0.0], [0.0, 0.0, 0.0], [3.0, 4.0, 0.0], [-1e30, 2e30, 5.0]], dtype=np.float32)
    l2 = normalise_rows(x, "l2", "f.npz")
    assert l2.dtype == np.float32 and np.isfinite(l2).all()
    np.testing.assert_allclose(np.linalg.norm(l2, axis=1), [1, 0, 1, 1], rtol=1e-6)  # zero row stays zero
    np.testing.assert_allclose(l2[0], [2 ** -0.5, 2 ** -0.5, 0], rtol=1e-6)
    std = normalise_rows(x, "standard", "f.npz")
    assert std.dtype == np.float32 and np.isfinite(std).all()
    np.testing.assert_array_equal(std[1], 0)
    rows = x[[0, 2, 3]].astype(np.float64)
    np.testing.assert_allclose(std[[0, 2, 3]], (rows - rows.mean(0)) / (rows.std(0) + 1e-6), rtol=1e-5, atol=1e-6)
    assert np.abs(std[[0, 2, 3]]).max() > 0.5  # not zeroed by overflow


def test_normalise_rows_none_refuses_values_that_overflow_float32_products():
    from recgoat_core.feature_files import normalise_rows

    small = np.array([[1.0, -2.0]], dtype=np.float64)
    out = normalise_rows(small, "none", "f.npz")
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, small)
    with pytest.raises(FeatureFileError, match="feature_norm: l2") as info:
        normalise_rows(np.array([[1e20, 1.0]], dtype=np.float32), "none", "big.npz")
    assert "big.npz" in str(info.value)


def test_normalise_rows_non_finite_and_unknown_mode_are_feature_file_errors():
    from recgoat_core.feature_files import normalise_rows

    with pytest.raises(FeatureFileError, match="nan.npz.*feature_norm: l2"):
        normalise_rows(np.array([[np.nan, 1.0]]), "standard", "nan.npz")
    with pytest.raises(FeatureFileError, match="'l2', 'standard' or 'none'") as info:
        normalise_rows(np.ones((2, 2)), "max", "f.npz")
    assert "f.npz" in str(info.value)


# ------------------------------------------------------------------------------------- item 8: numerics
@pytest.mark.parametrize("eps", [1e-5, 1e-6, 1e-9])
def test_oat_plan_grad_at_tiny_epsilon_is_a_valid_plan_with_finite_gradients(eps):
    torch.manual_seed(1)
    dim = 16
    zm = torch.randn(50, dim, requires_grad=True)
    zid = torch.randn(50, dim)
    oat = OATMap(dim, epsilon=eps, plan_grad=True)
    out, plan = oat(zm, zid)
    out.sum().backward()
    assert torch.isfinite(plan).all() and (plan >= 0).all()
    torch.testing.assert_close(plan.sum(), torch.tensor(1.0), atol=1e-5, rtol=0)
    torch.testing.assert_close(plan.sum(0), torch.full((dim,), 1 / dim), atol=1e-5, rtol=0)
    torch.testing.assert_close(plan.sum(1), torch.full((dim,), 1 / dim), atol=1e-5, rtol=0)
    assert torch.isfinite(out).all() and torch.isfinite(zm.grad).all() and torch.isfinite(oat.residual.grad).all()


@pytest.mark.parametrize(
    "make",
    [
        lambda eps: OATMap(4, epsilon=eps),
        lambda eps: OATMap(4, epsilon=eps, plan_grad=True),
        lambda eps: WassersteinLoss(epsilon=eps),
    ],
    ids=["OATMap", "OATMap_plan_grad", "WassersteinLoss"],
)
@pytest.mark.parametrize("eps", [0.0, -1e-3, math.nan])
def test_non_positive_epsilon_is_refused_at_construction(make, eps):
    with pytest.raises(ValueError, match="epsilon"):
        make(eps)


def test_info_nce_of_an_empty_batch_is_zero_and_backpropagates():
    view = torch.zeros(0, 8, requires_grad=True)
    target = torch.zeros(0, 8, requires_grad=True)
    loss = info_nce(view, target)
    assert loss.ndim == 0 and loss.item() == 0.0
    assert loss.grad_fn is not None
    loss.backward()
    assert view.grad is not None and view.grad.shape == (0, 8)


@pytest.mark.parametrize("shape", [(0, 3), (3, 0), (0, 0)])
def test_sinkhorn_plan_of_an_empty_cost_raises_naming_the_shape(shape):
    with pytest.raises(ValueError, match=re_shape(shape)):
        sinkhorn_plan(torch.zeros(shape))


def re_shape(shape: tuple[int, int]) -> str:
    return r"\(" + ", ".join(map(str, shape)) + r"\)"


def test_wasserstein_loss_of_an_empty_batch_is_zero_and_backpropagates():
    x = torch.zeros(0, 5, requires_grad=True)
    loss = WassersteinLoss()(x, torch.zeros(0, 5))
    assert loss.item() == 0.0 and torch.isfinite(loss)
    loss.backward()
    assert x.grad is not None and x.grad.shape == (0, 5)
    assert float(wasserstein_distance(torch.zeros(0, 5), torch.zeros(0, 5))) == 0.0


def test_wasserstein_between_an_empty_and_a_non_empty_cloud_is_a_value_error():
    with pytest.raises(ValueError, match="empty"):
        wasserstein_distance(torch.zeros(0, 5), torch.randn(3, 5))
