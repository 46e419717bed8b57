"""User profiles: no leakage from valid/test, the template backend, the HTTP backend on loopback, resume."""
from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import numpy as np
import pytest
from recbole.config import Config
from recbole.data import create_dataset, data_preparation
from recbole.utils import init_seed

from recgoat_recbole import RecGOAT
from recgoat_recbole.features.profiles import (
    build_prompt,
    extract_answer,
    extract_profile_features,
    generate_profiles,
    template_profile,
    training_histories,
)
from recgoat_core.feature_files import read_features
from tests.conftest import mini_config


def _splits(config):
    """The three splits exactly as run_recbole builds them."""
    init_seed(config["seed"], config["reproducibility"])
    dataset = create_dataset(config)
    train, valid, test = data_preparation(config, dataset)
    out = []
    for loader in (train, valid, test):
        d = loader._dataset
        users = d.id2token(d.uid_field, d.inter_feat[d.uid_field].numpy())
        items = d.id2token(d.iid_field, d.inter_feat[d.iid_field].numpy())
        out.append(set(zip(users.tolist(), items.tolist())))
    return out


def test_profiles_use_the_training_split_only(mini_ml):
    config = Config(model=RecGOAT, config_dict=mini_config(mini_ml))
    histories, _, _ = training_histories(config)
    train, valid, test = _splits(Config(model=RecGOAT, config_dict=mini_config(mini_ml)))
    profile_pairs = {(u, i) for u, items in histories.items() for i in items}
    assert profile_pairs == train  # exactly the training interactions ...
    assert not profile_pairs & (valid | test)  # ... and no valid/test item of that user
    assert valid and test


def test_auto_template_profiles_are_built_from_the_training_split(mini_ml):
    config = Config(model=RecGOAT, config_dict=mini_config(
        mini_ml, user_profile_feat="auto:template:movie_title,class"))
    init_seed(config["seed"], config["reproducibility"])
    train, _, _ = data_preparation(config, create_dataset(config))
    features = train._dataset.user_features
    assert features is not None and features.shape[0] == train._dataset.user_num
    cached = list((__import__("pathlib").Path("recgoat_cache") / "ml-mini").glob("profiles-template-*.jsonl"))
    assert len(cached) == 1
    records = [json.loads(line) for line in cached[0].read_text().splitlines()]
    train_pairs, _, _ = _splits(config)
    assert len(records) == len({u for u, _ in train_pairs})
    for record in records:  # each profile counts exactly the user's training items
        assert "not an LLM" in record["profile"]
        n_train = sum(1 for u, _ in train_pairs if u == record["user"])
        assert f"of {n_train} training items" in record["profile"]


def test_template_profile_is_deterministic_and_labelled():
    import pandas as pd

    rows = pd.DataFrame({"movie_title": ["Star Wars", "Star Trek", "Heat"],
                         "class": ["Sci-Fi Action", "Sci-Fi", "Crime"], "release_year": ["1977", "1979", "1995"]})
    text = template_profile(rows, ["movie_title", "class", "release_year"])
    assert text == template_profile(rows, ["movie_title", "class", "release_year"])
    assert "not an LLM" in text and "Sci-Fi (2)" in text and "1970s (2)" in text and "star" in text


def test_extract_answer():
    assert extract_answer("<think>hmm</think> <answer> likes jazz </answer>") == "likes jazz"
    assert extract_answer("<think>x</think>plain reply") == "plain reply"
    assert extract_answer("<answer>cut off") == "cut off"


