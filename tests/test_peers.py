"""The multimodal peers FREEDOM and LGMRec as registered RecBole models, on the small real dataset ``mini_ml``:
end to end through ``run_recbole``, a falling training loss, exact reloads, token alignment of their features,
scores that depend on the features, one clear error without features, and their place in the benchmark."""
from __future__ import annotations

import glob

import numpy as np
import pytest
import torch
from recbole.config import Config
from recbole.data import create_dataset, data_preparation
from recbole.quick_start import load_data_and_model, run_recbole
from recbole.utils import get_model, get_trainer, init_seed



from recgoat_recbole.config_check import ConfigError  # noqa: E402
from recgoat_recbole.dataset import FeatureContractError  # noqa: E402
from recgoat_core.feature_files import read_features, write_features  # noqa: E402
from recgoat_recbole.peers.freedom import FREEDOM, item_item_graph, modality_weights  # noqa: E402
from recgoat_recbole.peers.lgmrec import LGMRec  # noqa: E402
from tests.conftest import mini_config  # noqa: E402

PEERS = ["FREEDOM", "LGMRec"]


def _config(mini_ml, **overrides) -> dict:
    base = {"user_profile_feat": None, "embedding_size": 16, "epochs": 2, "hyper_num": 4}
    return mini_config(mini_ml, **{**base, **overrides})


def _build(mini_ml, model: str, **overrides):
    """The model as ``run_recbole`` builds it (same seeds), without training."""
    config = Config(model=model, config_dict=_config(mini_ml, **overrides))
    init_seed(config["seed"], config["reproducibility"])
    train, _, _ = data_preparation(config, create_dataset(config))
    init_seed(config["seed"], config["reproducibility"])
    return get_model(model)(config, train._dataset), train


def _scores(model, users=torch.arange(1, 9)) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        return model.full_sort_predict({model.USER_ID: users}).clone()


@pytest.mark.parametrize("name", PEERS)
def test_run_recbole_trains_the_loss_falls_and_the_checkpoint_reloads_identically(mini_ml, name, monkeypatch):
    """``run_recbole(model="FREEDOM" | "LGMRec")`` with ``item_modalities`` trains (the summed training loss
    falls every epoch), selects on validation and tests; the best checkpoint, loaded by RecBole's
    ``load_data_and_model``, scores exactly like the trained model and reproduces the reported test metrics."""
    from recbole.trainer import Trainer

    losses, trained = [], []
    original = Trainer._train_epoch

    def recording(self, *args, **kwargs):
        loss = original(self, *args, **kwargs)
        losses.append(float(sum(loss)) if isinstance(loss, tuple) else float(loss))
        trained[:] = [self.model]
        return loss

    monkeypatch.setattr(Trainer, "_train_epoch", recording)
    result = run_recbole(model=name, config_dict=_config(mini_ml, epochs=3, learning_rate=0.005))
    assert set(result["test_result"]) == {"recall@10", "ndcg@10"}
    assert all(np.isfinite(v) for v in result["test_result"].values())
    assert result["best_valid_result"]["ndcg@10"] > 0 and result["test_result"]["ndcg@10"] > 0
    assert len(losses) == 3 and all(np.isfinite(losses))
    assert all(b < a for a, b in zip(losses, losses[1:])), losses

    checkpoints = glob.glob(f"saved/{name}-*.pth")
    assert len(checkpoints) == 1
    config, loaded, _, _, _, test = load_data_and_model(checkpoints[0])
    assert type(loaded).__name__ == name and config["item_modalities"] == {"text": "text.npz", "genre": "genre.npz"}
    torch.testing.assert_close(_scores(loaded), _scores(trained[0]), rtol=0, atol=0)  # the best model, reloaded
    trainer = get_trainer(config["MODEL_TYPE"], config["model"])(config, loaded)
    assert dict(trainer.evaluate(test, load_best_model=False)) == pytest.approx(dict(result["test_result"]),
                                                                                abs=1e-12)


