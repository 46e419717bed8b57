"""The kNN graphs (recgoat_core.graphs.knn_graph, recgoat_recbole.knn_cache): faiss on the CPU gives the torch
path's neighbours (ties too), and a graph is built once per feature contents and k, then reused -- by a second
model build, which says so and is the same model -- while a changed input misses and a damaged, edited or planted
cache file is rejected with one warning and rebuilt."""
from __future__ import annotations

import logging
import os
import shutil

import numpy as np
import pytest
import torch

from recgoat_core.feature_files import read_features, write_features
from recgoat_core.graphs import knn_graph
from recgoat_recbole.knn_cache import cached_knn_graph, graph_key
from tests.conftest import PAYLOAD, Reduce
from tests.helpers import build_recgoat, pairwise_batch

LOGGER = "recgoat_recbole.knn_cache"


@pytest.fixture(autouse=True)
def _own_key(tmp_path, monkeypatch):
    """This test's own signing key (recgoat_recbole.signing), not the user's."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))


def _pairs(edges: torch.Tensor) -> set[tuple[int, int]]:
    return set(map(tuple, edges.T.tolist()))


def _reference(x: np.ndarray, k: int, skip_first: bool) -> set[tuple[int, int]]:
    """Directed (neighbour, row) pairs by a dense similarity matrix: each valid row's k others with the largest
    cosine, equal cosines by the lower index (a stable sort)."""
    norms = np.linalg.norm(x, axis=1)
    valid = norms > 0
    if skip_first:
        valid[0] = False
    u = (x / np.maximum(norms, 1e-12)[:, None]).astype(np.float32)
    sim = u @ u.T
    sim[:, ~valid] = -np.inf
    np.fill_diagonal(sim, -np.inf)
    k = min(k, int(valid.sum()) - 1)
    return {(int(j), i) for i in np.flatnonzero(valid) for j in np.argsort(-sim[i], kind="stable")[:k]}


def _copies(n: int = 600, dim: int = 16, seed: int = 3) -> np.ndarray:
    """Random rows, each of the first third repeated up to 30 times: exact ties (bitwise-equal rows give equal
    products in any backend), and none between different rows."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, dim)).astype(np.float32)
    x[n // 3:] = x[rng.integers(1, n // 20, n - n // 3)]
    return x


def _duplicates(n: int, groups: int, dim: int, seed: int) -> np.ndarray:
    """Rows drawn from a few binary patterns (+ 0.01, as a genre one-hot): many exactly equal similarities."""
    rng = np.random.default_rng(seed)
    patterns = rng.integers(0, 2, size=(groups, dim)).astype(np.float32)
    return patterns[rng.integers(0, groups, n)] + 0.01


# ------------------------------------------------------------------------------------- faiss == torch
@pytest.mark.parametrize("symmetric", [True, False])
@pytest.mark.parametrize("data, k, chunk", [
    ("random", 10, 2048), ("random", 7, 33), ("copies", 10, 100), ("copies", 40, 2048),
    ("duplicates", 10, 2048), ("duplicates", 50, 64), ("duplicates", 40, 512),
])
def test_faiss_and_torch_give_the_same_neighbours(data, k, chunk, symmetric):
    """Tie-free data, and data where most similarities are shared by many rows (equal rows, equal patterns):
    the faiss search (which keeps any of equal results) and the torch blocks (whose topk may too) both pick,
    of equal similarities, the lower indices -- the dense reference's neighbours, self excluded."""
    if data == "random":
        x = np.random.default_rng(0).normal(size=(400, 24)).astype(np.float32)
    elif data == "copies":
        x = _copies()
    else:
        x = _duplicates(200 if k == 50 else 1200, 30, 5 if k == 50 else 8, seed=k)
    x[5] = 0  # a row without features: no edges
    by_faiss = knn_graph(x, k, chunk, symmetric=symmetric, backend="faiss")
    by_torch = knn_graph(x, k, chunk, symmetric=symmetric, backend="torch")
    assert _pairs(by_faiss) == _pairs(by_torch)
    expected = _reference(x, k, skip_first=True)
    if symmetric:
        expected |= {(i, j) for j, i in expected}
    assert _pairs(by_torch) == expected
    assert not (by_faiss[0] == by_faiss[1]).any() and 5 not in by_faiss.flatten().tolist()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
@pytest.mark.parametrize("symmetric", [True, False])
def test_the_gpu_takes_the_cpu_neighbours(symmetric):
    """torch's blocks on the GPU (topk ties in any order there) and faiss on the CPU: the same graph."""
    x = _copies()
    on_gpu = knn_graph(x, 12, 128, symmetric=symmetric, device="cuda")
    assert torch.equal(on_gpu, knn_graph(x, 12, 128, symmetric=symmetric, backend="faiss"))


def test_cpu_default_is_faiss_and_the_same_graph():
    x = _duplicates(300, 12, 6, seed=1)
    assert torch.equal(knn_graph(x, 10, skip_first=False), knn_graph(x, 10, skip_first=False, backend="torch"))
    assert _pairs(knn_graph(x, 10, skip_first=False)) == _reference(x, 10, skip_first=False) | {
        (i, j) for j, i in _reference(x, 10, skip_first=False)}


# ------------------------------------------------------------------------------- the cache, directly
def _build(x, k=5, folder="cache", **options):
    return cached_knn_graph(x, k, folder, f"item kNN graph (t, k={k})", **options)


def _messages(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == LOGGER]


def test_same_features_and_k_are_reused_anything_else_misses(caplog):
    caplog.set_level(logging.INFO, logger=LOGGER)
    x = np.random.default_rng(0).normal(size=(80, 6)).astype(np.float32)
    first = _build(x)
    assert len(os.listdir("cache")) == 1 and "cached at cache/knn-" in _messages(caplog)[-1]
    again = _build(torch.from_numpy(x.copy()), chunk_size=7)  # same contents, another object and block size
    assert _messages(caplog)[-1].startswith("item kNN graph (t, k=5): reused from cache/knn-")
    assert torch.equal(first, again)
    changed = x.copy()
    changed[17, 3] += 1e-3  # one value of one row
    for variant in [dict(x=changed), dict(x=x, k=6), dict(x=x, symmetric=False), dict(x=x, skip_first=False)]:
        graph = _build(**variant)
        assert " built in " in _messages(caplog)[-1], variant
        expected = knn_graph(variant["x"], variant.get("k", 5), symmetric=variant.get("symmetric", True),
                             skip_first=variant.get("skip_first", True))
        assert torch.equal(graph, expected)
    assert len(os.listdir("cache")) == 5
    assert graph_key(x, 5, True, True) != graph_key(changed, 5, True, True)


def _one_cache_file() -> str:
    (name,) = os.listdir("cache")
    return os.path.join("cache", name)


def _forge(path: str, **replace) -> None:
    with np.load(path, allow_pickle=False) as f:
        arrays = {name: f[name] for name in f.files}
    arrays.update(replace)
    np.savez(path, **arrays)


@pytest.mark.parametrize("damage", ["truncated", "empty", "not a zip", "edited edges", "other user's key",
                                    "pickled member", "wrong key", "signed but out of range"])
def test_a_bad_cache_file_is_rejected_with_one_warning_and_rebuilt(damage, caplog, monkeypatch, tmp_path):
    caplog.set_level(logging.INFO, logger=LOGGER)
    x = np.random.default_rng(1).normal(size=(60, 5)).astype(np.float32)
    good = _build(x)
    path = _one_cache_file()
    with np.load(path, allow_pickle=False) as f:
        edges, key = f["edges"], str(f["key"])
    if damage == "truncated":
        with open(path, "r+b") as f:
            f.truncate(os.path.getsize(path) // 2)
    elif damage == "empty":
        open(path, "wb").close()
    elif damage == "not a zip":
        with open(path, "wb") as f:
            f.write(b"\x80\x04" + PAYLOAD.encode())
    elif damage == "edited edges":  # a planted graph under the right name, the old MAC kept
        _forge(path, edges=np.roll(edges, 1, axis=1))
    elif damage == "other user's key":  # a genuine file, signed by another key (someone else's runs)
        monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "someone-else"))
        os.unlink(path)
        _build(x)
        monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    elif damage == "pickled member":
        np.savez(path, edges=np.array([Reduce(eval, (PAYLOAD,))], dtype=object), key=key, mac="0" * 64)
    elif damage == "wrong key":
        _forge(path, key=np.asarray(key.replace("k=5", "k=4")))
    elif damage == "signed but out of range":  # defence in depth: even a file this user signed
        from recgoat_recbole.knn_cache import _payload
        from recgoat_recbole.signing import sign

        bad = edges.copy()
        bad[0, 0] = 10_000
        _forge(path, edges=bad, mac=np.asarray(sign(_payload(key, bad))))
    caplog.clear()
    rebuilt = _build(x)
    messages = _messages(caplog)
    warnings = [r for r in caplog.records if r.name == LOGGER and r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "\n" not in warnings[0].getMessage(), messages
    assert warnings[0].getMessage().startswith(f"item kNN graph (t, k=5): cache {path} rejected"), messages
    assert " built in " in messages[-1] and torch.equal(rebuilt, good)
    assert not os.path.exists("PWNED")
    caplog.clear()
    assert torch.equal(_build(x), good) and "reused from" in _messages(caplog)[-1]  # the rebuilt file is valid


def test_a_cache_that_cannot_be_written_is_a_warning(caplog):
    caplog.set_level(logging.INFO, logger=LOGGER)
    open("blocked", "w").close()  # a file where the cache folder would be
    x = np.random.default_rng(2).normal(size=(30, 4)).astype(np.float32)
    assert torch.equal(_build(x, folder="blocked/cache"), knn_graph(x, 5))
    assert "not cached" in _messages(caplog)[-1]


# --------------------------------------------------------------------------------- a second model build
def _graphs(model) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    graphs = {m: g for m, g in model.alignment.graphs.items()}
    graphs["user"] = model.user_graph
    return {name: (g.src.clone(), g.dst.clone()) for name, g in graphs.items()}


def _first_loss(model, train) -> list[float]:
    torch.manual_seed(0)
    model.train()
    loss = model.calculate_loss(pairwise_batch(model, train))
    return [float(t.detach()) for t in (loss if isinstance(loss, tuple) else (loss,))]


def test_a_second_model_build_reuses_the_cached_graphs_and_says_so(mini_ml, caplog):
    """RecGOAT with the GAT views, the user graph and the alignment gate: five graphs built and cached by the
    first build, all five read back by the second, which has the same graphs and the same first loss."""
    caplog.set_level(logging.INFO, logger=LOGGER)
    config, _, train, _, first = build_recgoat(mini_ml, align_gate=True, align_gate_min_lift=1.0)
    built = _messages(caplog)
    assert len(built) == 5 and all(" built in " in m and "cached at recgoat_cache/ml-mini/knn-" in m for m in built)
    assert {m.split(":")[0] for m in built} == {
        "item kNN graph (genre, k=10)", "item kNN graph (text, k=10)", "user kNN graph (profiles, k=10)",
        "item kNN graph (genre, items with training interactions, k=10)",
        "item kNN graph (text, items with training interactions, k=10)"}
    caplog.clear()
    _, _, train2, _, second = build_recgoat(mini_ml, align_gate=True, align_gate_min_lift=1.0)
    reused = _messages(caplog)
    assert len(reused) == 5 and all(": reused from recgoat_cache/ml-mini/knn-" in m for m in reused), reused
    one, two = _graphs(first), _graphs(second)
    assert one.keys() == two.keys() and all(torch.equal(one[g][i], two[g][i]) for g in one for i in (0, 1))
    assert _first_loss(first, train) == _first_loss(second, train2)


def test_a_changed_feature_file_or_k_misses_the_cache(mini_ml, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger=LOGGER)
    build_recgoat(mini_ml, item_modalities={"genre": "genre.npz"}, user_profile_feat=None)
    caplog.clear()
    build_recgoat(mini_ml, item_modalities={"genre": "genre.npz"}, user_profile_feat=None, knn_k=8)
    assert _messages(caplog) and all(" built in " in m and "k=8" in m for m in _messages(caplog))
    data = tmp_path / "data"
    shutil.copytree(mini_ml["folder"], data / "ml-mini")
    genre = read_features(data / "ml-mini" / "genre.npz")
    genre.features[3] += 1.0  # one item's row
    write_features(data / "ml-mini" / "genre.npz", genre.tokens, genre.features)
    caplog.clear()
    build_recgoat({**mini_ml, "data_path": str(data)}, item_modalities={"genre": "genre.npz"}, user_profile_feat=None)
    assert _messages(caplog) and all(" built in " in m for m in _messages(caplog))


@pytest.mark.parametrize("model, label", [("FREEDOM", "item kNN graph (text, k=4, directed)"),
                                          ("LightGCN+Align", "item kNN graph (text, k=5)")])
def test_the_peers_and_the_plugin_share_the_cache(mini_ml, caplog, model, label):
    from recbole.config import Config
    from recbole.data import create_dataset, data_preparation
    from recbole.utils import get_model, init_seed

    from tests.conftest import mini_config

    caplog.set_level(logging.INFO, logger=LOGGER)
    config = Config(model=model, config_dict=mini_config(
        mini_ml, item_modalities={"text": "text.npz"}, user_profile_feat=None, knn_k=5, use_gat=True,
        embedding_size=16))
    init_seed(config["seed"], config["reproducibility"])
    train, _, _ = data_preparation(config, create_dataset(config))
    for verdict in ("built in", "reused from"):
        caplog.clear()
        get_model(model)(config, train._dataset)
        assert [m.split(": ")[0] for m in _messages(caplog)] == [label]
        assert verdict in _messages(caplog)[0]


# ------------------------------------------------------------------------------------------ query rows only
@pytest.mark.parametrize("backend", ["faiss", "torch"])
def test_query_rows_get_their_rows_of_the_whole_graph(backend):
    """knn_graph(queries=...): the directed edges of those rows of the whole graph, ties included; a query that is
    out of range, invalid (all zero, or the padding row) or repeated adds nothing."""
    pytest.importorskip("faiss") if backend == "faiss" else None
    x = torch.from_numpy(_copies())
    x[40] = 0
    whole = knn_graph(x, 7, 64, symmetric=False, backend=backend)
    queries = torch.tensor([599, 3, 40, 0, 3, 250, 700, 12])
    part = knn_graph(x, 7, 64, symmetric=False, backend=backend, queries=queries)
    kept = torch.isin(whole[1], torch.tensor([3, 12, 250, 599]))
    assert torch.equal(part, whole[:, kept]) and part.shape[1] == 4 * 7


def test_query_rows_have_their_own_cache_key(tmp_path):
    x = torch.from_numpy(_copies())
    q = torch.tensor([5, 9])
    assert graph_key(x, 5, False, True) != graph_key(x, 5, False, True, q) != graph_key(x, 5, False, True, q + 1)
    part = cached_knn_graph(x, 5, str(tmp_path), "t", symmetric=False, queries=q)
    whole = cached_knn_graph(x, 5, str(tmp_path), "t", symmetric=False)  # not the cached part
    assert part.shape[1] == 10 and whole.shape[1] > 10
    assert len(list(tmp_path.glob("knn-*.npz"))) == 2


def test_lift_searches_a_sample_of_items_beyond_max_pairs():
    """cooccurrence_lift: with items × k ≤ max_pairs the whole symmetric graph (as before); beyond, the directed
    neighbours of max_pairs // k random items, so the search covers those items only."""
    from recgoat_core.feature_signal import cooccurrence_lift

    g = torch.Generator().manual_seed(0)
    x = torch.randn(400, 8, generator=g)
    users, items = torch.randint(0, 50, (3000,), generator=g), torch.randint(0, 400, (3000,), generator=g)
    items[:400] = torch.arange(400)
    calls = []

    def knn(m, k, chunk, queries=None, symmetric=True):
        calls.append((None if queries is None else len(queries), symmetric))
        return knn_graph(m, k, chunk, skip_first=False, queries=queries, symmetric=symmetric)

    whole = cooccurrence_lift(x, users, items, k=10, max_pairs=4000, knn=knn)
    sampled = cooccurrence_lift(x, users, items, k=10, max_pairs=1000, knn=knn)
    assert calls == [(None, True), (100, False)]
    assert whole > 0 and sampled > 0


# ------------------------------------------------------------------------------------------ knn_search: hnsw
def test_hnsw_recall_against_the_exact_graph_and_the_same_graph_twice():
    """The approximate search on clustered rows (an item catalogue's shape: neighbours inside a cluster): recall@10
    against the exact graph ≥ 0.95, the same graph from the same rows, no self-loop, k per row; a query row gets
    its row of the approximate whole graph."""
    pytest.importorskip("faiss")
    g = torch.Generator().manual_seed(0)
    centres = torch.randn(80, 48, generator=g)
    x = centres[torch.randint(0, 80, (6000,), generator=g)] + 0.8 * torch.randn(6000, 48, generator=g)
    exact = knn_graph(x, 10, 1024, symmetric=False, backend="faiss")
    approx = knn_graph(x, 10, 1024, symmetric=False, backend="hnsw")
    assert approx.shape == exact.shape and not (approx[0] == approx[1]).any()
    assert torch.equal(torch.bincount(approx[1]), torch.bincount(exact[1]))  # k neighbours for each row
    recall = len(_pairs(exact) & _pairs(approx)) / exact.shape[1]
    assert recall >= 0.95, recall
    assert torch.equal(approx, knn_graph(x, 10, 1024, symmetric=False, backend="hnsw"))
    part = knn_graph(x, 10, 1024, symmetric=False, backend="hnsw", queries=torch.tensor([7, 4000]))
    assert torch.equal(part, approx[:, torch.isin(approx[1], torch.tensor([7, 4000]))])


def test_knn_search_hnsw_reaches_every_graph_of_the_run_with_its_own_cache_key(mini_ml, caplog):
    """knn_search: hnsw: the views', the user graph's and the gate's graphs are built approximately, logged as
    such and cached under keys of their own (an exact build after it reuses nothing)."""
    pytest.importorskip("faiss")
    caplog.set_level(logging.INFO, logger=LOGGER)
    build_recgoat(mini_ml, align_gate=True, align_gate_min_lift=1.0, knn_search="hnsw")
    built = _messages(caplog)
    assert len(built) == 5 and all("approximate: hnsw" in m and " built in " in m for m in built), built
    caplog.clear()
    build_recgoat(mini_ml, align_gate=True, align_gate_min_lift=1.0)
    exact = _messages(caplog)
    assert len(exact) == 5 and all(" built in " in m and "approximate" not in m for m in exact), exact
    with pytest.raises(Exception, match="knn_search"):
        build_recgoat(mini_ml, knn_search="annoy")


@pytest.mark.parametrize("name", ["scientific", "tiktok"])
def test_hnsw_on_the_shared_data_finds_the_exact_neighbours_and_the_gate_decides_alike(name):
    """The quality effect of knn_search: hnsw at RecGOAT's defaults, on the shared MMRec folders: each modality's
    recall@10 against the exact graph is at least 0.99, and the alignment gate's lift (over the training
    interactions, x_label 0) falls on the same side of the default threshold. The defaults read no other kNN
    graph (no GAT views; these folders have no user profiles), so there the run trains alike."""
    pytest.importorskip("faiss")
    import glob

    import pandas as pd

    from recgoat_core.feature_signal import cooccurrence_lift
    from recgoat_recbole.keys import defaults
    from tests.conftest import requires_shared

    path = requires_shared(name)
    inter = pd.read_csv(os.path.join(path, f"{name}.inter"), sep="\t")
    train = inter[inter["x_label"] == 0]
    users, items = torch.as_tensor(train["userID"].to_numpy()), torch.as_tensor(train["itemID"].to_numpy())
    threshold = defaults("RecGOAT")["align_gate_min_lift"]

    def approximate(x, k, chunk_size, queries=None, symmetric=True):
        return knn_graph(x, k, chunk_size, skip_first=False, queries=queries, symmetric=symmetric, backend="hnsw")

    files = sorted(glob.glob(os.path.join(path, "*_feat.npy")))
    assert len(files) == 2
    for file in files:
        x = torch.from_numpy(np.load(file)).float()
        exact = set(map(tuple, knn_graph(x, 10, symmetric=False).T.tolist()))
        found = set(map(tuple, knn_graph(x, 10, symmetric=False, backend="hnsw").T.tolist()))
        assert len(exact & found) / len(exact) >= 0.99, file
        lifts = cooccurrence_lift(x, users, items), cooccurrence_lift(x, users, items, knn=approximate)
        assert (lifts[0] >= threshold) == (lifts[1] >= threshold), (file, lifts)
