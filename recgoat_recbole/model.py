"""RecGOAT as a RecBole general recommender: thin glue between the graphs, layers and alignment losses.

Representations (the paper's §3.2-3.4; docs/method.md)::

    z_id            = LightGCN(user–item graph, rating-weighted)               users and items
    z_m             = GAT_m(Linear_m(x_m), item–item kNN graph of m)          each item modality m
    z~_m            = OAT_m(z_m, z_id) = z_m (d·T_m + Δ_m)                     distribution-level alignment
                      (then rescaled to the RMS norm of z_id when match_scale: true)
    z_i             = γ_id z_id_i + Σ_m γ_m z~_m_i                              fusion (fixed / learned / sum / concat)
    z_u             = z_id_u + γ_p GAT_p(Linear_p(p_u), user–user kNN graph)   optional user profiles
    score(u, i)     = z_u · z_i

Loss: BPR + λ_reg (‖U⁰_b‖ + ‖I⁰_b+‖ + ‖I⁰_b-‖)/B + λ_c Σ_m InfoNCE(z~_m, z) + λ_ot Σ_m W_ε(z~_m, z), the last two over the batch's
positive items (with ``align_detach_target`` the unified z is a fixed target: only the views move).
Every component can be switched off from the config (ablations).

Our extension (off by default, ``id_ssl_weight``): SGL's graph contrast on the ID branch. Each epoch draws two
edge-dropout subgraphs s₁, s₂ of the user–item graph (drop ratio ρ); with z', z'' LightGCN over them,

    + λ_ssl [InfoNCE_τ'(z'_U, z''_U) + InfoNCE_τ'(z'_I, z''_I)]

over the batch's distinct users U and positive items I (in-batch negatives; SGL takes all nodes).
"""

from __future__ import annotations

import logging

import torch
import torch.nn.functional as F
from recbole.model.abstract_recommender import GeneralRecommender
from recbole.model.init import xavier_normal_initialization
from recbole.model.loss import BPRLoss, EmbLoss
from recbole.utils import InputType
from torch import nn

from recgoat_core.alignment.cmcl import info_nce
from recgoat_core.feature_alignment import AlignmentSettings, FeatureAlignment
from recgoat_recbole.config_check import ConfigError, validate
from recgoat_recbole.dataset import features_for_model, modality_gate
from recgoat_recbole.graph_buffers import GraphBuffers
from recgoat_recbole.keys import rules
from recgoat_recbole.scoring import CachedScoring
from recgoat_core.graphs import (bipartite_adjacency, edge_dropout_adjacency, knn_graph, normalized_adjacency,
                                 rating_weights)
from recgoat_core.layers import GAT, AttentionGraph, lightgcn_propagate, symmetric_spmm

__all__ = ["RecGOAT", "FUSIONS"]

logger = logging.getLogger(__name__)

FUSIONS = ("fixed", "learned", "sum", "concat")


