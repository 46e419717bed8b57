r"""Entropic optimal transport by log-domain Sinkhorn, with ε-scaling and exact-marginal rounding.

Solves

.. math::
    T_\varepsilon = \arg\min_{T \in U(a, b)} \langle T, C\rangle - \varepsilon H(T),\qquad
    U(a,b) = \{T \ge 0 : T\mathbf 1 = a,\ T^\top \mathbf 1 = b\}

with dual potentials updated in the log domain,
:math:`f_i = \varepsilon\log a_i - \varepsilon\,\mathrm{LSE}_j\big((g_j - C_{ij})/\varepsilon\big)` and symmetrically
for :math:`g`, so that no ``exp(-C/ε)`` kernel is ever formed: nothing under- or overflows for ε down to
1e-3 and costs up to 1e3 (checked in ``tests/test_alignment_properties.py``). Small ε converges slowly, so ε is
annealed geometrically from the cost's range down to the target (ε-scaling), warm-starting the potentials.
Finally the plan is *rounded* onto :math:`U(a,b)` (Altschuler, Weed & Rigollet 2017, Alg. 2): the returned plan
is exactly feasible, so :math:`\langle T, C\rangle` is never below the exact OT cost.

When the costs are *bounded* relative to ε -- :math:`(\max C - \min C)/\varepsilon` at most ``SCALING_LIMIT``
(50 in float64, 30 in float32), as for the W term's unit-vector costs in [0, 2] -- the same iterations run in
the scaling domain instead (``method="scaling"``, or ``"auto"``):
:math:`K = e^{-(C - \min C)/\varepsilon},\ u \leftarrow a / Kv,\ v \leftarrow b / K^\top u`, the plan
:math:`\mathrm{diag}(u) K \mathrm{diag}(v)`: two matrix-vector products per iteration instead of two log-sum-exps
over the whole matrix, where :math:`K \ge e^{-\text{limit}}` keeps every quotient finite and the
iterates :math:`u = e^{f/\varepsilon}` are those of the log-domain solver up to rounding. Convergence is checked
every ``check_every`` iterations (a host sync on a GPU), on the row marginal :math:`u \odot Kv` that the next
update computes anyway.

From a warm start (the previous training step's potentials, as :class:`~recgoat_core.alignment.oat.OATMap`
passes them) ``method="stabilized"`` (and ``"auto"``) runs the scaling iterations on the kernel
:math:`\tilde K = e^{(f_i + g_j - C_{ij})/\varepsilon}`, which *is* the current plan, so its entries are of the
order of the plan's whatever the cost's range (Schmitzer 2019): the same updates as the log domain at the price
of the scaling domain. A stage whose scalings leave ``[1e-30, 1e30]`` (a cost far from the one the potentials
solved, where entries of the absorbed kernel under- or overflow) is redone in the log domain.

Why our own code and not POT: POT's scaling-domain ``ot.sinkhorn`` returns NaN/zeros once ``C/ε`` is large
(ε=1e-3, C~1e3), and its log-domain solver has no ε-scaling (neither claim is benchmarked in this repository;
the tests compare our plans with POT's exact ``ot.emd``). The plan is computed without autograd; the loss
:math:`\langle T^\star, C\rangle` is differentiated with respect to ``C`` only (the envelope theorem gives
:math:`\partial\,\mathrm{OT}_\varepsilon/\partial C = T^\star`), which costs one matrix product.
"""

from __future__ import annotations

import math

import torch

__all__ = ["sinkhorn_plan", "round_to_marginals", "scaling_is_safe", "SCALING_LIMIT"]


def check_epsilon(epsilon: float, name: str = "epsilon") -> float:
    """``epsilon`` as a float; ``ValueError`` naming ``name`` unless it is a positive finite number."""
    try:
        value = float(epsilon)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a positive finite number, got {epsilon!r}") from None
    if not (value > 0 and math.isfinite(value)):
        raise ValueError(f"{name} must be a positive finite number, got {epsilon!r}")
    return value


