"""RecGOAT's alignment losses as plain PyTorch: no RecBole import, usable in any training loop.

- :class:`CMCLoss` / :func:`info_nce` -- instance-level cross-modal contrastive learning;
- :class:`OATMap` -- distribution-level optimal adaptive transport map (Sinkhorn plan + learnable residual);
- :class:`WassersteinLoss` / :func:`wasserstein_distance` -- entropic W1 between two point clouds;
- :func:`sinkhorn_plan` -- the stable log-domain Sinkhorn solver they share.
"""
from recgoat_core.alignment.cmcl import CMCLoss, alignment_bound, info_nce
from recgoat_core.alignment.oat import OATMap, dimension_cost
from recgoat_core.alignment.sinkhorn import round_to_marginals, sinkhorn_plan
from recgoat_core.alignment.wasserstein import WassersteinLoss, pairwise_euclidean, wasserstein_distance

__all__ = [
    "CMCLoss", "info_nce", "alignment_bound", "OATMap", "dimension_cost", "sinkhorn_plan",
    "round_to_marginals", "WassersteinLoss", "wasserstein_distance", "pairwise_euclidean",
]
