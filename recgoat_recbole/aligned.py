r"""The alignment as a plugin: ``<Backbone>+Align`` adds RecGOAT's feature alignment to a RecBole recommender.

    run_recbole(model="SGL+Align", config_dict={"item_modalities": {"text": "text.npz"}, ...})
    run_recbole(model=aligned("SGL"), ...)                # the same class

The backbone is RecBole's own class, unedited: ``aligned(Backbone)`` is a subclass of it that, per item modality,
builds the feature view of :class:`recgoat_core.feature_alignment.FeatureAlignment` (projection, the kNN-graph GAT
where ``use_gat``, the OAT map where ``use_oat``) and adds to the backbone's own ``calculate_loss``

.. math::
    \lambda_c \sum_m \mathrm{InfoNCE}_\tau(\tilde Z^m_B, Z_B) + \lambda_{ot} \sum_m W_\varepsilon(\tilde Z^m_B, Z_B)

between the views and the backbone's item representation :math:`Z` on the batch's positive items :math:`B`.
With ``fusion_gamma`` γ > 0 the views also enter the score, :math:`Z \leftarrow (1-\gamma)Z + \gamma\,
\mathrm{mean}_m\tilde Z^m` (backbones whose ``forward`` returns every item's vector only). The defaults are
``keys.defaults("Align")`` layered above the backbone's own RecBole YAML. RecGOAT is the same mixin on the backbone
its config names, with the paper's parts (rating-aware graph, user-profile graph, four fusion modes) filled into
the hooks of :class:`AlignedRecommender`: :mod:`recgoat_recbole.model`.

Where the item representation :math:`Z` comes from, per backbone (:data:`BACKBONES`):

- graph models whose ``forward`` returns ``(users, items, ...)`` for all nodes (LightGCN, NGCF, SGL, NCL): the
  items of the first ``forward`` call of the step (SGL: the un-augmented graph), so no propagation is repeated;
- embedding models (BPR, SimpleX, and any general model with an ``item_embedding`` table): the item embedding
  table itself.

Out of scope, with one clear error: sequential, context-aware and knowledge-graph models (their item vector
depends on the sequence or the feature fields), and general models without trainable item vectors (EASE,
ItemKNN, Pop, SLIM, ADMMSLIM, ...).
"""

from __future__ import annotations

import logging
import os
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import torch
from torch import nn

from recgoat_core.feature_alignment import AlignmentSettings, FeatureAlignment
from recgoat_recbole.config_check import ConfigError, validate
from recgoat_recbole.dataset import FeatureContractError, features_for_model, modality_gate
from recgoat_recbole.keys import defaults, rules
from recgoat_recbole.knn_cache import knn_edges
from recgoat_recbole.patches.model_lookup import recbole_model
from recgoat_recbole.scoring import tensor_state

__all__ = ["aligned", "is_aligned_name", "BACKBONES", "SUFFIX", "AlignedRecommender", "ItemAccess", "subclass",
           "fit_ncl_clusters"]

logger = logging.getLogger(__name__)

#: ``"SGL" + SUFFIX`` is the registered name of SGL with the alignment
SUFFIX = "+Align"

#: the keys the plugin reads (:mod:`recgoat_recbole.keys`), checked like RecGOAT's
ALIGN_RULES = rules("Align")


