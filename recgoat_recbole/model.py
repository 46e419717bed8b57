"""RecGOAT as a RecBole general recommender: a RecBole backbone (its ID branch) with the feature alignment and
the paper's own parts.

Representations (the paper's §3.2-3.4; docs/method.md)::

    z_id            = backbone(user–item graph)                               users and items (``backbone``,
                      default NCL (docs/protocol.md), the paper's LightGCN; rating-weighted graph where the
                      backbone has one to swap)
    z_m             = GAT_m(Linear_m(x_m), item–item kNN graph of m)          each item modality m
    z~_m            = OAT_m(z_m, z_id) = z_m (d·T_m + Δ_m)                     distribution-level alignment
                      (then rescaled to the RMS norm of z_id when match_scale: true)
    z_i             = γ_id z_id_i + Σ_m γ_m z~_m_i                              fusion (fixed / learned / sum / concat)
    z_u             = z_id_u + γ_p GAT_p(Linear_p(p_u), user–user kNN graph)   optional user profiles
    score(u, i)     = z_u · z_i

Loss: the backbone's own loss (LightGCN: BPR + λ_reg (‖U⁰_b‖ + ‖I⁰_b+‖ + ‖I⁰_b-‖)/B) on the fused vectors
+ λ_c Σ_m InfoNCE(z~_m, z) + λ_ot Σ_m W_ε(z~_m, z) over the batch's positive items (with ``align_detach_target``
the unified z is a fixed target: only the views move). Every component can be switched off (ablations).

How: the registered ``RecGOAT`` picks, in ``__new__``, the class ``RecGOAT[<Backbone>]`` (made once per backbone
by :func:`recgoat_on`): RecGOAT's parts on the alignment plugin's mixin
(:class:`recgoat_recbole.aligned.AlignedRecommender`, its hooks) on RecBole's own backbone class. Checkpoints name
``RecGOAT`` and store ``backbone``, so they reload through ``load_data_and_model``. Which parts apply to which
backbone: docs/plugin.md. ``backbone: SGL`` is SGL's graph contrast on the ID branch (it replaced our
``id_ssl_*`` keys); FREEDOM's item graph is the peer ``model: FREEDOM`` (it replaced ``item_graph_layers``).
"""

from __future__ import annotations

import logging
import re

import torch
import torch.nn.functional as F
from recbole.model.abstract_recommender import GeneralRecommender
from recbole.utils import InputType
from torch import nn

from recgoat_core.feature_alignment import AlignmentSettings, FeatureAlignment
from recgoat_core.graphs import bipartite_adjacency, rating_weights
from recgoat_core.layers import GAT, AttentionGraph
from recgoat_recbole.aligned import BACKBONES, AlignedRecommender, ItemAccess, recbole_model_yaml, subclass
from recgoat_recbole.checkpoint import StoredConfig
from recgoat_recbole.config_check import ConfigError, validate
from recgoat_recbole.dataset import modality_gate
from recgoat_recbole.graph_buffers import GraphBuffers, SymmetricGraph
from recgoat_recbole.keys import REMOVED, defaults, rules
from recgoat_recbole.knn_cache import knn_edges
from recgoat_recbole.patches.model_lookup import recbole_model
from recgoat_recbole.scoring import CachedScoring

__all__ = ["RecGOAT", "FUSIONS", "recgoat_on", "recgoat_defaults", "BackboneTrainer"]

logger = logging.getLogger(__name__)

FUSIONS = ("fixed", "learned", "sum", "concat")

#: the backbone of ``backbone: ~`` and of checkpoints from before the key (which store none): the paper's.
#: Not the default (``keys.py``'s ``backbone``), which may change: an old checkpoint keeps its own backbone.
LEGACY_BACKBONE = "LightGCN"