def _rewrite(folder: str, source: str, target, permute_ids: bool) -> str:
    """``target``: the rows of ``source`` in reversed order, each row with its own item token
    (``permute_ids=False``: the same features per item), or with the tokens shuffled between the rows
    (``permute_ids=True``: every item gets another item's features)."""
    data = read_features(f"{folder}/{source}")
    tokens, features = np.asarray(data.tokens)[::-1], np.asarray(data.features)[::-1]
    if permute_ids:
        tokens = tokens[np.random.default_rng(3).permutation(len(tokens))]
    write_features(str(target), tokens, features)
    return str(target)


@pytest.mark.parametrize("name", PEERS)
def test_features_are_aligned_by_token_and_change_the_scores(mini_ml, name, tmp_path):
    """The same features listed in another row order give the same model inputs and scores; the feature rows
    permuted between items change the full-sort scores (the model uses the features); the eval cache follows
    loaded parameters."""
    folder = mini_ml["folder"]
    reversed_file = _rewrite(folder, "text.npz", tmp_path / "text_reversed.npz", permute_ids=False)
    permuted_file = _rewrite(folder, "text.npz", tmp_path / "text_permuted.npz", permute_ids=True)
    reference, _ = _build(mini_ml, name)
    reordered, _ = _build(mini_ml, name, item_modalities={"text": reversed_file, "genre": "genre.npz"})
    permuted, _ = _build(mini_ml, name, item_modalities={"text": permuted_file, "genre": "genre.npz"})

    inputs = dict(reference.named_buffers())
    inputs.update({k: v for k, v in reference.named_parameters() if k.startswith("features.")})
    assert any("text" in k for k in inputs)
    for key, value in {**dict(reordered.named_buffers()), **dict(reordered.named_parameters())}.items():
        if key in inputs:
            torch.testing.assert_close(value, inputs[key], rtol=0, atol=0, msg=key)
    before = _scores(reference)
    torch.testing.assert_close(_scores(reordered), before, rtol=0, atol=0)
    assert not torch.allclose(_scores(permuted), before, atol=1e-4)

    state = {k: v.clone() for k, v in reference.state_dict().items()}
    with torch.no_grad():
        reference.user_embedding.weight.add_(0.5)  # a parameter change in eval mode
    assert not torch.allclose(_scores(reference), before)
    reference.load_state_dict(state)
    torch.testing.assert_close(_scores(reference), before, rtol=0, atol=0)


@pytest.mark.parametrize("name", PEERS)
def test_without_item_features_is_one_clear_error(mini_ml, name):
    with pytest.raises(FeatureContractError, match=f"{name} needs item features: set item_modalities"):
        run_recbole(model=name, config_dict=_config(mini_ml, item_modalities=None, epochs=1))
    with pytest.raises(ConfigError, match="id_only"):
        _build(mini_ml, name, id_only=True)