@dataclass(frozen=True)
class ItemAccess:
    """How to reach a backbone's item representation.

    ``kind == "forward"``: ``forward(*args(model))`` returns a tuple whose element ``index`` is every item's
    vector; ``kind == "embedding"``: the ``nn.Embedding`` attribute ``attribute`` is the item table.
    ``summed_loss``: the backbone's ranking loss is a *sum* over the batch, not a mean (SGL's BPR); the alignment
    terms (means) are then multiplied by the batch size, so that λ_c weighs them against the ranking loss as it
    does on a mean-reduced backbone (unscaled, they would be 1/batch-size of their weight against SGL's sum).
    """

    kind: str
    index: int = 1
    attribute: str = "item_embedding"
    args: Callable[[Any], tuple] = lambda model: ()
    summed_loss: bool = False
    #: how many of the backbone's last loss terms must stay last: NCLTrainer drops ``losses[-1]`` (NCL's
    #: prototype term) during its warm-up epochs, so the alignment terms go before it
    trailing_terms: int = 0
    #: ``(attribute, layout)`` of the backbone's normalised user–item graph, for RecGOAT's rating-aware graph
    #: (layout ``"csr"`` or ``"coo"``: NGCF's node dropout reads ``_indices()``); ``None``: no such graph to swap
    graph: tuple[str, str] | None = None

    @property
    def fusable(self) -> bool:
        return self.kind == "forward"


#: the backbones tested end to end (tests/test_aligned.py); others are tried by the rules of :func:`_access_for`
BACKBONES: dict[str, ItemAccess] = {
    "LightGCN": ItemAccess("forward", graph=("norm_adj_matrix", "csr")),
    "NGCF": ItemAccess("forward", graph=("norm_adj_matrix", "coo")),
    "SGL": ItemAccess("forward", args=lambda model: (model.train_graph,), summed_loss=True),
    "NCL": ItemAccess("forward", trailing_terms=1, graph=("norm_adj_mat", "csr")),
    "BPR": ItemAccess("embedding", attribute="item_embedding"),
    "SimpleX": ItemAccess("embedding", attribute="item_emb"),
}


#: general models RecBole gives a special data loader by name (recbole/data/utils.py ``get_dataloader``)
_OWN_DATALOADER = frozenset({"MultiDAE", "MultiVAE", "MacridVAE", "CDAE", "ENMF", "RaCT", "RecVAE", "DiffRec",
                             "LDiffRec"})


