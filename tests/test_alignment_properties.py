"""Property tests (hypothesis) of SPEC §6: InfoNCE, Lemma 3.3, Kantorovich–Rubinstein, Sinkhorn vs exact OT."""
from __future__ import annotations

import itertools
import math

import numpy as np
import ot
import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from recgoat_core.alignment import (
    CMCLoss,
    OATMap,
    WassersteinLoss,
    alignment_bound,
    dimension_cost,
    info_nce,
    pairwise_euclidean,
    sinkhorn_plan,
    wasserstein_distance,
)

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
finite = st.floats(-10, 10, allow_nan=False, allow_infinity=False, width=32)


@st.composite
def paired_batches(draw, min_b=2, max_b=12, max_d=6):
    """Two [B, d] batches; duplicates and ties are allowed (hypothesis finds them)."""
    b = draw(st.integers(min_b, max_b))
    d = draw(st.integers(1, max_d))
    x = draw(arrays(np.float64, (b, d), elements=finite))
    y = draw(arrays(np.float64, (b, d), elements=finite))
    assume((np.linalg.norm(x, axis=1) > 1e-3).all() and (np.linalg.norm(y, axis=1) > 1e-3).all())
    return torch.tensor(x), torch.tensor(y)


temperatures = st.floats(0.01, 10.0, allow_nan=False)


# ------------------------------------------------------------------------------------------------ InfoNCE
@SETTINGS
@given(paired_batches(), temperatures)
def test_info_nce_nonnegative_and_bounded_by_log_b_plus_spread(batch, tau):
    x, y = batch
    loss = float(info_nce(x, y, tau))
    assert loss >= -1e-9
    # each logit lies in [-1/τ, 1/τ]: the loss is at most log B + 2/τ
    assert loss <= math.log(len(x)) + 2 / tau + 1e-6


@SETTINGS
@given(st.integers(2, 30), st.integers(1, 8), temperatures)
def test_info_nce_identical_vectors_is_log_b(b, d, tau):
    v = torch.randn(1, d, dtype=torch.float64).repeat(b, 1)
    assert float(info_nce(v, v, tau)) == pytest.approx(math.log(b), rel=1e-9)


@SETTINGS
@given(st.integers(2, 16), temperatures)
def test_info_nce_orthonormal_views(b, tau):
    e = torch.eye(b, dtype=torch.float64)
    expected = math.log1p((b - 1) * math.exp(-1 / tau))
    assert float(info_nce(e, e, tau)) == pytest.approx(expected, rel=1e-9, abs=1e-12)


def test_cmcl_module_is_minimised_by_alignment():
    torch.manual_seed(0)
    z = torch.randn(32, 8)
    loss_aligned = CMCLoss(0.2)(z, z)
    loss_random = CMCLoss(0.2)(torch.randn(32, 8), z)
    assert loss_aligned < loss_random
    assert torch.isfinite(CMCLoss(0.2)(z.half(), z.bfloat16()))