class RecGOAT(CachedScoring, GraphBuffers, AlignedRecommender, GeneralRecommender):
    r"""RecGOAT (arXiv 2602.00682). Keys and defaults: :mod:`recgoat_recbole.keys`, docs/config.md.

    ``RecGOAT(config, dataset)`` builds a ``RecGOAT[<backbone>]`` (a subclass of this class and of RecBole's
    backbone class), so ``isinstance(model, RecGOAT)`` holds and ``type(model).__name__ == "RecGOAT"``.

    Attributes:
        item_features: ``dict[str, Tensor]`` -- each modality's LM features [n_items, dim_m] aligned to RecBole
            item ids by token (row 0 = padding).
        user_features: ``Tensor | None`` -- user-profile vectors [n_users, dim] or ``None``.
    """

    backbone: type | None = None  # set on RecGOAT[<Backbone>]
    access: ItemAccess | None = None
    input_type = InputType.PAIRWISE  # all of BACKBONES are pairwise; Config reads it from the registered class
    rules = rules("RecGOAT")

    def __new__(cls, *args, **kwargs):
        # the registered class dispatches on the config; RecGOAT[<B>] (also deepcopy's cls.__new__(cls)) does not
        if cls.backbone is None:
            config = args[0] if args else kwargs["config"]
            cls = recgoat_on(config["backbone"] or LEGACY_BACKBONE)
        return super().__new__(cls)

    def __init__(self, config, dataset) -> None:
        validate(config, self.rules)  # every key in its allowed range, or one ConfigError naming it
        _refuse_removed_keys(config)
        self._rng0 = torch.get_rng_state()  # see _adopt_backbone
        # the backbone, then (hooks below) its graph, the checks, the modality views and their alignment
        super().__init__(config, dataset)
        # the order of these steps is the order the parameters draw their initial values in
        self._init_user_branch(config, self._profiles)
        self._init_fusion(config)

    # ------------------------------------------------------------------------------------------- set-up
    def _adopt_backbone(self, config, dataset) -> None:
        """The backbone's user–item graph replaced by RecGOAT's rating-weighted one (where the backbone has a
        graph to swap: :data:`~recgoat_recbole.aligned.ItemAccess.graph`).

        LightGCN: its embeddings are drawn again as RecGOAT drew its own before it ran on backbones (normal, then
        xavier-normal, from the RNG state before the backbone), so ``backbone: LightGCN`` starts, and leaves the
        RNG, exactly where it did (tests/test_golden.py)."""
        from recbole.model.general_recommender import LightGCN

        rng0 = self.__dict__.pop("_rng0")
        if self.backbone is LightGCN:
            torch.set_rng_state(rng0)
            tables = (self.user_embedding, self.item_embedding)
            for table in tables:
                table.reset_parameters()
            for table in tables:
                nn.init.xavier_normal_(table.weight.data)
        inter = dataset.inter_feat
        users, items = inter[dataset.uid_field], inter[dataset.iid_field]
        rating_field = config["RATING_FIELD"]
        rated = bool(config["use_rating_weights"]) and rating_field in inter.columns
        if self.access.graph is not None:
            weights = rating_weights(users, inter[rating_field], config["rating_temperature"]) if rated else None
            adjacency = bipartite_adjacency(users, items, self.n_users, self.n_items, weights)
            self._register_csr("adj", adjacency.to(self.device))
        elif rated:
            why = ("SGL redraws its graphs from its own unweighted matrix every epoch" if self.access.fusable
                   else f"{self.backbone.__name__} has no graph")
            logger.info(f"RecGOAT: rating-aware propagation does not apply to backbone "
                        f"{self.backbone.__name__} ({why}); use_rating_weights is ignored")

    def _check_inputs(self, config, features: dict, profiles) -> None:
        """RecGOAT runs without features (``id_only``: the backbone alone); what needs the backbone to return
        every item's vector (fusion, profiles) is refused on BPR and SimpleX (their cold items are scored from
        their views through the item table: :meth:`~recgoat_recbole.aligned.AlignedRecommender._cold_table`)."""
        self._profiles = profiles
        self.id_only = bool(config["id_only"])
        self.use_gat = bool(config["use_gat"])
        self.fusion = config["fusion"]
        self.align_gamma = 0.0  # the plugin's blend; RecGOAT fuses by its own weights (_fuse)
        self.cold_from_features = bool(config["cold_items_from_features"])
        if self.access.fusable:
            return
        b = self.backbone.__name__
        if self.fusion != "fixed" or _view_weight(config, sorted(features)) > 0:
            raise ConfigError(f"RecGOAT: backbone {b} scores from its own tables, so the views cannot enter the "
                              f"score: set fusion: fixed and fusion_gamma: 0 (the alignment losses still apply)")
        if profiles is not None and config["use_user_graph"]:
            raise ConfigError(f"RecGOAT: backbone {b} scores from its own tables, so user profiles cannot enter "
                              f"the score: unset user_profile_feat (or use_user_graph: false)")

    def _build_alignment(self, config, dataset, features: dict, dim: int) -> FeatureAlignment:
        """Per modality (recgoat_core.feature_alignment): Linear → GAT over a frozen cosine kNN graph → OAT map,
        with the CMCL and W losses -- the module ``<Backbone>+Align`` adds to other models; the alignment gate."""
        self.dim = dim  # the backbone's item vector size (NGCF: its layers concatenated)
        self.modalities = sorted(features)
        tensors = {name: torch.as_tensor(features[name], dtype=torch.float32) for name in self.modalities}
        edges = {}
        if self.use_gat:
            edges = {name: knn_edges(config, x, config["knn_k"], "item", name, device=self._build_device(config))
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
        width = self._item_table.embedding_dim
        if "embedding" in self.align_targets.values() and width != dim:
            raise ConfigError(f"RecGOAT: align_target / align_gate_fallback embedding needs the item table "
                              f"({width}) as wide as {self.backbone.__name__}'s item vectors ({dim}): use output")
        settings = AlignmentSettings.from_config({**{f: config[f] for f in defaults("Align")}, "embedding_size": dim})
        return FeatureAlignment(tensors, settings, knn_edges=edges, modality_weights=gate)

    def _init_user_branch(self, config, profiles) -> None:
        """User profiles: Linear → GAT over the user–user kNN graph of the profile vectors."""
        self.use_profiles = profiles is not None and bool(config["use_user_graph"])
        self.profile_weight = float(config["user_profile_weight"])
        if self.use_profiles:
            p = torch.as_tensor(profiles, dtype=torch.float32)
            self.register_buffer("user_profiles", p.to(self.device), persistent=False)
            edges = knn_edges(config, p, config["user_knn_k"], "user", "profiles", device=self._build_device(config))
            self.user_graph = AttentionGraph(edges, self.n_users, config["gat_heads"])
            self.profile_projection = nn.Linear(p.shape[1], self.dim)
            self.profile_gat = GAT(self.dim, config["gat_layers"], config["gat_heads"], config["gat_dropout"])
        del self._profiles

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
        self._score_reads_views = not (self.fusion == "fixed" and float(w[1:].sum()) == 0
                                       and self.fusion_norm == "none" and float(config["fusion_dropout"]) == 0)
        self.view_modalities = self._used_modalities()
        #: the used modalities grouped by what their views are aligned with (fixed at build time)
        self.view_groups = {target: [m for m in self.view_modalities if self.align_targets[m] == target]
                            for target in ("output", "embedding")}

    # ---------------------------------------------------------------------------------------- forward
    @property
    def item_features(self) -> dict[str, torch.Tensor]:
        return self.alignment.features

    @property
    def user_features(self) -> torch.Tensor | None:
        return self.user_profiles if self.use_profiles else None

    @property
    def adjacency(self) -> torch.Tensor:
        """RecGOAT's normalised (rating-weighted) user–item adjacency as a CSR tensor (a view on the buffers)."""
        n = self.n_users + self.n_items
        return self._csr("adj", (n, n))

    @property
    def _item_table(self) -> nn.Embedding:
        """The backbone's layer-0 item embedding table (SimpleX: ``item_emb``)."""
        return getattr(self, self.access.attribute)

    def _align_references(self, items: torch.Tensor) -> tuple[tuple[str, torch.Tensor], ...]:
        """What each ``align_targets`` value aligns a view with: ``items`` (the fused, propagated vectors) for
        "output", the layer-0 item embedding table for "embedding"."""
        return ("output", items), ("embedding", self._item_table.weight)

    def _used_modalities(self) -> list[str]:
        """The modalities whose view anything uses: trained by an alignment term, or in the score. A modality
        the gate closed (or with every term off) and with fusion weight 0 is not computed at all; its view
        would be an untrained projection, so cold items do not score from it either."""
        if self.fusion != "fixed":
            return list(self.modalities)
        weights = dict(zip(self.modalities, self.fusion_fixed[1:].tolist()))
        aligned = set(self.alignment.aligned)
        return [m for m in self.modalities if m in aligned or weights[m] > 0]

    def fusion_weights(self) -> dict[str, float]:
        """The current weights γ of the ID part and each modality (fixed or learned)."""
        w = torch.softmax(self.fusion_logits, 0) if self.fusion == "learned" else self.fusion_fixed
        return dict(zip(["id", *self.modalities], w.tolist()))

    def modality_views(self, item_id: torch.Tensor) -> dict[str, torch.Tensor]:
        """``z~_m`` for each modality the model uses (:meth:`_used_modalities`): projected LM features,
        GAT-propagated, OAT-aligned to ``item_id`` (the propagated item vectors) or to the item embedding table,
        as ``align_targets`` says. A modality nothing uses has no view (it would be an untrained projection).
        With ``cold_items_from_features`` the views are fitted on the warm items' rows only (the plugin's rule:
        :meth:`~recgoat_recbole.aligned.AlignedRecommender._warm_rows`)."""
        views = {}
        for target, reference in self._align_references(item_id):
            if self.view_groups[target]:
                views.update(self.alignment.views(reference, self.view_groups[target], rows=self._warm_rows()))
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
            if self._scoring_cold():
                # items never seen in training, in evaluation: their ID vector is untrained noise; use the
                # modalities alone (with every modality weight 0, i.e. γ = 0, cold items still use the modalities,
                # equally). In training they keep their fused vector, as the plugin's (aligned._scoring_cold)
                w_modal = w[1:] if float(w[1:].sum()) > 0 else torch.ones_like(w[1:])
                fused = self._cold_fill(fused, {m: views[m] for m in present}, w_modal)
        if self.fusion_norm == "layernorm":
            fused = F.layer_norm(fused, (self.dim,))
        elif self.fusion_norm == "l2":
            fused = F.normalize(fused, dim=-1)
        return self.fusion_dropout(fused)

    # ------------------------------------------------------------------- the plugin's hooks (aligned.py)
    def _passthrough(self) -> bool:
        return not (self.view_modalities or self.use_profiles or self.cold_items_from_features)

    def _cold_modalities(self) -> list[str]:
        return self.view_modalities

    def _cold_views(self, reference: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.modality_views(reference)

    def _fuse_output(self, out: tuple, views: dict[str, torch.Tensor]) -> tuple:
        """The backbone's output with its items fused with the views, its users with the profiles."""
        i = self.access.index
        user_id, item_id = out[0], out[i]
        items = self._fuse(item_id, views)
        users = user_id
        if self.use_profiles:
            p = self.profile_gat(self.profile_projection(self.user_profiles), self.user_graph)
            users = users + self.profile_weight * self._scaled_like(p, user_id)
        return (users, *out[1:i], items, *out[i + 1:])

    def _alignment_terms(self, step: dict | None, interaction) -> list[torch.Tensor]:
        """CMCL / W between each view and its target's vectors of the batch's positive items, per target group
        ("output" / "embedding"); the groups share the switched-on terms, summed term by term."""
        if self.access.kind == "embedding":
            items, views = self._item_table.weight, None
        else:
            step = step or {}
            items, views = step.get("items"), step.get("views")
            if items is None and self.view_modalities:
                raise RuntimeError(f"RecGOAT: {self.backbone.__name__}.calculate_loss did not call forward(), "
                                   f"so its item vectors could not be read")
        pos = interaction[self.ITEM_ID]
        batch = self.alignment.batch_items(pos)
        parts = []
        for target, reference in self._align_references(items):
            group = self.view_groups[target]
            if not group:
                continue
            if views is not None:  # the forward's views (they are in the score), at the step's items
                parts.append(self.alignment.batch_loss({m: views[m][batch] for m in group}, reference[batch]))
            else:  # the batch's own (the same values and gradients: FeatureAlignment.batch_views)
                batch_views = self.alignment.batch_views(reference, batch, group, rows=self._warm_rows())
                parts.append(self.alignment.batch_loss(batch_views, reference[batch]))
        return [sum(group) for group in zip(*parts)]

    def _views_in_forward(self) -> bool:
        # the views in the score, or cold items to place; else (fixed fusion, every view weight 0, no norm or
        # dropout on the fused vectors, which are then the ID part's own) the forward is the backbone's, and in
        # training the alignment terms compute the batch's views alone
        return self._score_reads_views or self._scoring_cold()

    def representations(self) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        """All users' and items' final representations, and each modality's aligned view (items). (``forward``
        returns what the backbone's does, which its ``calculate_loss`` unpacks.)"""
        if self.access.kind == "embedding":
            items = self._item_table.weight
            users = getattr(self, self.access.attribute.replace("item", "user")).weight
            views = self.modality_views(items)
            if self._scoring_cold():  # what full_sort_predict scores them by (_cold_table)
                items = self._cold_fill(items, views)
            return users, items, views
        out = self.backbone.forward(self, *self.access.args(self))
        views = self.modality_views(out[self.access.index])
        out = self._fuse_output(out, views)
        return out[0], out[self.access.index], views

    # ------------------------------------------------------------------------------------------- losses
    def calculate_loss(self, interaction) -> tuple[torch.Tensor, ...]:
        """The backbone's loss on the fused vectors, then the alignment terms (:mod:`recgoat_recbole.aligned`)."""
        self._invalidate()
        return super().calculate_loss(interaction)

    # ------------------------------------------------------------------------------------------ scoring
    def scoring_embeddings(self) -> tuple[torch.Tensor, torch.Tensor]:
        """All users' and items' final vectors (cached per parameter state in eval mode: :mod:`.scoring`)."""
        out = self.forward(*self.access.args(self))
        return out[0], out[self.access.index]

    def predict(self, interaction) -> torch.Tensor:
        if self.access.fusable:
            return CachedScoring.predict(self, interaction)
        with self._cold_table():  # BPR, SimpleX: their own scores (SimpleX: cosine), cold rows from the views
            return self.backbone.predict(self, interaction)

    def full_sort_predict(self, interaction) -> torch.Tensor:
        if self.access.fusable:
            return CachedScoring.full_sort_predict(self, interaction)
        with self._cold_table():
            return self.backbone.full_sort_predict(self, interaction)


# ------------------------------------------------------------------------------------------ backbones
_ON: dict[str, type] = {}


def recgoat_on(backbone: str) -> type:
    """``RecGOAT[<backbone>]``: RecGOAT on RecBole's ``backbone`` (one of :data:`~recgoat_recbole.aligned.BACKBONES`),
    made once. The registered ``RecGOAT`` builds it from ``config["backbone"]``."""
    if backbone not in _ON:
        if backbone not in BACKBONES:
            raise ConfigError(f"backbone {backbone!r} is not one of RecGOAT's backbones ({', '.join(BACKBONES)})")
        base = recbole_model(backbone)
        access = BACKBONES[backbone]
        extra = {}
        if access.graph is not None:
            extra[access.graph[0]] = _graph_property(access.graph[1])
        _ON[backbone] = subclass(RecGOAT, base, "RecGOAT", f"RecGOAT[{backbone}]", __name__,
                                 f"RecGOAT on RecBole's {backbone} (:func:`recgoat_on`).", **extra)
    return _ON[backbone]


def _graph_property(layout: str) -> property:
    """The backbone's graph attribute, read from RecGOAT's ``adj`` buffers (so it follows ``.to()`` and
    ``deepcopy``); the backbone's own assignment in its ``__init__`` is dropped."""

    def get(self) -> torch.Tensor | SymmetricGraph:
        graph = self.adjacency
        # CSR (LightGCN, NCL): products with it take the symmetric backward; COO (NGCF's node dropout reads it)
        return SymmetricGraph(graph) if layout == "csr" else graph.to_sparse_coo()

    def set(self, value) -> None:
        pass  # the backbone's unweighted graph: RecGOAT's adj buffers replace it

    return property(get, set, doc="RecGOAT's (rating-weighted) user–item graph, in the backbone's layout")


def __getattr__(name: str) -> type:
    """``recgoat_recbole.model.RecGOAT[<Backbone>]`` (how pickle finds the classes, e.g. for DDP workers)."""
    match = re.fullmatch(r"RecGOAT\[(\w+)\]", name)
    if match and match.group(1) in BACKBONES:
        return recgoat_on(match.group(1))
    raise AttributeError(name)


def recgoat_defaults(yours: dict) -> list[str | dict]:
    """RecGOAT's defaults given your configs (``yours``): the backbone's RecBole YAML and :mod:`.keys`' RecGOAT
    keys. LightGCN below RecGOAT's keys (its defaults as before); any other backbone above them, so that its own
    ``embedding_size`` / ``n_layers`` / ``reg_weight`` apply."""
    yours = yours or {}
    # not set: the default backbone; set to ~: the legacy one (as the model itself resolves them)
    name = (yours["backbone"] or LEGACY_BACKBONE) if "backbone" in yours else defaults("RecGOAT")["backbone"]
    yaml = recbole_model_yaml(name) if name in BACKBONES else None  # another name: refused when built
    if yaml is None:
        return [defaults("RecGOAT")]
    return [yaml, defaults("RecGOAT")] if name == "LightGCN" else [defaults("RecGOAT"), yaml]


class BackboneTrainer:
    """RecGOAT's trainer: its backbone's RecBole trainer (NCL: ``NCLTrainer``, which runs NCL's E-step)."""

    def __new__(cls, config, model):
        from recbole.utils import get_trainer

        backbone = getattr(type(model), "backbone", None) or recbole_model(LEGACY_BACKBONE)
        return get_trainer(config["MODEL_TYPE"], backbone.__name__)(config, model)


def _refuse_removed_keys(config) -> None:
    """One :class:`ConfigError` for a removed key your configs set; an old checkpoint's stored config loads (with a
    warning for a removed loss term, which scoring does not use) unless the key changed its scores."""
    stored = isinstance(config, StoredConfig)
    yours = getattr(config, "external_config_dict", None) or {}
    for key, why in REMOVED.items():
        value = config[key]
        active = bool(value) if not isinstance(value, (int, float)) else value > 0
        if not stored and key in yours:
            raise ConfigError(f"{key} was removed: {why}")
        if stored and active and key.startswith("item_graph"):
            raise ConfigError(f"this checkpoint uses {key}, which was removed: {why}")
        if stored and active and key == "id_ssl_weight":
            logger.warning(f"this checkpoint was trained with {key} (removed: {why}); it scores as before")


def _view_weight(config, modalities: list[str]) -> float:
    """The modalities' share of the score under fixed fusion (``fusion_gamma``, else ``fusion_weights``)."""
    if not modalities:
        return 0.0
    gamma = _fusion_gamma(config)
    if gamma is not None:
        return float(gamma)
    given = dict(config["fusion_weights"] or {})
    default_id = float(given.get("id", 0.5))
    return sum(float(given.get(m, (1.0 - default_id) / len(modalities))) for m in modalities)


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
