r"""FREEDOM (Zhou & Shen, ACM MM 2023, "A Tale of Two Graphs: Freezing and Denoising Graph Structures for
Multimodal Recommendation") as a RecBole general recommender, written from the paper and checked against the
behaviour of MMRec's ``src/models/freedom.py``.

Two graphs (keys and defaults: ``recgoat_recbole.keys.FREEDOM_KEYS``)::

    S_m     = top-k of the cosine similarities of modality m's raw features, per row, the item itself included;
              binary, then D^-1/2 S_m D^-1/2 (D: row degrees)                            frozen, built once
    S       = Σ_m w_m S_m          (w_image = mm_image_weight, the rest share 1 − w_image; or mm_weights)
    A_t     = the user–item graph with degree-sensitive edge pruning: each training epoch keeps
              (1 − dropout)·|E| edges, drawn without replacement with probability ∝ 1/sqrt(d_u d_i),
              then D^-1/2 A_t D^-1/2 over the kept edges                                 resampled per epoch
    h       = S^L_mm · E_item                                                 (n_mm_layers, no layer mean)
    U, I    = LightGCN(A_t, [E_user; E_item], n_ui_layers) (mean over layers 0..L);  items = I + h
    x̂_m     = Linear_m(x_m)                                  (x_m trainable, initialised with the features)

    loss    = BPR(U, items) + reg_weight · Σ_m BPR(U, x̂_m)

Scoring uses the full (unpruned) user–item graph: ``score(u, i) = U_u · items_i``.

Where this differs from MMRec's code, and why:

- the pruned graph is resampled when the trainer calls ``model.train()`` (RecBole's ``_train_epoch`` does, once
  per epoch), where MMRec has a ``pre_epoch_processing`` hook; the draw itself is the same;
- any number of modalities (MMRec: image and/or text); the weights generalise ``mm_image_weight``;
- the item-item kNN excludes zero feature rows (RecBole's padding row, ``missing_features: zero``): such an item
  keeps only its self-loop;
- negatives are RecBole's (uniform over all items, the user's positives excluded); MMRec draws from the items
  of the training set.
"""

from __future__ import annotations

import logging
from functools import partial
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from recgoat_core.graphs import bipartite_adjacency, knn_graph
from recgoat_core.layers import lightgcn_propagate
from recgoat_recbole.config_check import ConfigError
from recgoat_recbole.graph_buffers import csr_parts
from recgoat_recbole.knn_cache import knn_edges
from recgoat_recbole.peers._common import MultimodalPeer

__all__ = ["FREEDOM", "modality_weights", "item_item_graph"]

logger = logging.getLogger(__name__)


def modality_weights(modalities: list[str], image_weight: float, given: dict | None) -> dict[str, float]:
    """The weights of the fused item–item graph, summing to 1.

    ``given`` (``mm_weights``) names every modality's weight (normalised); otherwise a modality called
    ``image`` gets ``image_weight`` (MMRec's ``mm_image_weight``) and the others share ``1 − image_weight``
    equally; with no ``image`` modality all share equally. One modality gets 1.
    """
    if given:
        unknown = set(given) - set(modalities)
        missing = set(modalities) - set(given)
        if unknown or missing:
            raise ConfigError(f"mm_weights must name exactly the modalities {modalities}, got {sorted(given)}")
        weights = {m: float(given[m]) for m in modalities}
        if any(w < 0 for w in weights.values()) or sum(weights.values()) <= 0:
            raise ConfigError(f"mm_weights must be non-negative with a positive sum, got {weights}")
    elif len(modalities) == 1:
        weights = {modalities[0]: 1.0}
    elif "image" in modalities:
        rest = (1.0 - image_weight) / (len(modalities) - 1)
        weights = {m: (image_weight if m == "image" else rest) for m in modalities}
    else:
        weights = {m: 1.0 for m in modalities}
    total = sum(weights.values())
    return {m: w / total for m, w in weights.items()}