def test_info_nce_equals_its_definition_term_by_term():
    """info_nce(v, t) = mean_i -log( exp(v̂_i·t̂_i/τ) / Σ_j exp(v̂_i·t̂_j/τ) ): view i against every target, its own
    target in the numerator (not the transpose, not another row's)."""
    g = torch.Generator().manual_seed(0)
    v, t = torch.randn(5, 3, generator=g, dtype=torch.float64), 2 * torch.randn(5, 3, generator=g, dtype=torch.float64)
    tau = 0.3
    vn, tn = (v / v.norm(dim=1, keepdim=True)).tolist(), (t / t.norm(dim=1, keepdim=True)).tolist()
    dot = lambda a, b: sum(p * q for p, q in zip(a, b))  # noqa: E731
    expected = sum(
        -math.log(math.exp(dot(vn[i], tn[i]) / tau) / sum(math.exp(dot(vn[i], tn[j]) / tau) for j in range(5)))
        for i in range(5)
    ) / 5
    assert float(info_nce(v, t, tau)) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("tau", [1.0, 0.2, 0.05, 0.026, 0.02, 0.005])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_info_nce_value_and_gradients_equal_cross_entropy_over_the_logits(tau, dtype, monkeypatch):
    """The bounded-shift kernel (:class:`_BoundedInfoNCE`, used while 2/τ is within ``FUSED_LIMIT``) gives
    ``cross_entropy(v̂ t̂ᵀ/τ, arange)`` and its gradients for both inputs, in float64 exactly; below the limit's τ
    the plain path answers (float32 τ 0.02 would underflow rows of the shifted kernel). Rows include a copy of
    another row and an exact match, where the logits touch their bounds ±1/τ."""
    from recgoat_core.alignment import cmcl as cmcl_module

    used = []
    real = cmcl_module._BoundedInfoNCE.apply
    monkeypatch.setattr(cmcl_module._BoundedInfoNCE, "apply", lambda *a: used.append(1) or real(*a))
    g = torch.Generator().manual_seed(0)
    v = torch.randn(300, 16, generator=g, dtype=dtype)
    t = 3 * torch.randn(300, 16, generator=g, dtype=dtype)
    v[5], t[7] = v[4], v[7] * 2.0
    v, t = v.requires_grad_(), t.requires_grad_()
    loss = info_nce(v, t, tau)
    grads = torch.autograd.grad(loss, (v, t))
    assert bool(used) == (2 / tau <= cmcl_module.FUSED_LIMIT[dtype])
    v64, t64 = v.detach().double().requires_grad_(), t.detach().double().requires_grad_()
    ref = F.cross_entropy(F.normalize(v64, dim=-1) @ F.normalize(t64, dim=-1).T / tau, torch.arange(300))
    ref_grads = torch.autograd.grad(ref, (v64, t64))
    tol = dict(rtol=1e-12, atol=1e-12) if dtype == torch.float64 else dict(rtol=2e-5, atol=2e-6)
    torch.testing.assert_close(loss.double(), ref, **tol)
    for got, want in zip(grads, ref_grads):
        torch.testing.assert_close(got.double(), want, rtol=tol["rtol"], atol=tol["atol"] * float(want.abs().max()) * 10)
    assert torch.isfinite(loss) and all(torch.isfinite(x).all() for x in grads)


@pytest.mark.parametrize("seed", range(3))
def test_info_nce_is_minimal_exactly_when_each_view_meets_its_own_item(seed):
    """Views equal to their (distinct) targets: the identity pairing gives the smallest loss, and every one of the
    other 119 permutations of the 5 targets gives a strictly larger one."""
    g = torch.Generator().manual_seed(seed)
    t = torch.randn(5, 4, generator=g, dtype=torch.float64)
    v = t.clone()
    own = float(info_nce(v, t, 0.2))
    for perm in itertools.permutations(range(5)):
        if perm != tuple(range(5)):
            assert float(info_nce(v, t[list(perm)], 0.2)) > own + 1e-6, perm
    assert float(CMCLoss(0.2)(v, t)) == pytest.approx(own)


# ----------------------------------------------------------------------------------------------- Lemma 3.3
def _mean_distance(x, y):
    return float((F.normalize(x, dim=-1) - F.normalize(y, dim=-1)).norm(dim=1).mean())


def _lemma_33_rhs(x, y, tau):
    return math.sqrt(2 * tau * float(info_nce(x, y, tau)) + 2 * tau * math.log(len(x)))


def test_lemma_33_as_stated_has_a_counterexample():
    """Lemma 3.3 claims E||z^m_i - z_i|| <= sqrt(2τ L + 2τ log B). Counterexample: views orthogonal to their
    targets but antipodal to the negatives give a tiny loss with distance sqrt(2)."""
    e1, e2 = torch.tensor([1.0, 0.0], dtype=torch.float64), torch.tensor([0.0, 1.0], dtype=torch.float64)
    targets = torch.stack([e1, -e2])  # z_1, z_2
    views = torch.stack([e2, -e1])  # z^m_1 ⟂ z_1, antipodal to z_2; z^m_2 ⟂ z_2, antipodal to z_1
    tau = 0.01
    assert _mean_distance(views, targets) == pytest.approx(math.sqrt(2))
    assert _mean_distance(views, targets) > _lemma_33_rhs(views, targets, tau)  # the stated bound fails


@SETTINGS
@given(paired_batches(), temperatures)
def test_valid_alignment_bound_holds(batch, tau):
    """What does hold (Jensen on the log-sum-exp): E||z^m_i - z_i||^2 <= 2τ(L - log B) + 2(1 - mean(z^m)·mean(z))."""
    x, y = batch
    sq = float((F.normalize(x, dim=-1) - F.normalize(y, dim=-1)).pow(2).sum(1).mean())
    assert sq <= float(alignment_bound(x, y, tau)) + 1e-7
    # and hence E||.|| <= sqrt(bound) (Cauchy–Schwarz)
    assert _mean_distance(x, y) <= math.sqrt(max(float(alignment_bound(x, y, tau)), 0.0)) + 1e-6