class RecGOAT(CachedScoring, GraphBuffers, GeneralRecommender):
    r"""RecGOAT (arXiv 2602.00682). Keys and defaults: :mod:`recgoat_recbole.keys`, docs/config.md.

    Attributes:
        item_features: ``dict[str, Tensor]`` -- each modality's LM features [n_items, dim_m] aligned to RecBole
            item ids by token (row 0 = padding).
        user_features: ``Tensor | None`` -- user-profile vectors [n_users, dim] or ``None``.
    """

    input_type = InputType.PAIRWISE

    def __init__(self, config, dataset) -> None:
        super().__init__(config, dataset)
        validate(config, rules("RecGOAT"))  # every key in its allowed range, or one ConfigError naming it
        features, profiles = features_for_model(config, dataset)  # the model–dataset contract
        self.dim = config["embedding_size"]
        self.n_layers = config["n_layers"]
        self.reg_weight = config["reg_weight"]
        self.id_only = bool(config["id_only"])
        self.use_gat = bool(config["use_gat"])
        self.fusion = config["fusion"]
        # the order of these steps is the order the parameters draw their initial values in
        self._init_id_branch(config, dataset)
        self._init_modality_branches(config, dataset, features)
        self._init_user_branch(config, profiles)
        self._init_fusion(config)
        self.bpr_loss = BPRLoss()
        self.reg_loss = EmbLoss()

    # ------------------------------------------------------------------------------------------- set-up
    def _init_id_branch(self, config, dataset) -> None:
        """LightGCN's embeddings and its (rating-weighted) user–item graph of the training split; the items
        with no training interaction; SGL's edge-dropout contrast on this branch (our extension, id_ssl_*)."""
        self.user_embedding = nn.Embedding(self.n_users, self.dim)
        self.item_embedding = nn.Embedding(self.n_items, self.dim)
        self.apply(xavier_normal_initialization)
        inter = dataset.inter_feat
        users, items = inter[dataset.uid_field], inter[dataset.iid_field]
        rating_field = config["RATING_FIELD"]
        weights = None
        if config["use_rating_weights"] and rating_field in inter.columns:
            weights = rating_weights(users, inter[rating_field], config["rating_temperature"])
        self._register_csr("adj", bipartite_adjacency(users, items, self.n_users, self.n_items, weights))
        degree = torch.bincount(items.long(), minlength=self.n_items)
        self.register_buffer("cold_items", degree == 0, persistent=False)
        self.id_ssl_weight = float(config["id_ssl_weight"] or 0.0)
        self.id_ssl_temperature = float(config["id_ssl_temperature"])
        self.id_ssl_drop_ratio = float(config["id_ssl_drop_ratio"])
        self._ssl_edges = (users.long(), items.long(), weights) if self.id_ssl_weight > 0 else None
        self._ssl_drawn = False  # the epoch's two subgraphs are in the ssl0/ssl1 buffers

    def _init_modality_branches(self, config, dataset, features: dict) -> None:
        """Per modality (recgoat_core.feature_alignment): Linear → GAT over a frozen cosine kNN graph → OAT map,
        with the CMCL and W losses -- the module ``<Backbone>+Align`` adds to other models; the alignment gate;
        FREEDOM's item graph over the ID embeddings (our extension, item_graph_layers)."""
        self.modalities = sorted(features)
        self.item_graph_layers = int(config["item_graph_layers"]) if self.modalities else 0
        graph_weights = self._item_graph_weights(config)
        tensors = {name: torch.as_tensor(features[name], dtype=torch.float32) for name in self.modalities}
        edges = {}
        if self.use_gat or self.item_graph_layers:
            edges = {name: knn_graph(x, config["knn_k"], config["knn_chunk_size"], device=self._build_device(config))
                     for name, x in tensors.items()}
        gate = modality_gate(config, tensors, dataset, "RecGOAT") if self.modalities else {}
        #: per modality, what its view is aligned with: the fused, propagated item vectors ("output", the paper)
        #: or the layer-0 item embedding table ("embedding": align_target, or align_gate_fallback for the
        #: modalities the gate closes)
        self.align_targets = {m: config["align_target"] or "output" for m in self.modalities}
        if config["align_gate"] and (config["align_gate_fallback"] or "none") == "embedding":
            for m in [m for m, w in gate.items() if w == 0]:
                gate[m], self.align_targets[m] = 1.0, "embedding"
                logger.info(f"RecGOAT: modality {m!r} is aligned with the layer-0 item embeddings "
                            f"(align_gate_fallback: embedding)")
        self.alignment = FeatureAlignment(tensors, AlignmentSettings.from_config(config), knn_edges=edges,
                                          modality_weights=gate)
        item_graph = None
        for name in self.modalities if self.item_graph_layers else ():
            part = graph_weights[name] * normalized_adjacency(edges[name], self.n_items)
            item_graph = part if item_graph is None else (item_graph + part).coalesce()
        if item_graph is not None:
            self._register_csr("item_graph", item_graph)

    def _init_user_branch(self, config, profiles) -> None:
        """User profiles: Linear → GAT over the user–user kNN graph of the profile vectors."""
        self.use_profiles = profiles is not None and bool(config["use_user_graph"])
        self.profile_weight = float(config["user_profile_weight"])
        if self.use_profiles:
            p = torch.as_tensor(profiles, dtype=torch.float32)
            self.register_buffer("user_profiles", p, persistent=False)
            edges = knn_graph(p, config["user_knn_k"], config["knn_chunk_size"], device=self._build_device(config))
            self.user_graph = AttentionGraph(edges, self.n_users, config["gat_heads"])
            self.profile_projection = nn.Linear(p.shape[1], self.dim)
            self.profile_gat = GAT(self.dim, config["gat_layers"], config["gat_heads"], config["gat_dropout"])

    def _item_graph_weights(self, config) -> dict[str, float]:
        """Each modality's weight in the fused item–item graph (``item_graph_weights``; default: equal)."""
        given = dict(config["item_graph_weights"] or {})
        unknown = set(given) - set(self.modalities)
        if unknown:
            raise ConfigError(f"item_graph_weights names unknown modalities {sorted(unknown)}; "
                              f"modalities are {self.modalities}")
        weights = {m: float(given.get(m, 1.0 if not given else 0.0)) for m in self.modalities}
        total = sum(weights.values())
        if any(w < 0 for w in weights.values()) or (self.modalities and total <= 0):
            raise ConfigError(f"item_graph_weights must be non-negative with a positive sum, got {weights}")
        return {m: w / total for m, w in weights.items()}

    def _init_fusion(self, config) -> None:
        """The fusion weights of the ID part and the modality views (``fusion_gamma`` or ``fusion_weights``),
        the fusion's norm and dropout, and which modalities' views are computed at all."""
        names = ["id", *self.modalities]
        given = dict(config["fusion_weights"] or {})
        unknown = set(given) - set(names)
        if unknown:
            raise ConfigError(f"fusion_weights names unknown parts {sorted(unknown)}; parts are {names}")
        gamma = _fusion_gamma(config)
        if len(names) == 1:
            weights = [1.0]
        elif gamma is not None:  # the paper's sensitivity knob: modalities share γ, the ID part gets 1 - γ
            weights = [1.0 - float(gamma)] + [float(gamma) / len(self.modalities)] * len(self.modalities)
        else:
            default_id = float(given.get("id", 0.5))
            rest = (1.0 - default_id) / (len(names) - 1)
            weights = [default_id] + [float(given.get(m, rest)) for m in self.modalities]
        if any(w < 0 for w in weights) or sum(weights) <= 0:
            raise ConfigError(f"fusion_weights must be non-negative with a positive sum, got "
                              f"{dict(zip(names, weights))}")
        w = torch.tensor(weights) / sum(weights)
        if self.fusion == "learned":
            self.fusion_logits = nn.Parameter(torch.log(w.clamp_min(1e-6)))
        else:
            self.register_buffer("fusion_fixed", w, persistent=False)
        if self.fusion == "concat":
            self.concat_projection = nn.Linear(self.dim * len(names), self.dim)
        self.fusion_norm = config["fusion_norm"]
        self.fusion_dropout = nn.Dropout(config["fusion_dropout"])
        self.view_modalities = self._used_modalities()
        #: the used modalities grouped by what their views are aligned with (fixed at build time)
        self.view_groups = {target: [m for m in self.view_modalities if self.align_targets[m] == target]
                            for target in ("output", "embedding")}
        self.cold_items_from_features = bool(config["cold_items_from_features"]) and bool(self.view_modalities)

    # ---------------------------------------------------------------------------------------- forward
    @property
    def item_features(self) -> dict[str, torch.Tensor]:
        return self.alignment.features

    def _align_references(self, items: torch.Tensor) -> tuple[tuple[str, torch.Tensor], ...]:
        """What each ``align_targets`` value aligns a view with: ``items`` (the fused, propagated vectors) for
        "output", the layer-0 item embedding table for "embedding"."""
        return ("output", items), ("embedding", self.item_embedding.weight)

    def _used_modalities(self) -> list[str]:
        """The modalities whose view anything uses: trained by an alignment term, or in the score. A modality
        the gate closed (or with every term off) and with fusion weight 0 is not computed at all; its view
        would be an untrained projection, so cold items do not score from it either."""
        if self.fusion != "fixed":
            return list(self.modalities)
        weights = dict(zip(self.modalities, self.fusion_fixed[1:].tolist()))
        aligned = set(self.alignment.aligned)
        return [m for m in self.modalities if m in aligned or weights[m] > 0]

    def train(self, mode: bool = True) -> "RecGOAT":
        """As ``nn.Module.train``; entering training (RecBole's trainer does, once an epoch) also draws the
        two edge-dropout subgraphs of the ID graph contrast when it is on, as SGL does."""
        super().train(mode)
        if mode and self._ssl_edges is not None:
            self._ssl_drawn = False
        return self

    def _ssl_subgraphs(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The epoch's two edge-dropout subgraphs (CSR views), drawn on first use into the ``ssl0``/``ssl1``
        graph buffers on the model's device (so the model still moves and deep-copies: RecBole's ``get_flops``
        copies it)."""
        if not self._ssl_drawn:
            users, items, weights = self._ssl_edges
            device = self.item_embedding.weight.device
            for k in range(2):
                self._register_csr(f"ssl{k}", edge_dropout_adjacency(
                    users, items, self.n_users, self.n_items, self.id_ssl_drop_ratio, weights).to(device))
            self._ssl_drawn = True
        n = self.n_users + self.n_items
        return self._csr("ssl0", (n, n)), self._csr("ssl1", (n, n))

    def _id_ssl_loss(self, user: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        """λ_ssl [InfoNCE(z'_U, z''_U) + InfoNCE(z'_I, z''_I)] over the batch's distinct users and positives."""
        ego = torch.cat([self.user_embedding.weight, self.item_embedding.weight])
        (u1, i1), (u2, i2) = (torch.split(lightgcn_propagate(g, ego, self.n_layers), [self.n_users, self.n_items])
                              for g in self._ssl_subgraphs())
        users, items = torch.unique(user), torch.unique(pos)
        tau = self.id_ssl_temperature
        return self.id_ssl_weight * (info_nce(u1[users], u2[users], tau) + info_nce(i1[items], i2[items], tau))

    @property
    def user_features(self) -> torch.Tensor | None:
        return self.user_profiles if self.use_profiles else None

    @property
    def adjacency(self) -> torch.Tensor:
        """The normalised user–item adjacency as a CSR tensor (a view on the buffers, no copy)."""
        n = self.n_users + self.n_items
        return self._csr("adj", (n, n))

    def fusion_weights(self) -> dict[str, float]:
        """The current weights γ of the ID part and each modality (fixed or learned)."""
        w = torch.softmax(self.fusion_logits, 0) if self.fusion == "learned" else self.fusion_fixed
        return dict(zip(["id", *self.modalities], w.tolist()))

    def modality_views(self, item_id: torch.Tensor) -> dict[str, torch.Tensor]:
        """``z~_m`` for each modality the model uses (:meth:`_used_modalities`): projected LM features,
        GAT-propagated, OAT-aligned to ``item_id`` (the propagated item vectors) or to the item embedding table,
        as ``align_targets`` says. A modality nothing uses has no view (it would be an untrained projection)."""
        views = {}
        for target, reference in self._align_references(item_id):
            if self.view_groups[target]:
                views.update(self.alignment.views(reference, self.view_groups[target]))
        return views

    def _scaled_like(self, x: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
        return self.alignment.scaled_like(x, reference)

    def _fuse(self, item_id: torch.Tensor, views: dict[str, torch.Tensor]) -> torch.Tensor:
        if not views:
            return item_id
        present = [m for m in self.modalities if m in views]  # all, except for fixed fusion (unused views)
        parts = [item_id, *(views[m] for m in present)]
        if self.fusion == "concat":
            fused = self.concat_projection(torch.cat(parts, dim=1))
        elif self.fusion == "sum":
            fused = torch.stack(parts).sum(0)
        else:
            w = torch.softmax(self.fusion_logits, 0) if self.fusion == "learned" else self.fusion_fixed
            w = w[[0, *(1 + self.modalities.index(m) for m in present)]]
            fused = torch.einsum("p,pnd->nd", w, torch.stack(parts))
            if self.cold_items_from_features:
                # items never seen in training: their ID vector is untrained noise; use the modalities alone
                # (with every modality weight 0, i.e. γ = 0, cold items still use the modalities, equally)
                w_modal = w[1:] if float(w[1:].sum()) > 0 else torch.ones_like(w[1:])
                modal = torch.einsum("p,pnd->nd", w_modal / w_modal.sum(), torch.stack(parts[1:]))
                fused = torch.where(self.cold_items[:, None], modal, fused)
        if self.fusion_norm == "layernorm":
            fused = F.layer_norm(fused, (self.dim,))
        elif self.fusion_norm == "l2":
            fused = F.normalize(fused, dim=-1)
        return self.fusion_dropout(fused)

    def forward(self) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        """All users' and items' final representations, and each modality's aligned view (items)."""
        ego = torch.cat([self.user_embedding.weight, self.item_embedding.weight])
        z_id = lightgcn_propagate(self.adjacency, ego, self.n_layers)
        user_id, item_id = torch.split(z_id, [self.n_users, self.n_items])
        if self.item_graph_layers:  # FREEDOM-style: item ID embeddings over the frozen modality graph, added
            graph = self._csr("item_graph", (self.n_items, self.n_items))
            h = self.item_embedding.weight
            for _ in range(self.item_graph_layers):
                h = symmetric_spmm(graph, h)
            item_id = item_id + h
        views = self.modality_views(item_id)
        items = self._fuse(item_id, views)
        users = user_id
        if self.use_profiles:
            p = self.profile_gat(self.profile_projection(self.user_profiles), self.user_graph)
            users = users + self.profile_weight * self._scaled_like(p, user_id)
        return users, items, views

    # ------------------------------------------------------------------------------------------- losses
    def calculate_loss(self, interaction) -> tuple[torch.Tensor, ...]:
        self._invalidate()
        user = interaction[self.USER_ID]
        pos = interaction[self.ITEM_ID]
        neg = interaction[self.NEG_ITEM_ID]
        users, items, views = self.forward()
        u = users[user]
        rec = self.bpr_loss((u * items[pos]).sum(-1), (u * items[neg]).sum(-1))
        reg = self.reg_loss(self.user_embedding(user), self.item_embedding(pos), self.item_embedding(neg))
        losses = [rec + self.reg_weight * reg]
        # CMCL / W between each view and its target's vectors of the batch's positive items, per target group
        # ("output" / "embedding"); the groups share the switched-on terms, summed term by term
        parts = [self.alignment.loss({m: views[m] for m in self.view_groups[target]}, reference, pos)
                 for target, reference in self._align_references(items) if self.view_groups[target]]
        losses += [sum(group) for group in zip(*parts)]
        if self._ssl_edges is not None:
            losses.append(self._id_ssl_loss(user, pos))
        return tuple(losses)

    # ------------------------------------------------------------------------------------------ scoring
    def scoring_embeddings(self) -> tuple[torch.Tensor, torch.Tensor]:
        """All users' and items' final vectors (cached per parameter state in eval mode: :mod:`.scoring`)."""
        users, items, _ = self.forward()
        return users, items


def _fusion_gamma(config) -> float | None:
    """``fusion_gamma``, or ``None`` where ``fusion_weights`` decides: the one of the two that your configs
    (files, ``config_dict``, command line) set wins over the other's default; both set there is one
    :class:`ConfigError`. The losing key is set to ``~`` in ``config``, so the run's config (and its
    checkpoint) says what was used."""
    gamma, weights = config["fusion_gamma"], config["fusion_weights"]
    if gamma is None or not weights:
        return gamma
    yours = getattr(config, "external_config_dict", None) or {}
    if "fusion_gamma" in yours and "fusion_weights" in yours:
        raise ConfigError(f"fusion_gamma ({gamma}) and fusion_weights ({dict(weights)}) are both set in your "
                          "configs and contradict each other: keep one (fusion_gamma: ~ uses the weights; a YAML "
                          "written by an older `recgoat data import` sets fusion_gamma: re-import it)")
    if "fusion_gamma" in yours:
        config["fusion_weights"] = None
        return gamma
    config["fusion_gamma"] = None  # the weights are yours, γ is RecGOAT's default
    return None