def test_one_modality_and_the_graphs_of_freedom(mini_ml):
    """One modality works (FREEDOM: weight 1; LGMRec: no modality pair, so no contrastive term). FREEDOM's
    frozen graph: row i holds itself and its k − 1 nearest items at 1/k; the pruned graph keeps
    int((1 − dropout)|E|) edges, symmetric-normalised, and is drawn again when the trainer calls train()."""
    freedom, train = _build(mini_ml, "FREEDOM", item_modalities={"text": "text.npz"}, knn_k=5)
    assert freedom.weights == {"text": 1.0}
    graph = freedom.item_graph().to_dense()
    ordinary = torch.arange(1, freedom.n_items)
    assert torch.equal(graph[ordinary].gt(0).sum(1), torch.full((len(ordinary),), 5))
    torch.testing.assert_close(graph.diagonal()[1:], torch.full((freedom.n_items - 1,), 0.2))
    torch.testing.assert_close(graph.sum(1)[1:], torch.ones(freedom.n_items - 1))

    freedom.train()
    first = freedom._training_graph()
    kept = int(len(freedom.edge_prob) * (1 - freedom.dropout))
    assert first._nnz() == 2 * kept
    dense = first.to_dense()
    torch.testing.assert_close(dense, dense.T)
    degree = dense.gt(0).sum(1).float()
    rows, cols = dense.nonzero(as_tuple=True)
    torch.testing.assert_close(dense[rows, cols], (degree[rows] * degree[cols]).rsqrt())
    torch.testing.assert_close(freedom._training_graph().to_dense(), dense)  # one graph per epoch
    freedom.train()  # RecBole's _train_epoch: a new epoch
    assert not torch.equal(freedom._training_graph().to_dense(), dense)

    lgmrec, train = _build(mini_ml, "LGMRec", item_modalities={"text": "text.npz"})
    batch = next(iter(train))
    lgmrec.train()
    assert lgmrec.pairs == [] and len(lgmrec.calculate_loss(batch)) == 2  # BPR + reg, no HCL


def test_fused_graph_weights():
    assert modality_weights(["image", "text"], 0.1, None) == pytest.approx({"image": 0.1, "text": 0.9})
    assert modality_weights(["audio", "image", "text"], 0.1, None) == pytest.approx(
        {"audio": 0.45, "image": 0.1, "text": 0.45})
    assert modality_weights(["a", "b"], 0.1, None) == {"a": 0.5, "b": 0.5}
    assert modality_weights(["a", "b"], 0.1, {"a": 3, "b": 1}) == {"a": 0.75, "b": 0.25}
    with pytest.raises(ConfigError, match="exactly the modalities"):
        modality_weights(["a", "b"], 0.1, {"a": 1})
    x = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9]])
    graph = item_item_graph(x, 2).to_dense()
    expected = torch.zeros(5, 5)
    expected[0, 0] = 1.0  # a zero row (padding) keeps only itself
    for i, j in ((1, 2), (2, 1), (3, 4), (4, 3)):
        expected[i, i] = expected[i, j] = 0.5
    torch.testing.assert_close(graph, expected)


def test_benchmark_adds_the_peers_where_the_dataset_has_features(tmp_path):
    from recgoat_recbole.bench.design import build_specs
    from recgoat_recbole.bench.names import DEFAULT_MODELS, MULTIMODAL_PEERS
    from recgoat_recbole.bench.tuning import GRIDS, grid_points, grid_specs

    from tests.conftest import two_dataset_configs

    configs = two_dataset_configs(tmp_path)
    notes = []
    specs = build_specs(["mm", "plain"], None, [1], {}, configs, log=notes.append)  # no --models: the default
    by_dataset = {d: [s.model for s in specs if s.dataset == d] for d in configs}
    assert by_dataset["mm"] == [*DEFAULT_MODELS, *MULTIMODAL_PEERS]
    assert by_dataset["plain"] == list(DEFAULT_MODELS)
    assert len(notes) == 1 and "plain" in notes[0] and "FREEDOM, LGMRec" in notes[0]
    assert [s.model for s in build_specs(["mm"], None, [1], {"id_only": True}, configs, log=notes.append)] == list(
        DEFAULT_MODELS)
    assert [s.model for s in build_specs(["mm"], ["LightGCN"], [1], {}, configs)] == ["LightGCN"]  # as asked
    assert [s.model for s in build_specs(["mm"], list(DEFAULT_MODELS), [1], {}, configs)] == list(DEFAULT_MODELS)

    tuned = {s.model for s, _ in grid_specs(["mm"], None, [1], {}, configs, GRIDS)}
    assert set(MULTIMODAL_PEERS) <= tuned
    for peer in MULTIMODAL_PEERS:
        assert len(grid_points(GRIDS[peer])) == 9
    assert FREEDOM.__name__ in GRIDS and LGMRec.__name__ in GRIDS