def test_hypothesis_finds_lemma_33_violations():
    """The stated bound fails on a non-trivial part of the domain, not only on one hand-made example."""
    from hypothesis import find

    found = find(
        st.tuples(paired_batches(max_b=4, max_d=3), st.floats(0.01, 0.1)),
        lambda args: _mean_distance(*args[0]) > _lemma_33_rhs(args[0][0], args[0][1], args[1]) + 1e-6,
        settings=settings(max_examples=2000, deadline=None, database=None),
    )
    (x, y), tau = found
    assert _mean_distance(x, y) > _lemma_33_rhs(x, y, tau)


# ------------------------------------------------------------------------------ Kantorovich–Rubinstein (W1)
@st.composite
def point_clouds(draw):
    n = draw(st.integers(1, 10))
    m = draw(st.integers(1, 10))
    d = draw(st.integers(1, 4))
    x = draw(arrays(np.float64, (n, d), elements=finite))
    y = draw(arrays(np.float64, (m, d), elements=finite))
    return x, y


def _exact_w1(x, y):
    cost = ot.dist(x, y, metric="euclidean")
    return ot.emd2(np.full(len(x), 1 / len(x)), np.full(len(y), 1 / len(y)), cost)


@SETTINGS
@given(point_clouds(), arrays(np.float64, (4,), elements=finite), arrays(np.float64, (4,), elements=finite),
       st.floats(0.1, 5))
def test_kantorovich_rubinstein_duality(clouds, w, c, lip):
    """|E_P g - E_Q g| <= Lip(g) W1(P, Q) for Lipschitz g: a linear map and a distance to a point."""
    x, y = clouds
    d = x.shape[1]
    w, c = w[:d], c[:d]
    w1 = _exact_w1(x, y)
    linear = lambda z: z @ w  # noqa: E731   Lip = ||w||
    dist = lambda z: lip * np.linalg.norm(z - c, axis=1)  # noqa: E731   Lip = lip
    tol = 1e-7 * (1 + np.abs(x).max() + np.abs(y).max()) * (1 + np.linalg.norm(w) + lip)
    assert abs(linear(x).mean() - linear(y).mean()) <= np.linalg.norm(w) * w1 + tol
    assert abs(dist(x).mean() - dist(y).mean()) <= lip * w1 + tol


# ------------------------------------------------------------------------------------- entropic OT (Sinkhorn)
@st.composite
def cost_matrices(draw):
    n = draw(st.integers(1, 8))
    m = draw(st.integers(1, 8))
    scale = draw(st.sampled_from([1e-3, 1.0, 1e3]))
    c = draw(arrays(np.float64, (n, m), elements=st.floats(0, 1, allow_nan=False)))
    return c * scale


@SETTINGS
@given(cost_matrices(), st.sampled_from([1e-3, 1e-2, 0.1, 1.0, 10.0]))
def test_sinkhorn_plan_is_feasible_finite_and_not_below_exact_ot(cost, eps):
    c = torch.tensor(cost)
    plan = sinkhorn_plan(c, epsilon=eps)
    assert torch.isfinite(plan).all() and (plan >= 0).all()
    n, m = cost.shape
    torch.testing.assert_close(plan.sum(1), torch.full((n,), 1 / n, dtype=torch.float64), atol=1e-9, rtol=0)
    torch.testing.assert_close(plan.sum(0), torch.full((m,), 1 / m, dtype=torch.float64), atol=1e-9, rtol=0)
    exact = ot.emd2(np.full(n, 1 / n), np.full(m, 1 / m), cost)
    assert float((plan * c).sum()) >= exact - 1e-9 * (1 + cost.max())


@settings(max_examples=25, deadline=None)
@given(st.integers(2, 12), st.integers(2, 12), st.integers(0, 10_000))
def test_sinkhorn_cost_converges_to_exact_as_epsilon_shrinks(n, m, seed):
    rng = np.random.default_rng(seed)
    cost = ot.dist(rng.normal(size=(n, 3)), rng.normal(size=(m, 3)), metric="euclidean")
    exact = ot.emd2(np.full(n, 1 / n), np.full(m, 1 / m), cost)
    gaps = []
    for eps in (1.0, 0.1, 0.01, 0.001):
        plan = sinkhorn_plan(torch.tensor(cost), epsilon=eps, max_iter=2000)
        gaps.append(float((plan * torch.tensor(cost)).sum()) - exact)
    assert all(g >= -1e-9 for g in gaps)
    assert gaps[-1] <= 0.02 * (1 + exact)  # close to exact at ε = 1e-3
    assert gaps[-1] <= gaps[0] + 1e-9