def item_item_graph(features: torch.Tensor, k: int, chunk_size: int = 2048,
                    device: torch.device | str | None = None,
                    knn: Callable[..., torch.Tensor] = knn_graph) -> torch.Tensor:
    """FREEDOM's frozen graph of one modality, as a sparse COO [n, n] matrix: row i holds its top-``k`` items
    by cosine similarity -- itself (the most similar) and its ``k − 1`` nearest others
    (``knn``: :func:`recgoat_core.graphs.knn_graph` or a cached one, directed) -- with the binary entries
    normalised as ``D^-1/2 S D^-1/2`` (D: row degrees), i.e. ``1/k`` for an ordinary row."""
    n = len(features)
    edges = knn(features, k - 1, chunk_size, symmetric=False, device=device)  # (src=neighbour, dst=row)
    loops = torch.arange(n)
    rows = torch.cat([edges[1].cpu(), loops])
    cols = torch.cat([edges[0].cpu(), loops])
    degree = torch.bincount(rows, minlength=n).float()
    inv_sqrt = degree.pow(-0.5)
    values = inv_sqrt[rows] * inv_sqrt[cols]
    return torch.sparse_coo_tensor(torch.stack([rows, cols]), values, (n, n), check_invariants=False).coalesce()


def _cached_knn(config, name: str, features: torch.Tensor, k: int, chunk_size: int, symmetric: bool,
                device: torch.device | str | None) -> torch.Tensor:
    """:func:`recgoat_core.graphs.knn_graph`'s call in :func:`item_item_graph`, through the run's kNN cache."""
    return knn_edges(config, features, k, "item", name, symmetric=symmetric, device=device)


