"""The alignment in a training loop that is not RecBole's: a two-tower (user tower x item tower) model.

The item tower is an ID embedding; :class:`recgoat_core.feature_alignment.FeatureAlignment` adds a view of each
item's features and pulls the two together (CMCL + W; the OAT map is on by default). The call sites are three
lines in the loop below (``views``, ``loss``, and ``blend`` for scoring)::

    align = FeatureAlignment({"text": features}, {"embedding_size": 32, "use_gat": False})
    ...
    items = model.item_tower.weight
    views = align.views(items)                              # per modality: projection (+ GAT) (+ OAT map)
    loss = bpr(users[u], items[i], items[j]) + sum(align.loss(views, items, i))
    ...
    scores = users @ align.blend(items, align.views(items), gamma).T     # views in the score (gamma > 0)

The data are synthetic, so that the example shows what the features can do and runs in seconds: 1,000 users
and 1,500 items with 16 latent factors; each item's 64-d "LM feature" is a noisy linear image of its factors,
and interactions follow the factors (a long tail: half of the items have at most 2 training interactions).
Test Recall@10 on a held-out 20 % per user, printed for the ID-only tower, the aligned tower, and the aligned
tower with the views in the score, mean of three seeds (``python examples/two_tower_alignment.py``, 40 s of
CPU time on one core)::

    two-tower, ID only                      Recall@10 = 0.0817
    + alignment losses (CMCL + OAT + W)     Recall@10 = 0.1697
    + views in the score (gamma 0.5)        Recall@10 = 0.1657

The features help here because they are informative about the factors and most items are rare; on real data
that is an empirical question (docs/results.md measures it per dataset).
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from recgoat_core.feature_alignment import FeatureAlignment


def synthetic(seed: int, n_users: int = 1000, n_items: int = 1500, factors: int = 16, feature_dim: int = 64):
    """Interactions drawn from latent factors, item features that are a noisy image of those factors."""
    rng = np.random.default_rng(seed)
    users = rng.normal(size=(n_users, factors))
    items = rng.normal(size=(n_items, factors))
    popularity = rng.pareto(1.5, n_items) + 0.1
    logits = users @ items.T / 2 + np.log(popularity)[None, :]
    probs = np.exp(logits - logits.max(1, keepdims=True))
    probs /= probs.sum(1, keepdims=True)
    train, test = [], []
    for u in range(n_users):
        chosen = rng.choice(n_items, size=15, replace=False, p=probs[u])
        cut = 12
        train += [(u, i) for i in chosen[:cut]]
        test += [(u, i) for i in chosen[cut:]]
    features = items @ rng.normal(size=(factors, feature_dim)) + 0.5 * rng.normal(size=(n_items, feature_dim))
    return np.array(train), np.array(test), torch.tensor(features, dtype=torch.float32)


class TwoTower(nn.Module):
    def __init__(self, n_users: int, n_items: int, dim: int) -> None:
        super().__init__()
        self.user_tower = nn.Embedding(n_users, dim)
        self.item_tower = nn.Embedding(n_items, dim)
        nn.init.normal_(self.user_tower.weight, std=0.1)
        nn.init.normal_(self.item_tower.weight, std=0.1)


def recall_at_10(scores: torch.Tensor, train: np.ndarray, test: np.ndarray) -> float:
    scores = scores.clone()
    scores[train[:, 0], train[:, 1]] = -torch.inf  # rank only items the user has not trained on
    top = scores.topk(10, dim=1).indices
    held = {}
    for u, i in test:
        held.setdefault(int(u), set()).add(int(i))
    return float(np.mean([len(held[u] & set(top[u].tolist())) / len(held[u]) for u in held]))


def run(seed: int, align_on: bool, gamma: float, epochs: int = 40, dim: int = 32) -> float:
    train, test, features = synthetic(seed)
    torch.manual_seed(seed)
    n_users, n_items = 1000, len(features)
    model = TwoTower(n_users, n_items, dim)
    align = FeatureAlignment({"text": features}, {"embedding_size": dim, "use_gat": False, "cmcl_weight": 0.1})
    params = list(model.parameters()) + (list(align.parameters()) if align_on else [])
    optimizer = torch.optim.Adam(params, lr=0.01)
    pairs = torch.as_tensor(train)
    for _ in range(epochs):
        for batch in torch.randperm(len(pairs)).split(1024):
            u, i = pairs[batch, 0], pairs[batch, 1]
            j = torch.randint(n_items, (len(batch),))
            users, items = model.user_tower.weight, model.item_tower.weight
            if align_on and gamma > 0:
                views = align.views(items)
                items = align.blend(items, views, gamma)
            loss = -F.logsigmoid((users[u] * (items[i] - items[j])).sum(1)).mean()
            loss = loss + 1e-4 * (users[u].pow(2).sum() + items[i].pow(2).sum()) / len(batch)
            if align_on:
                views = align.views(model.item_tower.weight) if gamma == 0 else views
                loss = loss + sum(align.loss(views, items, i))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    with torch.no_grad():
        model.eval(), align.eval()
        items = model.item_tower.weight
        if align_on and gamma > 0:
            items = align.blend(items, align.views(items), gamma)
        return recall_at_10(model.user_tower.weight @ items.T, train, test)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=40)
    args = parser.parse_args()
    torch.set_num_threads(1)
    for label, align_on, gamma in (("two-tower, ID only", False, 0.0),
                                   ("+ alignment losses (CMCL + OAT + W)", True, 0.0),
                                   ("+ views in the score (gamma 0.5)", True, 0.5)):
        recall = np.mean([run(seed, align_on, gamma, args.epochs) for seed in args.seeds])
        print(f"{label:<40}Recall@10 = {recall:.4f}", flush=True)


if __name__ == "__main__":
    main()
