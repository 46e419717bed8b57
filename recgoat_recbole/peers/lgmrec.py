r"""LGMRec (Guo et al., AAAI 2024, "LGMRec: Local and Global Graph Learning for Multimodal Recommendation") as
a RecBole general recommender, written from the paper and checked against the behaviour of MMRec's
``src/models/lgmrec.py``.

Local and global embeddings (keys and defaults: ``recgoat_recbole.keys.LGMREC_KEYS``; R: the binary user–item
matrix of the training split, Â: its symmetric-normalised bipartite graph)::

    E^c       = LightGCN(Â, [E_user; E_item], n_ui_layers)                     collaborative graph embedding
    F_i^m     = X^m W^m ;  F_u^m = D_u^-1 R F_i^m                                each modality m (X^m frozen)
    E^m       = Â^{n_mm_layers} [F_u^m; F_i^m]                                   modality graph embedding
    E^local   = E^c + Σ_m normalize(E^m)
    H_i^m     = GumbelSoftmax_τ(X^m V^m),  H_u^m = GumbelSoftmax_τ(R X^m V^m)    hyperedge dependencies
                (hyper_num hyperedges; dropout with keep_rate on H)
    Λ^m       = H_i^mᵀ E^c_item ;  E_i^{m,g} = H_i^m Λ^m ;  E_u^{m,g} = H_u^m Λ^m   (n_hyper_layer times)
    E         = E^local + alpha · normalize(Σ_m E^{m,g})

    loss = BPR + cl_weight · HCL + reg_weight · (‖u‖ + ‖i+‖ + ‖i−‖)/B   (RecBole's EmbLoss on the final vectors)
    HCL  = mean over modality pairs (a, b) of InfoNCE_τ(E_u^{a,g}[batch users], E_u^{b,g}) +
           InfoNCE_τ(E_i^{a,g}[batch positives], E_i^{b,g})     (summed over the batch, all users/items negatives)

Where this differs from MMRec's code, and why:

- at evaluation the hyperedge assignments are the noise-free ``softmax(logits / τ)`` (MMRec also draws Gumbel
  noise when it scores, so its scores are random): reloaded checkpoints and cached scores are then exact;
- any number of modalities (MMRec: exactly image and text); HCL averages over the modality pairs, which is
  MMRec's term for two. With one modality there is no pair: HCL is off (a warning says so), the local and
  global embeddings are as above;
- negatives are RecBole's (uniform over all items, the user's positives excluded).
"""

from __future__ import annotations

import itertools
import logging

import torch
import torch.nn.functional as F
from recbole.model.loss import EmbLoss
from torch import nn

from recgoat_core.graphs import bipartite_adjacency
from recgoat_core.layers import lightgcn_propagate, symmetric_spmm
from recgoat_recbole.peers._common import MultimodalPeer

__all__ = ["LGMRec"]

logger = logging.getLogger(__name__)