class FREEDOM(MultimodalPeer):
    r"""FREEDOM: a frozen multimodal item–item graph and a degree-pruned user–item graph (see the module
    docstring). Config keys and defaults: :mod:`recgoat_recbole.keys` (``FREEDOM_KEYS``), docs/peers.md."""

    def __init__(self, config, dataset) -> None:
        super().__init__(config, dataset)
        features = self._item_features(config, dataset)
        self.modalities = list(features)
        self.dim = config["embedding_size"]
        self.n_mm_layers = config["n_mm_layers"]
        self.n_ui_layers = config["n_ui_layers"]
        self.dropout = float(config["dropout"])
        self.reg_weight = float(config["reg_weight"])
        self.weights = modality_weights(self.modalities, float(config["mm_image_weight"]), config["mm_weights"])

        self.user_embedding = nn.Embedding(self.n_users, self.dim)
        self.item_embedding = nn.Embedding(self.n_items, self.dim)
        nn.init.xavier_uniform_(self.user_embedding.weight)
        nn.init.xavier_uniform_(self.item_embedding.weight)

        # ---- the user–item graph of the training split, and the pruning distribution over its edges
        users, items = self._training_pairs(dataset)
        self.register_buffer("edge_users", users, persistent=False)
        self.register_buffer("edge_items", items, persistent=False)
        d_u = torch.bincount(users, minlength=self.n_users).float()
        d_i = torch.bincount(items, minlength=self.n_items).float()
        self.register_buffer("edge_prob", (d_u[users] * d_i[items]).rsqrt(), persistent=False)
        self._register_csr("adj", bipartite_adjacency(users, items, self.n_users, self.n_items))
        self._pruned: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None

        # ---- the frozen item–item graph: per-modality kNN graphs, fused with fixed weights
        device = self._build_device(config)
        fused = None
        for name in self.modalities:
            knn = partial(_cached_knn, config, name)
            graph = item_item_graph(features[name], config["knn_k"], config["knn_chunk_size"], device, knn)
            graph = graph * self.weights[name]
            fused = graph if fused is None else fused + graph
        self._register_csr("mm", fused.coalesce())
        logger.info(f"FREEDOM item-item graph: {int(self.mm_val.numel())} entries, weights {self.weights}")

        # ---- projected modality features, for the feature BPR term
        self.features = nn.ParameterDict({
            name: nn.Parameter(x.clone(), requires_grad=bool(config["train_features"]))
            for name, x in features.items()
        })
        self.projections = nn.ModuleDict({name: nn.Linear(x.shape[1], self.dim) for name, x in features.items()})

    # ----------------------------------------------------------------------------------------- graphs
    @property
    def n_nodes(self) -> int:
        return self.n_users + self.n_items

    def adjacency(self) -> torch.Tensor:
        """The full normalised user–item graph (scoring)."""
        return self._csr("adj", (self.n_nodes, self.n_nodes))

    def item_graph(self) -> torch.Tensor:
        """The fused, frozen item–item graph S (not symmetric: row i averages its top-k items)."""
        return self._csr("mm", (self.n_items, self.n_items))

    def sample_pruned_graph(self) -> torch.Tensor:
        """Degree-sensitive edge pruning: keep ``int((1 − dropout)·|E|)`` edges drawn without replacement with
        probability ∝ 1/sqrt(d_u d_i), re-normalised over the kept edges. ``dropout: 0`` is the full graph."""
        if self.dropout <= 0:
            return self.adjacency()
        keep = max(1, int(len(self.edge_prob) * (1.0 - self.dropout)))
        chosen = torch.multinomial(self.edge_prob, keep, replacement=False)
        adjacency = bipartite_adjacency(self.edge_users[chosen].cpu(), self.edge_items[chosen].cpu(),
                                        self.n_users, self.n_items)
        crow, col, val = (t.to(self.edge_prob.device) for t in csr_parts(adjacency))
        self._pruned = (crow, col, val)
        return torch.sparse_csr_tensor(crow, col, val, (self.n_nodes, self.n_nodes), check_invariants=False)

    def _training_graph(self) -> torch.Tensor:
        if self.dropout <= 0:
            return self.adjacency()
        if self._pruned is None or self._pruned[0].device != self.edge_prob.device:
            return self.sample_pruned_graph()
        crow, col, val = self._pruned
        return torch.sparse_csr_tensor(crow, col, val, (self.n_nodes, self.n_nodes), check_invariants=False)

    def train(self, mode: bool = True):
        """RecBole's trainer calls ``model.train()`` at the start of every epoch: the next training step then
        draws a new pruned user–item graph (MMRec's ``pre_epoch_processing``)."""
        if mode:
            self._pruned = None
        return super().train(mode)

    # ---------------------------------------------------------------------------------------- forward
    def forward(self, adjacency: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Users' and items' representations over the user–item graph ``adjacency``."""
        h = self.item_embedding.weight
        graph = self.item_graph()
        for _ in range(self.n_mm_layers):
            h = graph @ h  # directed graph: torch's sparse product (its backward transposes)
        ego = torch.cat([self.user_embedding.weight, self.item_embedding.weight])
        z = lightgcn_propagate(adjacency, ego, self.n_ui_layers)
        users, items = torch.split(z, [self.n_users, self.n_items])
        return users, items + h

    def scoring_embeddings(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.forward(self.adjacency())

    @staticmethod
    def _bpr(u: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor) -> torch.Tensor:
        return -F.logsigmoid((u * pos).sum(-1) - (u * neg).sum(-1)).mean()

    def calculate_loss(self, interaction) -> tuple[torch.Tensor, ...]:
        self._invalidate()
        user = interaction[self.USER_ID]
        pos = interaction[self.ITEM_ID]
        neg = interaction[self.NEG_ITEM_ID]
        users, items = self.forward(self._training_graph())
        u = users[user]
        losses = [self._bpr(u, items[pos], items[neg])]
        if self.reg_weight > 0:
            feature_bpr = sum(
                self._bpr(u, self.projections[m](self.features[m][pos]), self.projections[m](self.features[m][neg]))
                for m in self.modalities
            )
            losses.append(self.reg_weight * feature_bpr)
        return tuple(losses)
