r"""Feature alignment as one module: per item modality a view of the LM features, and the losses that pull the
views and an item representation together. What RecGOAT adds to LightGCN, and what ``<Backbone>+Align``
adds to any recommender (``recgoat_recbole.aligned``); plain PyTorch, usable in any training loop.

For each modality :math:`m` with features :math:`X^m \in \mathbb R^{I\times d_m}` and an item representation
:math:`Z \in \mathbb R^{I\times d}` (the recommender's own item vectors),

.. math::
    H^m = \mathrm{GAT}_m\big(X^m W_m + b_m,\ \mathcal G^m_{kNN}\big), \qquad
    \tilde Z^m = s\cdot\mathrm{OAT}_m(H^m, Z) = s\,H^m (d\,T^m + \Delta_m),

where :math:`\mathcal G^m_{kNN}` is the frozen cosine top-k graph of :math:`X^m` (the GAT is optional,
``use_gat``), the OAT map is optional (``use_oat``) and :math:`s` rescales :math:`\tilde Z^m` to the RMS row norm
of :math:`Z` without gradient (``match_scale``). Over the distinct items :math:`B` of a batch,

.. math::
    \mathcal L_{align} = \lambda_c \sum_m w_m\,\mathrm{InfoNCE}_\tau(\tilde Z^m_B, Z_B)
                       + \lambda_{ot} \sum_m w_m\,W_\varepsilon(\tilde Z^m_B, Z_B),

with per-modality weights :math:`w_m` (default 1)
(:mod:`recgoat_core.alignment.cmcl`, :mod:`recgoat_core.alignment.wasserstein`; ``align_max_items`` makes B a
random subset of the batch's distinct items, ``cmcl_max_items`` bounds the InfoNCE batch to a random subset of
B); with ``detach_target`` the
target :math:`Z_B` gets no gradient. :meth:`FeatureAlignment.blend` puts the views into the score:
:math:`(1-\gamma) Z + \gamma\,\frac1M\sum_m \tilde Z^m`.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, Iterable, Mapping

import torch
from torch import nn

from recgoat_core.alignment import CMCLoss, OATMap, WassersteinLoss
from recgoat_core.graphs import knn_graph
from recgoat_core.layers import GAT, AttentionGraph

__all__ = ["AlignmentSettings", "FeatureAlignment"]


@dataclass(frozen=True)
class AlignmentSettings:
    """The settings of :class:`FeatureAlignment`; the names are the RecBole config keys (docs/config.md)."""

    embedding_size: int = 64
    use_gat: bool = True
    knn_k: int = 10
    knn_chunk_size: int = 2048
    gat_layers: int = 1
    gat_heads: int = 8
    gat_dropout: float = 0.1
    use_oat: bool = True
    oat_epsilon: float = 0.01
    oat_cost_scale: float = 100.0
    oat_iters: int = 100
    oat_scale_plan: bool = True
    oat_residual_init: str = "zeros"
    oat_plan_grad: bool = False
    cmcl_weight: float = 0.032
    cmcl_temperature: float = 0.2
    cmcl_max_items: int | None = None
    align_max_items: int | None = None
    oat_plan_every: int = 1
    wasserstein_weight: float = 0.001
    wasserstein_epsilon: float = 0.1
    wasserstein_iters: int = 30
    wasserstein_sample_size: int = 128
    match_scale: bool = True
    align_detach_target: bool = False

    @classmethod
    def from_config(cls, config: Mapping[str, Any] | Any) -> "AlignmentSettings":
        """The settings held by ``config`` (a dict or a RecBole ``Config``); keys it lacks keep their default."""
        values = {}
        for field in fields(cls):
            try:
                value = config[field.name]
            except KeyError:
                continue
            if value is not None:
                values[field.name] = value
        return cls(**values)


class FeatureAlignment(nn.Module):
    """The modality views and alignment losses of the module docstring, for a fixed set of item features.

    Args:
        features: ``{modality: [n_items, d_m] tensor}``, rows = item ids of the recommender.
        settings: :class:`AlignmentSettings` (or a mapping of config keys).
        build_device: where to build the kNN graphs (the graphs are then kept on the CPU until ``.to()``).
        knn_edges: ``{modality: edge_index}`` built already (by :func:`recgoat_core.graphs.knn_graph`), to
            reuse instead of building them again.
        modality_weights: ``{modality: w}`` multiplying that modality's terms in :meth:`loss` (default 1; 0
            turns its alignment off, e.g. when its features carry no signal: :mod:`recgoat_core.feature_signal`).
    """

    def __init__(self, features: Mapping[str, torch.Tensor], settings: AlignmentSettings | Mapping[str, Any],
                 build_device: torch.device | str | None = None,
                 knn_edges: Mapping[str, torch.Tensor] | None = None,
                 modality_weights: Mapping[str, float] | None = None) -> None:
        super().__init__()
        s = settings if isinstance(settings, AlignmentSettings) else AlignmentSettings.from_config(settings)
        self.settings = s
        self.modalities = sorted(features)
        unknown = set(modality_weights or {}) - set(self.modalities)
        if unknown:
            raise ValueError(f"modality_weights names unknown modalities {sorted(unknown)}")
        self.modality_weights = {m: float((modality_weights or {}).get(m, 1.0)) for m in self.modalities}
        self.projections = nn.ModuleDict()
        self.graphs = nn.ModuleDict()
        self.gats = nn.ModuleDict()
        self.oat_maps = nn.ModuleDict()
        self.n_items = None
        # module creation order (Linear, GAT, OAT per modality) fixes the random initialisation: keep it
        for name in self.modalities:
            x = torch.as_tensor(features[name], dtype=torch.float32)
            if x.ndim != 2:
                raise ValueError(f"modality {name!r}: features must be [n_items, dim], got {tuple(x.shape)}")
            if self.n_items is not None and len(x) != self.n_items:
                raise ValueError(f"modality {name!r} has {len(x)} rows, the others {self.n_items}")
            self.n_items = len(x)
            self.register_buffer(f"feat_{name}", x, persistent=False)
            self.projections[name] = nn.Linear(x.shape[1], s.embedding_size)
            if s.use_gat:
                edges = (knn_edges or {}).get(name)
                if edges is None:
                    edges = knn_graph(x, s.knn_k, s.knn_chunk_size, device=build_device)
                self.graphs[name] = AttentionGraph(edges, len(x), s.gat_heads)
                self.gats[name] = GAT(s.embedding_size, s.gat_layers, s.gat_heads, s.gat_dropout)
            if s.use_oat:
                self.oat_maps[name] = OATMap(s.embedding_size, s.oat_epsilon, s.oat_cost_scale, s.oat_iters,
                                             s.oat_scale_plan, s.oat_residual_init, s.oat_plan_grad)
        self.cmcl = CMCLoss(s.cmcl_temperature, s.cmcl_max_items)
        self.wasserstein = WassersteinLoss(s.wasserstein_epsilon, s.wasserstein_iters, s.wasserstein_sample_size)
        if s.align_max_items is not None and s.align_max_items < 1:
            raise ValueError(f"align_max_items must be None or >= 1, got {s.align_max_items}")
        if s.oat_plan_every < 1:
            raise ValueError(f"oat_plan_every must be >= 1, got {s.oat_plan_every}")
        #: ``oat_plan_every`` > 1: per modality, [plan or None, RMS row norm of the whole view, steps it served]
        self._reused: dict[str, list] = {}

    def train(self, mode: bool = True) -> "FeatureAlignment":
        self._reused = {}  # each epoch (RecBole calls train() before each) starts from a fresh plan
        return super().train(mode)

    def _apply(self, *args, **kwargs):
        self._reused = {}  # (.to(): the kept plans would be on the old device)
        return super()._apply(*args, **kwargs)

    @property
    def features(self) -> dict[str, torch.Tensor]:
        return {name: getattr(self, f"feat_{name}") for name in self.modalities}

    @property
    def aligned(self) -> list[str]:
        """The modalities :meth:`loss` trains: weight > 0 and a term switched on (else none)."""
        if not (self.settings.cmcl_weight > 0 or self.settings.wasserstein_weight > 0):
            return []
        return [m for m in self.modalities if self.modality_weights[m] > 0]

    @property
    def has_loss(self) -> bool:
        """Whether :meth:`loss` has any term switched on (and any modality to apply it to)."""
        return bool(self.aligned)

    def views(self, item_rep: torch.Tensor, modalities: Iterable[str] | None = None,
              rows: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        r""":math:`\tilde Z^m` for every modality (or only those in ``modalities``), aligned to ``item_rep``
        [n_items, d] (all items). ``rows`` (a boolean mask over the items): only those rows of ``item_rep`` shape
        the views (the OAT plan and the scale), e.g. the items with training interactions, so that an untrained
        item vector reaches no view; ``None``: every row."""
        wanted = set(self.modalities if modalities is None else modalities)
        names = [m for m in self.modalities if m in wanted]
        reference = item_rep if rows is None else item_rep[rows]
        views = {}
        for name in names:
            h = self.projections[name](getattr(self, f"feat_{name}"))
            if self.settings.use_gat:
                h = self.gats[name](h, self.graphs[name])
            if self.settings.use_oat:
                h, _ = self.oat_maps[name](h, item_rep, rows=rows)
            views[name] = self.scaled_like(h, reference)
        return views

    def scaled_like(self, x: torch.Tensor, reference: torch.Tensor, whole: torch.Tensor | None = None) -> torch.Tensor:
        """``x`` rescaled to the RMS row norm of ``reference`` when ``match_scale`` (the factor has no gradient);
        ``whole``: the matrix whose RMS row norm is matched when ``x`` holds only some of its rows (default ``x``).

        LM features and ID embeddings live on very different scales; without this, a view with a small fusion
        weight still dominates the fused vector.
        """
        if not self.settings.match_scale:
            return x
        return self._scaled(x, reference, _rms(x if whole is None else whole))

    def _scaled(self, x: torch.Tensor, reference: torch.Tensor, whole_rms: torch.Tensor) -> torch.Tensor:
        """:meth:`scaled_like` with the whole matrix's RMS row norm given (:func:`_rms`)."""
        if not self.settings.match_scale:
            return x
        return x * (reference.detach().pow(2).sum(1).mean().sqrt() / whole_rms)

    def batch_items(self, items: torch.Tensor) -> torch.Tensor:
        """The distinct ``items`` (sorted) whose views the alignment terms of a step compare: all of them, or
        with ``align_max_items = M`` and more than M of them, M drawn uniformly at random (``torch.randperm``
        on their device, so the draw follows ``torch.manual_seed``; with M or fewer, nothing is drawn)."""
        batch = torch.unique(items)
        m = self.settings.align_max_items
        if m is not None and len(batch) > m:
            batch = batch[torch.randperm(len(batch), device=batch.device)[:m]].sort().values
        return batch

    def batch_views(self, item_rep: torch.Tensor, items: torch.Tensor, modalities: Iterable[str] | None = None,
                    rows: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        r"""``views(item_rep, modalities, rows)[m][items]`` for each modality: the same values and gradients, with
        autograd over the rows ``items`` only. Where a view's row depends on its own features alone (no GAT, an
        OAT plan without autograd) every item is projected once without autograd, for the OAT plan and the scale,
        and the rows ``items`` once more with it: a training step's views, when they do not enter the score, then
        cost one projection of the items and a backward pass over the batch's rows instead of every item's.
        With the GAT or ``oat_plan_grad`` every row has a gradient: the views of every item, indexed.

        ``oat_plan_every = N`` > 1 (in training): the projection of every item, the OAT plan fitted on it and the
        whole view's RMS row norm (for ``match_scale``) are computed on one step in N, and on the steps between
        the last plan (with the current residual Δ) and norm are reused, so those steps project the rows
        ``items`` alone. The kept plans are dropped by ``train()`` (each epoch) and ``.to()``; in eval mode every
        call computes them afresh."""
        s = self.settings
        if s.use_gat or (s.use_oat and s.oat_plan_grad):
            return {m: v[items] for m, v in self.views(item_rep, modalities, rows).items()}
        wanted = set(self.modalities if modalities is None else modalities)
        reference = item_rep if rows is None else item_rep[rows]
        views = {}
        for name in [m for m in self.modalities if m in wanted]:
            features, projection = getattr(self, f"feat_{name}"), self.projections[name]
            h = projection(nn.functional.embedding(items, features))  # features[items]: the fastest row gather on CPU
            if not (s.use_oat or s.match_scale):
                views[name] = h  # (nothing reads the other items)
                continue
            reuse = self.training and s.oat_plan_every > 1
            kept = self._reused.get(name) if reuse else None
            if kept is not None and kept[2] < s.oat_plan_every:  # a step between two plans
                plan, whole_rms = kept[0], kept[1]
                kept[2] += 1
                if s.use_oat:
                    h = h @ self.oat_maps[name].map_of(plan).to(h.dtype)
                views[name] = self._scaled(h, reference, whole_rms)
                continue
            with torch.no_grad():
                whole = projection(features)
            plan = None
            if s.use_oat:
                mapping, plan = self.oat_maps[name].mapping(whole, item_rep, rows)
                h = h @ mapping.to(h.dtype)
                with torch.no_grad():
                    whole = whole @ mapping.to(whole.dtype)
            whole_rms = _rms(whole)
            if reuse:
                self._reused[name] = [plan, whole_rms, 1]
            views[name] = self._scaled(h, reference, whole_rms)
        return views

    def loss(self, views: Mapping[str, torch.Tensor], item_rep: torch.Tensor,
             items: torch.Tensor) -> list[torch.Tensor]:
        r"""The switched-on terms of :math:`\mathcal L_{align}` (weighted) over the distinct ``items`` of a batch
        (:meth:`batch_items`: a random subset of them under ``align_max_items``):
        ``[λ_c Σ_m InfoNCE]`` and/or ``[λ_ot Σ_m W]`` (an empty list when every term is off)."""
        if not views or not self.has_loss:
            return []
        batch = self.batch_items(items)
        return self.batch_loss({m: v[batch] for m, v in views.items()}, item_rep[batch])

    def batch_loss(self, views: Mapping[str, torch.Tensor], target: torch.Tensor) -> list[torch.Tensor]:
        """:meth:`loss` with the views and the item representation already at the batch's distinct items (in
        the same order; e.g. from :meth:`batch_views` at ``torch.unique(items)``)."""
        s = self.settings
        if not views or not self.has_loss:
            return []
        if s.align_detach_target:  # move the LM views towards the item representation, not the reverse
            target = target.detach()
        weighted = [(self.modality_weights.get(m, 1.0), v) for m, v in views.items()]
        weighted = [(w, v) for w, v in weighted if w > 0]
        terms = []
        if s.cmcl_weight > 0:
            terms.append(s.cmcl_weight * sum(w * self.cmcl(v, target) for w, v in weighted))
        if s.wasserstein_weight > 0:
            terms.append(s.wasserstein_weight * sum(w * self.wasserstein(v, target) for w, v in weighted))
        return terms

    def blend(self, item_rep: torch.Tensor, views: Mapping[str, torch.Tensor], gamma: float) -> torch.Tensor:
        r""":math:`(1-\gamma) Z + \gamma\,\mathrm{mean}_m \tilde Z^m` over the given views (``item_rep`` itself
        when γ = 0 or no view)."""
        if gamma == 0 or not views:
            return item_rep
        return (1.0 - gamma) * item_rep + gamma * torch.stack([views[m] for m in sorted(views)]).mean(0)

    def extra_repr(self) -> str:
        s = self.settings
        return (f"modalities={self.modalities}, use_gat={s.use_gat}, use_oat={s.use_oat}, "
                f"cmcl_weight={s.cmcl_weight}, wasserstein_weight={s.wasserstein_weight}")


def _rms(x: torch.Tensor) -> torch.Tensor:
    """The RMS row norm of ``x`` without gradient (at least 1e-12): the ``whole`` of :meth:`FeatureAlignment.scaled_like`."""
    return x.detach().pow(2).sum(1).mean().sqrt().clamp_min(1e-12)