class LGMRec(MultimodalPeer):
    r"""LGMRec: local (collaborative + modality graph) and global (hypergraph) embeddings, see the module
    docstring. Config keys and defaults: :mod:`recgoat_recbole.keys` (``LGMREC_KEYS``), docs/peers.md."""

    def __init__(self, config, dataset) -> None:
        super().__init__(config, dataset)
        features = self._item_features(config, dataset)
        self.modalities = list(features)
        self.dim = config["embedding_size"]
        self.n_ui_layers = config["n_ui_layers"]
        self.n_mm_layers = config["n_mm_layers"]
        self.n_hyper_layer = config["n_hyper_layer"]
        self.alpha = float(config["alpha"])
        self.cl_weight = float(config["cl_weight"])
        self.reg_weight = float(config["reg_weight"])
        self.tau = float(config["hyper_tau"])
        self.pairs = list(itertools.combinations(self.modalities, 2))
        if self.cl_weight > 0 and not self.pairs:
            logger.warning(f"LGMRec: the hypergraph contrastive term (cl_weight {self.cl_weight:g}) contrasts two "
                           f"modalities; with only {self.modalities} it is off")

        self.user_embedding = nn.Embedding(self.n_users, self.dim)
        self.item_embedding = nn.Embedding(self.n_items, self.dim)
        nn.init.xavier_uniform_(self.user_embedding.weight)
        nn.init.xavier_uniform_(self.item_embedding.weight)

        users, items = self._training_pairs(dataset)
        self._register_csr("adj", bipartite_adjacency(users, items, self.n_users, self.n_items))
        # R (users x items, binary) as the symmetric bipartite matrix [[0, R], [Rᵀ, 0]]: R x = its user rows
        # applied to [0; x], so the project's symmetric product (and its cheap backward) does it
        ones = torch.ones(len(users))
        n = self.n_users + self.n_items
        raw = torch.sparse_coo_tensor(torch.stack([torch.cat([users, items + self.n_users]),
                                                   torch.cat([items + self.n_users, users])]),
                                      torch.cat([ones, ones]), (n, n), check_invariants=False).coalesce()
        self._register_csr("raw", raw)
        degree = torch.bincount(users, minlength=self.n_users).float()
        self.register_buffer("inv_user_degree", 1.0 / degree.clamp_min(1.0), persistent=False)

        for name, x in features.items():
            self.register_buffer(f"feat_{name}", x, persistent=False)
        self.projections = nn.ParameterDict({
            name: nn.Parameter(nn.init.xavier_uniform_(torch.empty(x.shape[1], self.dim)))
            for name, x in features.items()
        })
        self.hyperedges = nn.ParameterDict({
            name: nn.Parameter(nn.init.xavier_uniform_(torch.empty(x.shape[1], config["hyper_num"])))
            for name, x in features.items()
        })
        self.hyper_dropout = nn.Dropout(p=1.0 - float(config["keep_rate"]))
        self.reg_loss = EmbLoss()

    # ----------------------------------------------------------------------------------------- graphs
    @property
    def n_nodes(self) -> int:
        return self.n_users + self.n_items

    def adjacency(self) -> torch.Tensor:
        return self._csr("adj", (self.n_nodes, self.n_nodes))

    def _user_sum(self, item_values: torch.Tensor) -> torch.Tensor:
        """``R @ item_values``: each user's sum over its training items."""
        raw = self._csr("raw", (self.n_nodes, self.n_nodes))
        padded = torch.cat([item_values.new_zeros(self.n_users, item_values.shape[1]), item_values])
        return symmetric_spmm(raw, padded)[: self.n_users]

    def item_features(self, name: str) -> torch.Tensor:
        return getattr(self, f"feat_{name}")

    # ---------------------------------------------------------------------------------------- forward
    def _assign(self, logits: torch.Tensor, stochastic: bool) -> torch.Tensor:
        if stochastic:
            return self.hyper_dropout(F.gumbel_softmax(logits, self.tau, hard=False, dim=1))
        return torch.softmax(logits / self.tau, dim=1)

    def forward(self, stochastic: bool | None = None):
        """``(users, items, {modality: (user hyper-embeddings, item hyper-embeddings)})``. ``stochastic``
        (default: training mode) draws the Gumbel noise and the hyperedge dropout."""
        stochastic = self.training if stochastic is None else stochastic
        adjacency = self.adjacency()
        ego = torch.cat([self.user_embedding.weight, self.item_embedding.weight])
        cge = lightgcn_propagate(adjacency, ego, self.n_ui_layers)
        cge_items = cge[self.n_users:]
        local = cge
        global_sum = torch.zeros_like(cge)
        hyper = {}
        for name in self.modalities:
            x = self.item_features(name)
            item_feats = x @ self.projections[name]
            user_feats = self._user_sum(item_feats) * self.inv_user_degree[:, None]
            mge = torch.cat([user_feats, item_feats])
            for _ in range(self.n_mm_layers):
                mge = symmetric_spmm(adjacency, mge)
            local = local + F.normalize(mge)

            item_logits = x @ self.hyperedges[name]
            user_logits = self._user_sum(item_logits)
            h_items = self._assign(item_logits, stochastic)
            h_users = self._assign(user_logits, stochastic)
            i_ret = cge_items
            for _ in range(self.n_hyper_layer):
                latent = h_items.T @ i_ret
                i_ret = h_items @ latent
                u_ret = h_users @ latent
            hyper[name] = (u_ret, i_ret)
            global_sum = global_sum + torch.cat([u_ret, i_ret])
        out = local + self.alpha * F.normalize(global_sum)
        users, items = torch.split(out, [self.n_users, self.n_items])
        return users, items, hyper

    def scoring_embeddings(self) -> tuple[torch.Tensor, torch.Tensor]:
        users, items, _ = self.forward(stochastic=False)
        return users, items

    def _infonce(self, anchor: torch.Tensor, positive: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
        """Σ over the rows of −log softmax: the row's positive against every candidate (MMRec's sum form)."""
        a, p, c = F.normalize(anchor), F.normalize(positive), F.normalize(candidates)
        pos = (a * p).sum(1) / self.tau
        return (torch.logsumexp(a @ c.T / self.tau, dim=1) - pos).sum()

    def calculate_loss(self, interaction) -> tuple[torch.Tensor, ...]:
        self._invalidate()
        user = interaction[self.USER_ID]
        pos = interaction[self.ITEM_ID]
        neg = interaction[self.NEG_ITEM_ID]
        users, items, hyper = self.forward()
        u, i_pos, i_neg = users[user], items[pos], items[neg]
        bpr = -F.logsigmoid((u * i_pos).sum(-1) - (u * i_neg).sum(-1)).mean()
        losses = [bpr]
        if self.cl_weight > 0 and self.pairs:
            hcl = sum(self._infonce(hyper[a][0][user], hyper[b][0][user], hyper[b][0])
                      + self._infonce(hyper[a][1][pos], hyper[b][1][pos], hyper[b][1])
                      for a, b in self.pairs) / len(self.pairs)
            losses.append(self.cl_weight * hcl)
        if self.reg_weight > 0:
            losses.append(self.reg_weight * self.reg_loss(u, i_pos, i_neg))
        return tuple(losses)