class _FakeLLM(BaseHTTPRequestHandler):
    calls: list[str] = []

    def do_POST(self):  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        prompt = body["messages"][0]["content"]
        type(self).calls.append(prompt)
        user = prompt.split("User ID: ")[1].split("\n")[0]
        reply = f"<think>reasoning</think><answer>profile of user {user}</answer>"
        payload = json.dumps({"choices": [{"message": {"content": reply}}]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args):  # keep test output clean
        pass


@pytest.fixture()
def fake_llm_url():
    _FakeLLM.calls = []
    server = HTTPServer(("127.0.0.1", 0), _FakeLLM)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()
    server.server_close()


def test_http_backend_on_loopback_end_to_end(mini_ml, fake_llm_url, tmp_path):
    config = Config(model=RecGOAT, config_dict=mini_config(mini_ml))
    out = extract_profile_features(config, str(tmp_path / "profiles.npz"), columns=["movie_title", "class"],
                                   backend="http", url=fake_llm_url, show_progress=False)
    f = read_features(out)
    histories, _, _ = training_histories(Config(model=RecGOAT, config_dict=mini_config(mini_ml)))
    assert sorted(f.tokens.tolist()) == sorted(histories)
    assert len(_FakeLLM.calls) == len(histories)
    # the prompt carries the user's training items and the paper's two-step instructions
    first = next(c for c in _FakeLLM.calls if "User ID: " + sorted(histories)[0] + "\n" in c)
    assert "Identify Common Attributes" in first and "<answer>" in first
    texts = [json.loads(line)["profile"] for line in open(out + ".profiles.jsonl")]
    assert all(t.startswith("profile of user ") for t in texts)


def test_generation_resumes_after_interruption(tmp_path):
    cache = str(tmp_path / "cache.jsonl")
    calls = []

    def flaky(prompt):
        calls.append(prompt)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return f"<answer>{prompt}</answer>"

    with pytest.raises(KeyboardInterrupt):
        generate_profiles(["a", "b", "c", "d"], lambda u: u, flaky, cache, show_progress=False)
    second = []

    def steady(prompt):
        second.append(prompt)
        return f"<answer>{prompt}</answer>"

    done = generate_profiles(["a", "b", "c", "d"], lambda u: u, steady, cache, show_progress=False)
    assert done == {"a": "a", "b": "b", "c": "c", "d": "d"}
    assert second == ["c", "d"]  # a and b came from the cache written before the interruption


def test_prompt_keeps_the_last_items():
    prompt = build_prompt("u1", [(str(i), f"item {i}") for i in range(100)], max_items=10)
    assert "item 99" in prompt and "item 89" not in prompt and "User ID: u1" in prompt


@pytest.fixture(scope="module")
def tiny_causal_lm(tmp_path_factory) -> str:
    """A randomly initialised 1-layer GPT-2 with a word-level tokenizer, saved locally (no download)."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("tiny-lm")
    words = ["[UNK]", "[PAD]", "<answer>", "</answer>", "likes", "drama", "comedy", "user", "items"]
    tokenizer = Tokenizer(models.WordLevel(vocab={w: i for i, w in enumerate(words)}, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, unk_token="[UNK]", pad_token="[PAD]",
                                   eos_token="[PAD]")
    fast.save_pretrained(folder)
    config = GPT2Config(vocab_size=len(words), n_positions=4096, n_embd=16, n_layer=1, n_head=2,
                        bos_token_id=1, eos_token_id=1, pad_token_id=1)
    GPT2LMHeadModel(config).save_pretrained(folder)
    return str(folder)


def test_transformers_backend_with_a_local_model(mini_ml, tiny_causal_lm, tmp_path):
    from recgoat_recbole.features.profiles import TransformersBackend

    backend = TransformersBackend(tiny_causal_lm, max_new_tokens=4)
    histories, _, _ = training_histories(Config(model=RecGOAT, config_dict=mini_config(mini_ml)))
    users = sorted(histories)[:3]
    prompt_of = lambda u: build_prompt(u, [(i, f"item {i}") for i in histories[u]], max_items=5)  # noqa: E731
    cache = str(tmp_path / "p.jsonl")
    done = generate_profiles(users, prompt_of, backend, cache, show_progress=False)
    assert sorted(done) == users and all(isinstance(v, str) for v in done.values())
    assert len(open(cache).readlines()) == 3


def test_profiles_file_has_the_documented_mask(tmp_path):
    """docs/features.md: every extractor writes ids, features and mask; the profiles file had no mask."""
    from recgoat_recbole.features.profiles import _embed_profiles

    path = _embed_profiles({"1": "likes drama", "2": ""}, str(tmp_path / "p.npz"), None, show_progress=False)
    with np.load(path) as data:
        assert data["mask"].tolist() == [True, False] and list(data["ids"]) == ["1", "2"]
