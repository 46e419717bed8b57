"""Our extensions beyond the paper, each behind a switch that is off by default."""
from __future__ import annotations

import pytest
import torch

from recgoat_core.graphs import knn_graph, normalized_adjacency
from recgoat_core.layers import lightgcn_propagate
from recgoat_recbole.config_check import ConfigError
from tests.test_model import _build


def test_normalized_adjacency_is_d_half_a_d_half():
    edges = torch.tensor([[0, 1, 1, 2], [1, 0, 2, 1]])
    dense = normalized_adjacency(edges, 4).to_dense()
    a = torch.zeros(4, 4)
    a[edges[0], edges[1]] = 1.0
    d = a.sum(1)
    inv = torch.where(d > 0, d.pow(-0.5), torch.zeros_like(d))
    torch.testing.assert_close(dense, inv[:, None] * a * inv[None, :])


def test_item_graph_adds_id_embeddings_propagated_over_the_fused_modality_graph(mini_ml):
    """item_graph_layers (FREEDOM's item graph): item output = LightGCN items + Â_items^L E_items, where Â_items
    is the weighted sum of each modality's normalised kNN graph."""
    config, _, _, _, model = _build(mini_ml, item_graph_layers=2, item_graph_weights={"text": 3.0, "genre": 1.0},
                                    use_gat=False, use_oat=False, fusion_gamma=0.0, user_profile_feat=None,
                                    cold_items_from_features=False)
    model.eval()
    ego = torch.cat([model.user_embedding.weight, model.item_embedding.weight])
    _, items_lightgcn = torch.split(lightgcn_propagate(model.adjacency, ego, model.n_layers),
                                    [model.n_users, model.n_items])
    graph = sum(w * normalized_adjacency(knn_graph(model.item_features[m], config["knn_k"]), model.n_items)
                .to_dense() for m, w in (("text", 0.75), ("genre", 0.25)))
    expected = items_lightgcn + graph @ (graph @ model.item_embedding.weight)
    with torch.no_grad():
        _, items, _ = model.forward()
    torch.testing.assert_close(items, expected, atol=1e-5, rtol=1e-4)


def test_item_graph_weights_name_real_modalities(mini_ml):
    with pytest.raises(ConfigError, match="unknown modalities"):
        _build(mini_ml, item_graph_layers=1, item_graph_weights={"image": 1.0})
