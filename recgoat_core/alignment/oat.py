r"""Optimal adaptive transport (OAT): RecGOAT's dimension-level transport map with a learnable residual.

For a modality representation :math:`Z^m \in \mathbb R^{I\times d}` and the ID representation
:math:`Z^{id} \in \mathbb R^{I\times d}` of the same I items, the cost between embedding *dimensions* is

.. math::
    C^m_{ab} = \frac1I\sum_i (z^m_{ia} - z^{id}_{ib})^2
             = \overline{(z^m_a)^2} + \overline{(z^{id}_b)^2} - \tfrac{2}{I}\,(Z^{m\top} Z^{id})_{ab},

computed from the right-hand side, so memory is O(d²) (no [I, d, d] tensor). With the plan
:math:`T^m = \mathrm{Sinkhorn}(s\,C^m, \varepsilon)` under uniform marginals 1/d, the aligned representation is

.. math::
    \tilde Z^m = Z^m\,(d\,T^m + \Delta_m),

where :math:`d\,T^m` is row-stochastic (a soft permutation of dimensions) and :math:`\Delta_m` is a learnable
d×d residual. ``scale_plan=False`` uses :math:`T^m` without the factor d, and ``residual_init="xavier"`` a
Xavier-initialised Δ, as in the authors' code; our default is ``d·T`` with Δ = 0, so training starts from
the pure transport map. Successive calls warm-start Sinkhorn from the previous call's dual potentials
(the cost moves little between training steps), so after the first call a handful of iterations reach the
tolerance, and those run in the scaling domain on a kernel that absorbs the potentials (``method="auto"`` of
:func:`~recgoat_core.alignment.sinkhorn.sinkhorn_plan`: two 64 × 64 matrix-vector products an iteration
instead of two log-sum-exps, the same plan to rounding; docs/results.md, "Speed and memory"); in eval
mode the map starts from the last training potentials and keeps no state, so evaluation is a pure function of
the trained parameters. The plan is computed without autograd by default
(``plan_grad=False``): gradients reach :math:`Z^m` through the map and Δ; ``plan_grad=True`` differentiates the plan by unrolled log-domain
iterations instead (in float64, rounded onto the marginals: a valid plan with finite gradients at any ε > 0).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from recgoat_core.alignment.sinkhorn import check_epsilon, floor_epsilon, round_to_marginals, sinkhorn_plan

__all__ = ["dimension_cost", "OATMap"]


def dimension_cost(z_m: torch.Tensor, z_id: torch.Tensor) -> torch.Tensor:
    """:math:`C_{ab} = \\mathrm{mean}_i (z^m_{ia} - z^{id}_{ib})^2` as a [d_m, d_id] matrix, in O(d²) memory."""
    if z_m.ndim != 2 or z_id.ndim != 2 or len(z_m) != len(z_id):
        raise ValueError(f"z_m and z_id must be [I, d] over the same items, got {tuple(z_m.shape)}, {tuple(z_id.shape)}")
    n = len(z_m)
    cost = (z_m * z_m).mean(0)[:, None] + (z_id * z_id).mean(0)[None, :] - 2.0 * (z_m.T @ z_id) / n
    return cost.clamp_min(0.0)


def _unrolled_plan(cost: torch.Tensor, epsilon: float, n_iter: int) -> torch.Tensor:
    """Differentiable log-domain Sinkhorn with uniform marginals (used when ``plan_grad=True``).

    Computed in float64 on ``K = C/ε`` with potentials in units of ε, so no step multiplies a rounding error
    by 1/ε; ε below ``1e-12·max|C|`` is raised to that (the same plan to float64 precision, and a bounded
    gradient). The plan is read off the last potentials as a softmax over each column (what
    ``exp(f + g - K)`` is after the last ``g`` update), then rounded onto the exact marginals as
    :func:`sinkhorn_plan` does: a valid plan summing to 1, with finite gradients, for any ε > 0.
    """
    c = cost.double()
    n, m = c.shape
    eps = floor_epsilon(epsilon, c)
    k = c / eps
    f = c.new_zeros(n)
    g = c.new_zeros(m)
    for _ in range(n_iter):
        f = -math.log(n) - torch.logsumexp(g[None, :] - k, dim=1)
        g = -math.log(m) - torch.logsumexp(f[:, None] - k, dim=0)
    plan = torch.softmax(f[:, None] - k, dim=0) / m
    return round_to_marginals(plan, c.new_full((n,), 1.0 / n), c.new_full((m,), 1.0 / m))


class OATMap(nn.Module):
    """The transport map :math:`Z^m \\mapsto Z^m (d\\,T^m + \\Delta_m)` of one modality."""

    def __init__(
        self,
        dim: int,
        epsilon: float = 1e-2,
        cost_scale: float = 100.0,
        n_iter: int = 100,
        scale_plan: bool = True,
        residual_init: str = "zeros",
        plan_grad: bool = False,
        tol: float = 1e-4,
    ) -> None:
        super().__init__()
        if residual_init not in ("zeros", "xavier"):
            raise ValueError(f"residual_init must be 'zeros' or 'xavier', got {residual_init!r}")
        epsilon = check_epsilon(epsilon, "OATMap epsilon")
        self.dim, self.epsilon, self.cost_scale, self.n_iter = dim, epsilon, cost_scale, n_iter
        self.scale_plan, self.plan_grad, self.tol = scale_plan, plan_grad, tol
        self.residual = nn.Parameter(torch.zeros(dim, dim))
        self._potentials: tuple[torch.Tensor, torch.Tensor] | None = None  # warm start across steps
        if residual_init == "xavier":
            nn.init.xavier_uniform_(self.residual)

    def plan(self, z_m: torch.Tensor, z_id: torch.Tensor) -> torch.Tensor:
        """The d×d transport plan between the dimensions of ``z_m`` and ``z_id`` (entries sum to 1)."""
        cost = self.cost_scale * dimension_cost(z_m.float(), z_id.float())
        if self.plan_grad:
            return _unrolled_plan(cost, self.epsilon, self.n_iter).to(z_m.dtype)
        if not self.training:
            # evaluation: start from the last training potentials and keep no state, so that repeated
            # evaluations of the same parameters give the same plan
            plan = sinkhorn_plan(cost, epsilon=self.epsilon, max_iter=self.n_iter, tol=self.tol,
                                 init=self._potentials, method="auto")
            return plan.to(z_m.dtype)
        plan, self._potentials = sinkhorn_plan(
            cost, epsilon=self.epsilon, max_iter=self.n_iter, tol=self.tol, init=self._potentials,
            return_potentials=True, method="auto",
        )
        return plan.to(z_m.dtype)

    def forward(self, z_m: torch.Tensor, z_id: torch.Tensor,
                rows: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns the aligned ``z_m`` [I, d] and the plan [d, d]. ``rows`` (a boolean mask or an index over the I
        items): the plan is fitted on those items only, then maps every row of ``z_m`` (so no row outside
        ``rows`` of ``z_id`` reaches the result)."""
        mapping, plan = self.mapping(z_m, z_id, rows)
        return z_m @ mapping.to(z_m.dtype), plan

    def mapping(self, z_m: torch.Tensor, z_id: torch.Tensor,
                rows: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        r"""The map :math:`d\,T^m + \Delta_m` [d, d] (its plan fitted on ``rows`` as in :meth:`forward`) and the
        plan; ``forward`` is ``z_m`` times the map."""
        plan = self.plan(z_m, z_id) if rows is None else self.plan(z_m[rows], z_id[rows])
        return self.map_of(plan), plan

    def map_of(self, plan: torch.Tensor) -> torch.Tensor:
        r"""The map :math:`d\,T + \Delta_m` of a given plan ``T`` (with the current residual Δ): what
        :meth:`mapping` returns for the plan it fits, e.g. to reuse a plan fitted a few steps earlier."""
        return (self.dim * plan if self.scale_plan else plan) + self.residual

    def extra_repr(self) -> str:
        return (f"dim={self.dim}, epsilon={self.epsilon}, cost_scale={self.cost_scale}, n_iter={self.n_iter}, "
                f"scale_plan={self.scale_plan}, plan_grad={self.plan_grad}")