@pytest.mark.parametrize(("n", "m", "d", "seed"),
                         [(5, 7, 3, 0), (8, 8, 4, 1), (1, 6, 2, 2), (12, 9, 5, 3), (6, 6, 2, 4)])
def test_wasserstein_distance_tends_to_exact_euclidean_w1_as_epsilon_shrinks(n, m, d, seed):
    """``wasserstein_distance`` (normalize=True) is the entropic W1 of the L2-normalised clouds: never below POT's
    exact ``emd2`` with the Euclidean (not squared) ground cost, falling with ε, and equal to it at ε = 1e-4."""
    g = torch.Generator().manual_seed(seed)
    x = 3 * torch.randn(n, d, generator=g, dtype=torch.float64)
    y = torch.randn(m, d, generator=g, dtype=torch.float64) + 1
    exact = _exact_w1(F.normalize(x, dim=-1).numpy(), F.normalize(y, dim=-1).numpy())
    values = [float(wasserstein_distance(x, y, epsilon=eps, max_iter=1000)) for eps in (0.1, 1e-2, 1e-4)]
    assert all(v >= exact - 1e-9 for v in values)
    assert values[0] + 1e-9 >= values[1] and values[1] + 1e-9 >= values[2]
    assert values[-1] == pytest.approx(exact, abs=1e-4)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("eps", [1e-3, 0.1])
def test_wasserstein_loss_stable_in_low_precision_and_small_epsilon(dtype, eps):
    torch.manual_seed(0)
    x = (torch.randn(64, 16) * 30).to(dtype).requires_grad_()
    y = (torch.randn(48, 16) * 30 + 5).to(dtype)
    loss = wasserstein_distance(x, y, epsilon=eps, normalize=False)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(x.grad).all()
    exact = _exact_w1(x.detach().double().numpy(), y.double().numpy())
    assert float(loss) >= exact * (1 - 1e-2)


def test_wasserstein_zero_for_identical_clouds_and_gradient_finite():
    x = torch.randn(20, 5, requires_grad=True)
    loss = wasserstein_distance(x, x.detach().clone(), epsilon=1e-3)
    loss.backward()
    assert float(loss) < 1e-3 and torch.isfinite(x.grad).all()
    assert float(WassersteinLoss(sample_size=8)(torch.randn(100, 5), torch.randn(100, 5))) > 0


@SETTINGS
@given(cost_matrices(), st.sampled_from([1e-3, 1e-2, 0.1, 1.0, 10.0]))
def test_scaling_sinkhorn_matches_log_domain_where_safe(cost, eps):
    """``method="auto"`` takes the scaling domain exactly when the range over ε is within SCALING_LIMIT, and there
    returns the log-domain plan (same iterations) up to rounding, feasible and never below exact OT."""
    from recgoat_core.alignment.sinkhorn import scaling_is_safe

    c = torch.tensor(cost)
    assume(scaling_is_safe(c, eps))
    for steps in (None, 0):
        log = sinkhorn_plan(c, epsilon=eps, scaling_steps=steps, max_iter=300)
        fast = sinkhorn_plan(c, epsilon=eps, scaling_steps=steps, max_iter=300, method="auto")
        torch.testing.assert_close(fast, log, atol=1e-9, rtol=1e-6)
    exact = ot.emd2(np.full(c.shape[0], 1 / c.shape[0]), np.full(c.shape[1], 1 / c.shape[1]), cost)
    assert float((fast * c).sum()) >= exact - 1e-9 * (1 + cost.max())