EPS_FLOOR = 1e-12  # relative to max|C|: below it the entropic plan is the ε→0 plan to float64 precision


def floor_epsilon(epsilon: float, cost: torch.Tensor) -> float:
    """``epsilon`` raised to ``EPS_FLOOR·max|C|`` where smaller: the same plan to float64 precision, while
    ``C/ε`` and the gradients stay finite and ε-scaling needs at most ~20 stages."""
    return max(epsilon, EPS_FLOOR * float(cost.detach().abs().max()))


# largest (max C - min C) / ε for the scaling-domain solver: K = exp(-C/ε) >= e^-limit, and the scalings u, v
# (of order e^(±2·limit) / nm at worst) stay far inside the dtype's range
SCALING_LIMIT = {torch.float64: 50.0, torch.float32: 30.0}


def scaling_is_safe(cost: torch.Tensor, epsilon: float, dtype: torch.dtype = torch.float64) -> bool:
    """Whether ``cost``'s range over ``epsilon`` is within ``SCALING_LIMIT[dtype]`` (one host sync)."""
    limit = SCALING_LIMIT.get(dtype)
    if limit is None:
        return False
    c = cost.detach()
    return float(c.max() - c.min()) <= limit * epsilon


def _scale(k: torch.Tensor, u: torch.Tensor, v: torch.Tensor, a: torch.Tensor, b: torch.Tensor, max_iter: int,
           tol: float, check_every: int, bound: float | None = None) -> tuple[torch.Tensor, torch.Tensor] | None:
    """Sinkhorn's scaling updates :math:`u \leftarrow a / Kv,\ v \leftarrow b / K^\top u` from ``(u, v)``, up to
    ``max_iter`` of them, stopping at a check (every ``check_every`` iterations, on the row marginal
    :math:`u \odot Kv` that the next update computes anyway) whose L1 error is below ``tol``.

    With ``bound``, every ``u`` and ``v`` must stay within ``[1/bound, bound]`` (tracked on each iteration, read
    at the checks and at the end) and every checked marginal finite, else ``None``."""
    extremes: list[torch.Tensor] = []

    def in_range() -> bool:
        if not extremes:
            return True
        lo_hi = torch.stack(extremes)
        extremes.clear()
        return bool((lo_hi.min() >= 1.0 / bound) & (lo_hi.max() <= bound))  # False on NaN too

    for it in range(max_iter):
        kv = k @ v
        if it and it % check_every == 0:
            err = float((u * kv - a).abs().sum())
            if bound is not None and not (math.isfinite(err) and in_range()):
                return None
            if err < tol:
                break
        u = a / kv
        v = b / (k.T @ u)
        if bound is not None:
            extremes += [*torch.aminmax(u), *torch.aminmax(v)]
    if bound is not None and not in_range():
        return None
    return u, v


