r"""Entropic 1-Wasserstein distance between two point clouds: RecGOAT's distribution-level loss term.

For clouds :math:`\{x_i\}_{i=1}^n`, :math:`\{y_j\}_{j=1}^m` with uniform weights and Euclidean ground cost
:math:`C_{ij} = \|\hat x_i - \hat y_j\|_2` (on L2-normalised points by default, as the paper's W term does),

.. math::
    W_\varepsilon(X, Y) = \langle T_\varepsilon, C\rangle, \qquad T_\varepsilon = \mathrm{Sinkhorn}(C, \varepsilon)
    \ (\text{rounded to the exact marginals}),

so :math:`W_\varepsilon \ge W_1` always and :math:`W_\varepsilon \to W_1` as ε → 0. The gradient flows into
``x`` and ``y`` through ``C`` with the plan held fixed (envelope theorem). The paper minimises W1 between
each aligned modality and the unified representation; the authors' code omits the term, we weight it by
``lambda_ot``.

The costs of normalised points lie in [0, 2], so for ε ≥ 2/30 the plan comes from the scaling-domain solver in
float32 (and for ε ≥ 2/50 in float64; ``method="auto"`` of :func:`~recgoat_core.alignment.sinkhorn.sinkhorn_plan`:
matrix-vector products instead of log-sum-exps); smaller ε, or unnormalised clouds with a wide cost range, use the log domain in
float64 as before.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from recgoat_core.alignment.sinkhorn import check_epsilon, scaling_is_safe, sinkhorn_plan

__all__ = ["pairwise_euclidean", "wasserstein_distance", "WassersteinLoss"]


def pairwise_euclidean(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """[n, m] Euclidean distances, with a finite gradient where two points coincide."""
    sq = (x * x).sum(1, keepdim=True) + (y * y).sum(1)[None, :] - 2 * x @ y.T
    return torch.sqrt(sq.clamp_min(1e-12))


def wasserstein_distance(
    x: torch.Tensor,
    y: torch.Tensor,
    epsilon: float = 0.05,
    max_iter: int = 100,
    normalize: bool = True,
    scaling_steps: int | None = None,
    method: str = "auto",
    check_every: int = 10,
) -> torch.Tensor:
    """Entropic W1 between the rows of ``x`` [n, d] and ``y`` [m, d] (uniform weights); a scalar.

    Half-precision inputs are upcast to float32 for the cost; Sinkhorn runs in float64, or in float32 where the
    scaling-domain solver is safe there (``method="auto"``; ``"log"`` forces the log-domain solver in float64,
    see :func:`sinkhorn_plan` for ``method`` and ``check_every``); the result has dtype float32 (or float64
    for float64 inputs). ``scaling_steps``: see :func:`sinkhorn_plan` (0 turns
    ε-scaling off: right for a training loss at moderate ε, where speed matters more than the last digit).
    Two empty clouds (an empty batch) give 0, connected to the inputs; one empty cloud is a ``ValueError``.
    """
    check_epsilon(epsilon)
    if x.ndim != 2 or y.ndim != 2 or x.shape[1] != y.shape[1]:
        raise ValueError(f"x and y must be [n, d] and [m, d], got {tuple(x.shape)} and {tuple(y.shape)}")
    dtype = torch.promote_types(torch.promote_types(x.dtype, y.dtype), torch.float32)
    x, y = x.to(dtype), y.to(dtype)
    if len(x) == 0 or len(y) == 0:
        if len(x) or len(y):
            raise ValueError(f"W1 between an empty and a non-empty cloud is undefined, got shapes "
                             f"{tuple(x.shape)} and {tuple(y.shape)}")
        return x.sum() + y.sum()  # nothing to align: 0, with a grad_fn reaching x and y
    if normalize:
        x, y = F.normalize(x, dim=-1), F.normalize(y, dim=-1)
    cost = pairwise_euclidean(x, y)
    solver_dtype = torch.float64
    if method == "auto" and dtype == torch.float32 and scaling_is_safe(cost, epsilon, torch.float32):
        solver_dtype = torch.float32
    plan = sinkhorn_plan(cost, epsilon=epsilon, max_iter=max_iter, scaling_steps=scaling_steps, dtype=solver_dtype,
                         method=method, check_every=check_every)
    return (plan.to(dtype) * cost).sum()


def _sample_rows(x: torch.Tensor, size: int) -> torch.Tensor:
    if len(x) <= size:
        return x
    return x[torch.randperm(len(x), device=x.device)[:size]]


class WassersteinLoss(nn.Module):
    """:func:`wasserstein_distance` as a module; ``sample_size`` caps the points used per call."""

    def __init__(self, epsilon: float = 0.1, max_iter: int = 30, sample_size: int | None = 128,
                 normalize: bool = True, scaling_steps: int | None = 0, method: str = "auto") -> None:
        super().__init__()
        epsilon = check_epsilon(epsilon, "WassersteinLoss epsilon")
        self.epsilon, self.max_iter, self.sample_size, self.normalize = epsilon, max_iter, sample_size, normalize
        self.scaling_steps, self.method = scaling_steps, method

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if self.sample_size is not None and max(len(x), len(y)) > self.sample_size:
            if len(x) == len(y):  # paired views of the same items (as in RecGOAT): keep pairs together
                keep = torch.randperm(len(x), device=x.device)[: self.sample_size]
                x, y = x[keep], y[keep]
            else:
                x, y = _sample_rows(x, self.sample_size), _sample_rows(y, self.sample_size)
        return wasserstein_distance(x, y, self.epsilon, self.max_iter, self.normalize, self.scaling_steps, self.method)

    def extra_repr(self) -> str:
        return f"epsilon={self.epsilon}, max_iter={self.max_iter}, sample_size={self.sample_size}, method={self.method}"