@pytest.mark.parametrize("seed", range(4))
def test_scaling_sinkhorn_matches_pot_and_falls_back_when_unbounded(seed):
    g = torch.Generator().manual_seed(seed)
    x = F.normalize(torch.randn(40, 8, generator=g, dtype=torch.float64), dim=-1)
    y = F.normalize(torch.randn(30, 8, generator=g, dtype=torch.float64), dim=-1)
    cost = pairwise_euclidean(x, y)  # in [0, 2]
    plan = sinkhorn_plan(cost, epsilon=0.1, scaling_steps=0, max_iter=2000, tol=1e-12, method="scaling",
                         round_plan=False)
    pot = ot.sinkhorn(np.full(40, 1 / 40), np.full(30, 1 / 30), cost.numpy(), 0.1, numItermax=20000, stopThr=1e-13)
    np.testing.assert_allclose(plan.numpy(), pot, atol=1e-10)
    f32 = sinkhorn_plan(cost.float(), epsilon=0.1, scaling_steps=0, max_iter=2000, tol=1e-7, method="scaling",
                        dtype=torch.float32)
    np.testing.assert_allclose(f32.double().numpy(), pot, atol=2e-6)
    # unbounded relative to ε: auto keeps the (stable) log domain, forced scaling would underflow
    wide = sinkhorn_plan(cost * 1e3, epsilon=1.0, method="auto", max_iter=50)
    torch.testing.assert_close(wide, sinkhorn_plan(cost * 1e3, epsilon=1.0, max_iter=50))
    assert torch.isfinite(wide).all()
    with pytest.raises(ValueError, match="method"):
        sinkhorn_plan(cost, method="fast")


@SETTINGS
@given(cost_matrices(), st.sampled_from([1e-3, 1e-2, 0.1]), st.floats(0.0, 0.3), st.integers(0, 10_000))
def test_stabilized_sinkhorn_from_a_warm_start_is_the_log_domain_solver(cost, eps, move, seed):
    """From the potentials of a nearby cost (what OATMap passes between training steps), ``"stabilized"`` and
    ``"auto"`` make the log-domain solver's updates (same checks, same count) whatever the cost's range over ε:
    the same plan and potentials to rounding. A warm start far from the solution (``move`` up to 30% of the
    cost's scale on every entry) under- or overflows the absorbed kernel; the stage is then redone in the log
    domain, so the result is still exactly the log solver's."""
    rng = np.random.default_rng(seed)
    c0 = torch.tensor(cost)
    c1 = c0 + move * float(c0.max() + 1e-12) * torch.tensor(rng.random(cost.shape))
    _, warm = sinkhorn_plan(c0, epsilon=eps, max_iter=300, return_potentials=True)
    log, (f, g) = sinkhorn_plan(c1, epsilon=eps, max_iter=60, tol=1e-9, init=warm, return_potentials=True)
    for method in ("stabilized", "auto"):
        fast, (ff, gg) = sinkhorn_plan(c1, epsilon=eps, max_iter=60, tol=1e-9, init=warm, return_potentials=True,
                                       method=method)
        assert torch.isfinite(fast).all()
        torch.testing.assert_close(fast, log, atol=1e-9, rtol=1e-7)  # plan entries sum to 1
        scale = eps + float(c1.abs().max())
        torch.testing.assert_close(ff + gg.mean(), f + g.mean(), atol=1e-7 * scale, rtol=0)


def test_stabilized_sinkhorn_runs_where_auto_warm_starts_and_falls_back_on_overflow(monkeypatch):
    """``auto`` with ``init`` goes through the stabilized iterations (and without one does not); where they
    report an under/overflow the log domain answers (a cost 100x the warm start's: the kernel overflows)."""
    import recgoat_core.alignment.sinkhorn as sk

    g = torch.Generator().manual_seed(0)
    cost = 100 * torch.rand(16, 16, generator=g, dtype=torch.float64)
    _, warm = sinkhorn_plan(cost, epsilon=0.01, return_potentials=True)
    calls = []
    real = sk._stabilized_iterations
    monkeypatch.setattr(sk, "_stabilized_iterations", lambda *a, **k: calls.append(real(*a, **k)) or calls[-1])
    sinkhorn_plan(cost, epsilon=0.01, init=warm)
    assert len(calls) == 0  # "log" by default
    sinkhorn_plan(cost, epsilon=0.01, init=warm, method="auto")
    assert len(calls) == 1 and calls[0] is not None
    sinkhorn_plan(cost, epsilon=0.01, method="auto")  # no warm start: the log domain with ε-scaling
    assert len(calls) == 1
    shifted = cost.clone()
    shifted[0] -= 50  # potentials now far from feasible: exp((f + g - C)/ε) overflows on row 0
    fast = sinkhorn_plan(shifted, epsilon=0.01, init=warm, method="auto", max_iter=40)
    assert calls[-1] is None and torch.isfinite(fast).all()
    torch.testing.assert_close(fast, sinkhorn_plan(shifted, epsilon=0.01, init=warm, max_iter=40))