def _scaling_iterations(c: torch.Tensor, schedule: list[float], a: torch.Tensor, b: torch.Tensor,
                        f: torch.Tensor, g: torch.Tensor, max_iter: int, tol: float,
                        check_every: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The Sinkhorn stages of :func:`sinkhorn_plan` in the scaling domain; potentials in, potentials out."""
    low = c.min()
    c0 = c - low  # K <= 1; the shift goes into f
    f = f - low
    for eps in schedule:
        u, v = _scale(torch.exp(-c0 / eps), torch.exp(f / eps), torch.exp(g / eps), a, b, max_iter, tol,
                      check_every)  # type: ignore[misc]
        f, g = eps * torch.log(u), eps * torch.log(v)
    return f + low, g


def _stabilized_iterations(c: torch.Tensor, epsilon: float, a: torch.Tensor, b: torch.Tensor, f: torch.Tensor,
                           g: torch.Tensor, max_iter: int, tol: float, check_every: int,
                           bound: float = 1e30) -> tuple[torch.Tensor, torch.Tensor] | None:
    """Warm-started Sinkhorn at one ε in the scaling domain on a kernel that absorbs the potentials.

    :math:`\tilde K = e^{(f_i + g_j - C_{ij})/\varepsilon}` is the current plan, and the iterations
    :math:`u \leftarrow a / \tilde K v,\ v \leftarrow b / \tilde K^\top u` from :math:`u = v = 1` are the
    log-domain ones with :math:`f + \varepsilon\log u,\ g + \varepsilon\log v` as potentials (Schmitzer 2019,
    "stabilized scaling"): two matrix-vector products an iteration for any cost range. This is exact while the
    scalings stay within ``[1/bound, bound]``: an entry of ``K̃`` that underflowed to 0 (below e^-745) would then
    weigh at most e^-745·bound² ≈ e^-607 in the plan. Near the solution (a warm start from the previous training
    step) they stay close to 1. Once any ``u`` or ``v`` leaves that range, or a marginal is not finite (an entry
    overflowed), the answer is ``None`` and the caller redoes the stage in the log domain from the same start
    (:func:`_scale` tracks the range on every iteration and reads it at the checks, which come on the same
    iterations as in the log-domain loop of :func:`sinkhorn_plan`, so both stop after the same number of updates).
    """
    scaled = _scale(torch.exp((f[:, None] + g[None, :] - c) / epsilon), torch.ones_like(a), torch.ones_like(b),
                    a, b, max_iter, tol, check_every, bound)
    if scaled is None:
        return None
    u, v = scaled
    f, g = f + epsilon * torch.log(u), g + epsilon * torch.log(v)
    if not bool(torch.isfinite(f).all() & torch.isfinite(g).all()):
        return None
    return f, g


def round_to_marginals(plan: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Project an approximately feasible plan onto ``U(a, b)`` (Altschuler et al. 2017, Algorithm 2).

    Differentiable with finite gradients (no division by a vanishing row/column sum or error total).
    """
    row = plan.sum(1)
    over = row > a  # scale down only rows above their marginal: min(a / row, 1), without a / 0 in the graph
    plan = plan * torch.where(over, a / torch.where(over, row, torch.ones_like(row)), torch.ones_like(row))[:, None]
    col = plan.sum(0)
    over = col > b
    plan = plan * torch.where(over, b / torch.where(over, col, torch.ones_like(col)), torch.ones_like(col))[None, :]
    # both errors are >= 0 in exact arithmetic; clamp the rounding noise so the plan stays non-negative
    err_a = (a - plan.sum(1)).clamp_min(0)
    err_b = (b - plan.sum(0)).clamp_min(0)
    total = err_a.sum()
    if total > torch.finfo(plan.dtype).tiny ** 0.5:  # smaller errors are below rounding; total**2 must not underflow
        plan = plan + torch.outer(err_a, err_b) / total
    return plan


@torch.no_grad()
def sinkhorn_plan(
    cost: torch.Tensor,
    epsilon: float = 0.05,
    a: torch.Tensor | None = None,
    b: torch.Tensor | None = None,
    max_iter: int = 100,
    tol: float = 1e-6,
    scaling_steps: int | None = None,
    dtype: torch.dtype = torch.float64,
    round_plan: bool = True,
    init: tuple[torch.Tensor, torch.Tensor] | None = None,
    return_potentials: bool = False,
    method: str = "log",
    check_every: int = 5,
) -> torch.Tensor | tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
    """The entropic transport plan for ``cost`` [n, m] (uniform marginals unless ``a``/``b`` given).

    Args:
        cost: the cost matrix; any float dtype (computed in ``dtype``, returned in it too).
        epsilon: entropic regularisation (absolute, in the cost's units); must be > 0 (else ``ValueError``);
            values below ``1e-12·max|cost|`` act as that (see :func:`floor_epsilon`).
        max_iter: Sinkhorn iterations at the target ε (each ε-scaling stage also gets at most this many).
        tol: stop a stage once the L1 error of the row marginal is below ``tol``.
        scaling_steps: ε-scaling stages before the target; default: enough to go from the cost's range to
            ``epsilon`` by factors of 4 (0 when ε already exceeds the range).
        round_plan: round onto the exact marginals at the end.
        init: dual potentials ``(f, g)`` to warm-start from (e.g. the previous training step's); ε-scaling is
            then skipped unless ``scaling_steps`` is given.
        return_potentials: also return the final ``(f, g)``.
        method: ``"log"`` (any cost), ``"scaling"`` (bounded costs only, see the module docstring),
            ``"stabilized"`` (the scaling domain on a kernel that absorbs the potentials: any cost, fast from a
            warm start; a stage that under- or overflows is redone in the log domain, see
            :func:`_stabilized_iterations`) or ``"auto"``: scaling when no ``init`` is given and
            :func:`scaling_is_safe` for the target ε, stabilized when ``init`` is given, else log.
        check_every: iterations between convergence checks (each one a host sync on a GPU).
    """
    if method not in ("log", "scaling", "stabilized", "auto"):
        raise ValueError(f"method must be 'log', 'scaling', 'stabilized' or 'auto', got {method!r}")
    if check_every < 1:
        raise ValueError(f"check_every must be >= 1, got {check_every}")
    epsilon = check_epsilon(epsilon)
    if cost.ndim != 2 or 0 in cost.shape:
        raise ValueError(f"cost must be a non-empty [n, m] matrix (no transport plan otherwise), got shape "
                         f"{tuple(cost.shape)}")
    if not torch.isfinite(cost).all():
        raise ValueError("cost contains NaN or Inf")
    c = cost.detach().to(dtype)
    n, m = c.shape
    epsilon = floor_epsilon(epsilon, c)
    a = torch.full((n,), 1.0 / n, dtype=dtype, device=c.device) if a is None else a.detach().to(dtype)
    b = torch.full((m,), 1.0 / m, dtype=dtype, device=c.device) if b is None else b.detach().to(dtype)
    log_a, log_b = torch.log(a), torch.log(b)
    if scaling_steps is None:
        spread = float(c.max() - c.min())
        scaling_steps = 0 if init is not None else max(0, math.ceil(math.log(max(spread, epsilon) / epsilon, 4)))
    schedule = [epsilon * 4.0 ** s for s in range(scaling_steps, 0, -1)] + [epsilon]
    if init is not None and init[0].shape == (n,) and init[1].shape == (m,):
        f, g = init[0].detach().to(dtype), init[1].detach().to(dtype)
    else:
        f = torch.zeros(n, dtype=dtype, device=c.device)
        g = torch.zeros(m, dtype=dtype, device=c.device)
    scaling = method == "scaling" or (method == "auto" and init is None and scaling_is_safe(c, epsilon, dtype))
    stabilized = method == "stabilized" or (method == "auto" and init is not None and not scaling)
    if scaling:
        f, g = _scaling_iterations(c, schedule, a, b, f, g, max_iter, tol, check_every)
    else:
        for eps in schedule:
            done = _stabilized_iterations(c, eps, a, b, f, g, max_iter, tol, check_every) if stabilized else None
            if done is not None:
                f, g = done
                continue
            for it in range(max_iter):
                f = eps * (log_a - torch.logsumexp((g[None, :] - c) / eps, dim=1))
                g = eps * (log_b - torch.logsumexp((f[:, None] - c) / eps, dim=0))
                if it % check_every == check_every - 1 or it == max_iter - 1:
                    row = torch.exp((f[:, None] + g[None, :] - c) / eps).sum(1)
                    if float((row - a).abs().sum()) < tol:
                        break
    plan = torch.exp((f[:, None] + g[None, :] - c) / epsilon)
    if round_plan:
        plan = round_to_marginals(plan, a, b)
    return (plan, (f, g)) if return_potentials else plan