def fit_ncl_clusters(config, dataset, model: str = "NCL") -> dict[str, int]:
    """NCL's k-means cluster count fitted to a small dataset: ``{"num_clusters": n}`` where it changed ``config``.

    NCL clusters the users and the items into ``num_clusters`` (RecBole's default 1000) with faiss, which refuses
    more clusters than points (ml-100k has 944 users). Where the smaller side has no more rows than that, the
    count becomes a tenth of it (at least 2), logged once; a count that fits is kept."""
    smaller = min(int(dataset.user_num), int(dataset.item_num))
    wanted = int(config["num_clusters"])
    if wanted < smaller:
        return {}
    fitted = max(2, smaller // 10)
    config["num_clusters"] = fitted
    logger.warning(f"{model}: num_clusters {wanted} is not below the {smaller} rows of the smaller side (users or "
                   f"items), and NCL's k-means needs fewer clusters than points; using {fitted} (set num_clusters "
                   f"below {smaller} to choose)")
    return {"num_clusters": fitted}


def is_aligned_name(name: str) -> bool:
    return isinstance(name, str) and name.endswith(SUFFIX) and len(name) > len(SUFFIX)


def _access_for(backbone: type) -> ItemAccess:
    """The :class:`ItemAccess` of ``backbone``, or a :class:`ConfigError` saying why it is out of scope."""
    from recbole.model.abstract_recommender import GeneralRecommender
    from recbole.utils import ModelType

    name = backbone.__name__
    if name in BACKBONES:
        return BACKBONES[name]
    if not isinstance(backbone, type) or not issubclass(backbone, GeneralRecommender):
        kind = getattr(getattr(backbone, "type", None), "name", "non-general").lower()
        raise ConfigError(
            f"{name}{SUFFIX}: the alignment needs a general recommender with one vector per item; {name} is a "
            f"{kind} model (sequential, context-aware and knowledge-graph models are out of scope: their item "
            f"vectors depend on the sequence or the feature fields). Supported: {', '.join(BACKBONES)}")
    if getattr(backbone, "type", None) == ModelType.TRADITIONAL or name in {"EASE", "ItemKNN", "Pop", "SLIMElastic",
                                                                              "ADMMSLIM", "NCEPLRec", "Random"}:
        raise ConfigError(f"{name}{SUFFIX}: {name} has no trainable item vectors for the alignment to act on "
                          f"(supported: {', '.join(BACKBONES)})")
    if name in _OWN_DATALOADER:
        raise ConfigError(f"{name}{SUFFIX}: {name} trains on its own user-wise data loader, which RecBole picks by "
                          f"model name; the alignment's item batches do not fit it (supported: {', '.join(BACKBONES)})")
    return ItemAccess("embedding")  # checked when the model is built: it must have an item_embedding table


class AlignedRecommender:
    """Mixin put before a RecBole backbone by :func:`aligned`; see the module docstring."""

    backbone: type
    access: ItemAccess

    #: the config keys this class reads, checked when it is built
    rules = ALIGN_RULES

    def __init__(self, config, dataset) -> None:
        if self.backbone.__name__ == "NCL":  # (before NCL reads it)
            fit_ncl_clusters(config, dataset, str(config["model"]))
        super().__init__(config, dataset)
        validate(config, self.rules)
        features, profiles = features_for_model(config, dataset)  # (first: a dataset without features is refused)
        warm = torch.bincount(dataset.inter_feat[dataset.iid_field].long(), minlength=self.n_items) > 0
        #: the items with training interactions (RecBole's padding item 0 has none)
        self.register_buffer("warm_items", warm.to(self.device), persistent=False)
        #: the items with no training interaction, scored from their views; not the padding item 0, whose row
        #: some backbones keep at zero (SimpleX sums its users' padded histories)
        self.register_buffer("cold_items", ~self.warm_items & (torch.arange(self.n_items, device=self.device) > 0),
                             persistent=False)
        self._any_cold = bool(self.cold_items.any())
        self._cold_cache: tuple[tuple, torch.Tensor] | None = None  # (parameter state, filled rows): _cold_table
        self._adopt_backbone(config, dataset)
        self._check_inputs(config, features, profiles)
        dim = self._item_table_for_dim().shape[1]
        heads = config["gat_heads"]
        if config["use_gat"] and dim % heads:
            raise ConfigError(f"{type(self).__name__}: gat_heads ({heads}) must divide the item vector size of "
                              f"{self.backbone.__name__} ({dim})")
        self.alignment = self._build_alignment(config, dataset, features, dim)
        self._step: dict | None = None  # what the first forward() of a training step produced

    # -------------------------------------------------------------------------------------------- hooks
    def _adopt_backbone(self, config, dataset) -> None:
        """Right after the backbone's ``__init__``: what a subclass changes on the backbone (RecGOAT: its graph)."""

    def _check_inputs(self, config, features: dict, profiles) -> None:
        """The plugin needs features, ignores profiles, and fuses only where the backbone returns every item."""
        name = type(self).__name__
        if config["id_only"]:
            raise ConfigError(f"{name}: id_only: true leaves the alignment no features; train "
                              f"{self.backbone.__name__} itself for an ID-only model")
        if not features:
            raise FeatureContractError(
                f"{name} needs item features: set item_modalities ({{name: file}}, e.g. {{text: text.npz}}, or "
                f"[text, image] for MMRec's <name>_feat.npy) in the config")
        if profiles is not None:
            logger.warning(f"{name} does not use user profiles (RecGOAT does): user_profile_feat is ignored")
        self.align_gamma = float(config["fusion_gamma"] or 0.0)
        self.cold_from_features = bool(config["cold_items_from_features"])
        if self.align_gamma > 0 and not self.access.fusable:
            raise ConfigError(f"{name}: fusion_gamma > 0 puts the feature views into the score, which needs a "
                              f"backbone whose forward() returns every item's vector; {self.backbone.__name__}'s "
                              f"does not: set fusion_gamma: 0 (the alignment losses still apply)")

    def _build_alignment(self, config, dataset, features: dict, dim: int) -> FeatureAlignment:
        """The feature views and their losses, sized to the backbone's item vectors (``dim``)."""
        tensors = {m: torch.as_tensor(x, dtype=torch.float32) for m, x in sorted(features.items())}
        settings = AlignmentSettings.from_config({**{k: config[k] for k in defaults("Align") if k != "fusion_gamma"},
                                                  "embedding_size": dim})  # (from_config ignores other keys)
        device = torch.device(config["device"]) if config["device"] is not None else torch.device("cpu")
        edges = ({m: knn_edges(config, x, settings.knn_k, "item", m, device=device) for m, x in tensors.items()}
                 if settings.use_gat else None)
        gate = modality_gate(config, tensors, dataset, type(self).__name__)
        return FeatureAlignment(tensors, settings, build_device=device, knn_edges=edges, modality_weights=gate)

    def _passthrough(self) -> bool:
        """True when ``forward`` is the backbone's own: nothing to blend, nothing to train this step, no cold
        item to score."""
        return (self.align_gamma == 0 and (self._step is None or not self.alignment.has_loss)
                and not self._scoring_cold())

    def _step_views(self, items: torch.Tensor) -> dict[str, torch.Tensor]:
        """The views of a forward: all of them when they enter the score, else the aligned ones."""
        return self._cold_views(items)

    def _views_in_forward(self) -> bool:
        """Whether ``forward`` needs every item's views: they enter the score (γ > 0) or place cold items. In
        a training step without them only the batch's views are computed, by the alignment terms."""
        return self.align_gamma > 0 or self._scoring_cold()

    def _fuse_output(self, out: tuple, views: dict[str, torch.Tensor]) -> tuple:
        """The backbone's ``forward`` output with the views blended into its items (γ > 0) and, in evaluation,
        the cold items' rows replaced by their views (:meth:`_cold_fill`)."""
        items = out[self.access.index]
        if self.align_gamma > 0:
            items = self.alignment.blend(items, views, self.align_gamma)
        if self._scoring_cold():
            items = self._cold_fill(items, views)
        return (*out[: self.access.index], items, *out[self.access.index + 1:])

    # ------------------------------------------------------------------------------------- cold items
    def _cold_modalities(self) -> list[str]:
        """The modalities whose views score a cold item: those in the score (γ > 0: all), else the aligned ones
        (a view no term trains is an untrained projection)."""
        return list(self.alignment.modalities) if self.align_gamma > 0 else self.alignment.aligned

    def _cold_views(self, reference: torch.Tensor) -> dict[str, torch.Tensor]:
        """The views of :meth:`_cold_modalities`, fitted (OAT plan, scale) on the warm rows of ``reference``."""
        return self.alignment.views(reference, self._cold_modalities(), rows=self._warm_rows())

    def _warm_rows(self) -> torch.Tensor | None:
        """The items whose vectors may shape the views: those with training interactions (``None``: all, when
        ``cold_items_from_features`` is off)."""
        return self.warm_items if self.cold_from_features else None

    @property
    def cold_items_from_features(self) -> bool:
        """Whether an item with no training interaction is scored from its views (``cold_items_from_features``
        and a view to score it with)."""
        return self.cold_from_features and bool(self._cold_modalities())

    def _scoring_cold(self) -> bool:
        """Evaluation with cold items scored from their views. In training the backbone keeps its own vectors
        for them: a cold item appears there only as a sampled negative, and its views must not learn that."""
        return not self.training and self._any_cold and self.cold_items_from_features

    def _cold_fill(self, items: torch.Tensor, views: dict[str, torch.Tensor],
                   weights: torch.Tensor | None = None) -> torch.Tensor:
        r"""``items`` with each cold item's row replaced by :math:`\sum_m w_m \tilde z^m_i` (``weights`` over the
        views in name order, normalised; ``None``: their mean), so its score never reads its untrained ID row."""
        parts = torch.stack([views[m] for m in sorted(views)])
        w = parts.new_full((len(parts),), 1.0) if weights is None else weights
        modal = torch.einsum("p,pnd->nd", w / w.sum(), parts)
        return torch.where(self.cold_items[:, None], modal, items)

    @contextmanager
    def _cold_table(self) -> Iterator[None]:
        """Embedding backbones (BPR, SimpleX) score from their item table: while they score in evaluation, its
        cold rows hold the items' views (:meth:`_cold_fill`), restored afterwards; the views are computed once
        per parameter state, not per scoring batch. (An in-place write: scoring in evaluation between a training
        loss and its backward pass would be refused by autograd; RecBole's trainer never does that.)"""
        if self.access.kind != "embedding" or not self._scoring_cold():
            yield
            return
        weight = getattr(self, self.access.attribute).weight
        cold = self.cold_items
        state = self._cold_state(weight)
        with torch.no_grad():
            if self._cold_cache is not None and self._cold_cache[0] == state:
                rows = self._cold_cache[1]  # the same parameters as the last scoring batch: the same views
            else:
                rows = self._cold_fill(weight, self._cold_views(weight))[cold]
            saved = weight[cold].clone()
            weight[cold] = rows
        try:
            yield
        finally:
            with torch.no_grad():
                weight[cold] = saved
            self._cold_cache = (self._cold_state(weight), rows)

    def _cold_state(self, weight: torch.Tensor) -> tuple:
        """What the cold rows' views are computed from: the item table and the alignment's tensors
        (:func:`~recgoat_recbole.scoring.tensor_state`)."""
        return tensor_state((weight, *self.alignment.parameters(), *self.alignment.buffers()))

    def predict(self, interaction):
        with self._cold_table():
            return super().predict(interaction)

    def full_sort_predict(self, interaction):
        with self._cold_table():
            return super().full_sort_predict(interaction)

    def _alignment_terms(self, step: dict | None, interaction) -> list[torch.Tensor]:
        """CMCL / W between the step's views and the backbone's item vectors of the batch's positives: the views
        of the forward pass where it computed them (γ > 0), else those of the batch's items alone
        (:meth:`~recgoat_core.feature_alignment.FeatureAlignment.batch_views`: the same values and gradients)."""
        positives = interaction[self.ITEM_ID]
        if self.access.kind == "embedding":
            items = getattr(self, self.access.attribute).weight
        elif step is not None and "items" in step:
            items = step["items"]
            if "views" in step:
                return list(self.alignment.loss(step["views"], items, positives))
        else:
            raise RuntimeError(f"{type(self).__name__}: {self.backbone.__name__}.calculate_loss did not call "
                               f"forward(), so its item vectors could not be read")
        batch = self.alignment.batch_items(positives)
        views = self.alignment.batch_views(items, batch, self.alignment.aligned, rows=self._warm_rows())
        return list(self.alignment.batch_loss(views, items[batch]))

    # ------------------------------------------------------------------------------------------- access
    def _item_table_for_dim(self) -> torch.Tensor:
        """The backbone's item vectors once, to size the views (under no_grad, in eval mode)."""
        if self.access.kind == "embedding":
            table = getattr(self, self.access.attribute, None)
            if not isinstance(table, nn.Embedding) or table.num_embeddings != self.n_items:
                raise ConfigError(
                    f"{type(self).__name__}: {self.backbone.__name__} has no item embedding table "
                    f"({self.access.attribute!r} with {self.n_items} rows) for the alignment to act on "
                    f"(supported: {', '.join(BACKBONES)})")
            return table.weight
        self.to(self.device)  # the backbone's graph is already on the device; its embeddings not yet
        modes = [(m, m.training) for m in self.modules()]
        for m, _ in modes:  # eval mode without calling train(False): SGL's train() redraws its graphs
            m.training = False
        try:
            with torch.no_grad():
                out = self.backbone.forward(self, *self.access.args(self))
        finally:
            for m, mode in modes:
                m.training = mode
        return out[self.access.index]

    def forward(self, *args, **kwargs):
        out = super().forward(*args, **kwargs)
        if self.access.kind != "forward" or self._passthrough():
            return out  # nothing to blend, nothing to train: the backbone's own output
        step = self._step
        if step is not None and "items" in step:
            return out  # later forward calls of the same step (SGL's augmented graphs) stay the backbone's own
        views = self._step_views(out[self.access.index]) if self._views_in_forward() else None
        out = self._fuse_output(out, views or {})
        if step is not None:  # (no views: the alignment terms compute the batch's own, _alignment_terms)
            step.update(items=out[self.access.index], **({} if views is None else {"views": views}))
        return out

    def calculate_loss(self, interaction):
        self._step = {}
        try:
            base = super().calculate_loss(interaction)
            step = self._step
        finally:
            self._step = None
        base = base if isinstance(base, tuple) else (base,)
        if not self.alignment.has_loss:  # every term off, or every modality gated off
            return base
        terms = self._alignment_terms(step, interaction)
        if self.access.summed_loss:
            terms = [len(interaction) * t for t in terms]
        cut = len(base) - self.access.trailing_terms  # NCL's prototype term stays last (NCLTrainer's warm-up)
        return (*base[:cut], *terms, *base[cut:])


_CLASSES: dict[str, type] = {}


def aligned(backbone: str | type) -> type:
    """The class ``<Backbone>+Align``: ``backbone`` (a RecBole general recommender, by name or class) with the
    alignment; registered, so its name works wherever RecBole takes a model name. Made once per backbone."""
    from recgoat_recbole import registry
    from recgoat_recbole.dataset import FeatureDataset

    if isinstance(backbone, str):
        base_name = backbone[: -len(SUFFIX)] if is_aligned_name(backbone) else backbone
        if registry.registered(base_name) is not None:
            raise ConfigError(f"{base_name}{SUFFIX}: {base_name} is one of this project's models; the alignment "
                              f"plugin takes RecBole's own recommenders (e.g. {', '.join(BACKBONES)})")
        base = recbole_model(base_name)
    else:
        base = backbone
    if issubclass(base, AlignedRecommender):
        return base
    name = base.__name__ + SUFFIX
    if name in _CLASSES:
        return _CLASSES[name]
    cls = subclass(AlignedRecommender, base, name, name, __name__,
                   f"{base.__name__} with the feature alignment of :mod:`recgoat_recbole.aligned`.")
    recbole_yaml = recbole_model_yaml(base.__name__)
    registry.register_model(cls, FeatureDataset, [*([recbole_yaml] if recbole_yaml else []), defaults("Align")],
                            trainer_name=base.__name__)
    _CLASSES[name] = cls
    return cls


def subclass(mixin: type, base: type, name: str, qualname: str, module: str, doc: str, **extra: Any) -> type:
    """``type(name, (mixin, base), ...)`` with ``backbone = base`` and its :class:`ItemAccess`: the class
    ``<Backbone>+Align`` and RecGOAT's ``RecGOAT[<Backbone>]`` (``module``'s ``__getattr__`` must resolve
    ``qualname``, so that pickle finds it)."""
    return type(name, (mixin, base), {"backbone": base, "access": _access_for(base), "__module__": module,
                                      "__qualname__": qualname, "__doc__": doc, **extra})


def recbole_model_yaml(name: str) -> str | None:
    import recbole

    path = os.path.join(os.path.dirname(recbole.__file__), "properties", "model", f"{name}.yaml")
    return path if os.path.isfile(path) else None


def model_factory(name: str) -> type | None:
    """For the registry: build ``<Backbone>+Align`` on first use of its name (None for other names)."""
    return aligned(name) if is_aligned_name(name) else None


def __getattr__(name: str) -> type:
    """``recgoat_recbole.aligned.<Backbone>+Align`` (how pickle finds the classes, e.g. for DDP workers)."""
    if is_aligned_name(name):
        return aligned(name)
    raise AttributeError(name)