@pytest.mark.parametrize("seed", range(3))
def test_wasserstein_auto_solver_matches_the_log_domain_solver(seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(128, 64, generator=g, requires_grad=True)
    y = torch.randn(128, 64, generator=g)
    fast = wasserstein_distance(x, y, epsilon=0.1, max_iter=30, scaling_steps=0)
    slow = wasserstein_distance(x.detach(), y, epsilon=0.1, max_iter=30, scaling_steps=0, method="log", check_every=5)
    assert fast.dtype == torch.float32
    torch.testing.assert_close(fast.detach(), slow, atol=1e-5, rtol=1e-5)
    fast.backward()
    assert torch.isfinite(x.grad).all()
    assert WassersteinLoss().method == "auto"


def test_cmcl_max_items_bounds_the_batch_and_keeps_pairs():
    torch.manual_seed(0)
    v, t = torch.randn(50, 8), torch.randn(50, 8)
    assert CMCLoss(0.2, max_items=None)(v, t) == info_nce(v, t, 0.2)  # exactly the old loss
    assert CMCLoss(0.2, max_items=50)(v, t) == info_nce(v, t, 0.2)  # B <= M: no sampling
    torch.manual_seed(3)
    a = CMCLoss(0.2, max_items=16)(v, t)
    torch.manual_seed(3)
    b = CMCLoss(0.2, max_items=16)(v, t)
    assert a.shape == () and a == b  # deterministic under a fixed seed
    torch.manual_seed(3)
    keep = torch.randperm(50)[:16]
    assert a == info_nce(v[keep], t[keep], 0.2)  # the same rows of view and target: pairs kept
    assert float(CMCLoss(0.2, max_items=16)(v, v)) < float(a)  # aligned pairs still score best
    vg = v.clone().requires_grad_()
    CMCLoss(0.2, max_items=16)(vg, t).backward()
    assert int((vg.grad.abs().sum(1) > 0).sum()) == 16  # only the sampled rows get gradients
    with pytest.raises(ValueError):
        CMCLoss(0.2, max_items=0)
    assert "max_items=16" in repr(CMCLoss(0.2, max_items=16))


# -------------------------------------------------------------------------------------------------- OAT
@SETTINGS
@given(st.integers(1, 50), st.integers(1, 8), st.integers(0, 1000))
def test_dimension_cost_matches_definition(n, d, seed):
    g = torch.Generator().manual_seed(seed)
    zm, zid = torch.randn(n, d, generator=g, dtype=torch.float64), torch.randn(n, d, generator=g, dtype=torch.float64)
    direct = ((zm[:, :, None] - zid[:, None, :]) ** 2).mean(0)  # the [I, d, d] definition (test only)
    torch.testing.assert_close(dimension_cost(zm, zid), direct)


def test_oat_map_recovers_a_dimension_permutation():
    torch.manual_seed(0)
    zid = torch.randn(500, 8)
    perm = torch.randperm(8)
    zm = zid[:, perm] * 1.0
    oat = OATMap(8, epsilon=1e-2, cost_scale=100.0)
    aligned, plan = oat(zm, zid)
    torch.testing.assert_close(plan.sum(), torch.tensor(1.0), atol=1e-6, rtol=0)
    assert (8 * plan).max(1).values.min() > 0.99  # a (near-)permutation matrix
    torch.testing.assert_close(aligned, zid, atol=1e-3, rtol=1e-3)  # z^m (d·T) undoes the permutation
    again, _ = oat(zm + 1e-3, zid)  # warm-started second call
    assert torch.isfinite(again).all()


def test_oat_never_nan_for_extreme_inputs():
    oat = OATMap(4, epsilon=1e-3, cost_scale=1e3)
    for z in (torch.zeros(10, 4), torch.full((10, 4), 1e4), torch.randn(1, 4)):
        out, plan = oat(z, torch.randn(len(z), 4))
        assert torch.isfinite(out).all() and torch.isfinite(plan).all()


def test_oat_residual_and_plan_grad_paths():
    zm = torch.randn(50, 6, requires_grad=True)
    zid = torch.randn(50, 6)
    oat = OATMap(6, residual_init="xavier", plan_grad=True, n_iter=20)
    out, _ = oat(zm, zid)
    out.sum().backward()
    assert oat.residual.grad is not None and torch.isfinite(zm.grad).all()
    with pytest.raises(ValueError):
        OATMap(6, residual_init="bad")


def test_pairwise_euclidean_matches_torch_cdist():
    x, y = torch.randn(7, 3, dtype=torch.float64), torch.randn(5, 3, dtype=torch.float64)
    torch.testing.assert_close(pairwise_euclidean(x, y), torch.cdist(x, y), atol=1e-6, rtol=1e-6)
