"""Loading a checkpoint or a dataset/dataloader cache cannot run code; caches are keyed by everything that
shapes the data; a checkpoint evaluates in a fresh process to what training reported. Each payload test plants
a file that would create ``PWNED`` in the working directory and asserts that nothing did."""
from __future__ import annotations

import glob
import json
import os
import pickle
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from recbole.config import Config

from recgoat_recbole import RecGOAT, patches
from recgoat_recbole.checkpoint import StoredConfig, stored_config
from tests.conftest import PAYLOAD, Reduce, mini_config, working_dir

@pytest.fixture(scope="module")
def trained(mini_ml, tmp_path_factory):
    """One RecGOAT training (3 epochs, checkpoint kept): its folder, checkpoint and reported test result."""
    from recbole.quick_start import run_recbole

    folder = tmp_path_factory.mktemp("trained")
    with working_dir(folder):
        result = run_recbole(model="RecGOAT", config_dict=mini_config(mini_ml, epochs=3))
    path = sorted(glob.glob(str(folder / "saved" / "*.pth")))[-1]
    return {"folder": folder, "path": path, "test": dict(result["test_result"])}


def _genuine(trained) -> dict:
    return torch.load(trained["path"], weights_only=False)


def _load_every_way(path, mini_ml):
    """The three RecBole entry points that read a checkpoint; each must refuse the file."""
    from recbole.quick_start import load_data_and_model
    from recbole.trainer import Trainer

    with pytest.raises(pickle.UnpicklingError):
        load_data_and_model(path)
    config = Config(model="Pop", config_dict=mini_config(mini_ml))
    from recbole.data import create_dataset, data_preparation
    from recbole.model.general_recommender import Pop

    train, valid, test = data_preparation(config, create_dataset(config))
    trainer = Trainer(config, Pop(config, train._dataset))
    with pytest.raises(pickle.UnpicklingError):
        trainer.resume_checkpoint(path)
    with pytest.raises(pickle.UnpicklingError):
        trainer.evaluate(test, load_best_model=True, model_file=path)


# ------------------------------------------------------------------------------------------ checkpoints
def test_config_payload_is_live_when_config_is_allowlisted(tmp_path, monkeypatch):
    """The attack the allowlist must stop: RecBole's own Config.__init__ evals strings of config_dict (after
    ``import recgoat_recbole`` it refuses them too: safe_config_values, tests/test_safety_config_values.py)."""
    from recgoat_recbole.config_check import ConfigError

    path = tmp_path / "evil.pth"
    torch.save({"config": Reduce(Config, ("Pop", "ml-100k", None, {"x": PAYLOAD}))}, path, pickle_protocol=2)
    with torch.serialization.safe_globals([Config]), pytest.raises(ConfigError, match="'x'"):
        torch.load(path)  # what the allowlist held before, with this package's Config: refused
    assert not os.path.exists("PWNED")
    monkeypatch.setattr(Config, "_convert_config_dict", patches.ORIGINALS["safe_config_values"]["_convert_config_dict"])
    with torch.serialization.safe_globals([Config]):  # RecBole's own eval: the payload runs
        torch.load(path)
    assert os.path.exists("PWNED")


@pytest.mark.parametrize("how", ["alone", "in_genuine"])
def test_checkpoint_config_reduce_runs_nothing(trained, mini_ml, tmp_path, how):
    state = _genuine(trained) if how == "in_genuine" else {}
    state["config"] = Reduce(Config, ("Pop", "ml-100k", None, {"x": PAYLOAD}))
    path = str(tmp_path / "evil.pth")
    torch.save(state, path, pickle_protocol=2)
    _load_every_way(path, mini_ml)
    assert not os.path.exists("PWNED")


def test_stored_config_and_recommender_classes_cannot_be_called(trained, tmp_path):
    from recbole.model.general_recommender import LightGCN
    from recbole.quick_start import load_data_and_model

    for payload in (Reduce(StoredConfig, ("Pop", "ml-100k", None, {"x": PAYLOAD})),
                    Reduce(LightGCN, (None, None))):
        state = _genuine(trained)
        state["other_parameter"] = payload
        path = str(tmp_path / "evil.pth")
        torch.save(state, path, pickle_protocol=2)
        with pytest.raises(pickle.UnpicklingError, match="refus"):
            load_data_and_model(path)
    assert not os.path.exists("PWNED")


def test_stored_config_value_that_recbole_evals_is_refused(trained, tmp_path):
    """KD_DAGFM eval()s config['teacher'] while being built: a stored value must be a bare identifier."""
    from recbole.quick_start import load_data_and_model

    state = _genuine(trained)
    state["config"].final_config_dict["teacher"] = PAYLOAD
    path = str(tmp_path / "evil.pth")
    torch.save(state, path, pickle_protocol=2)
    with pytest.raises(pickle.UnpicklingError, match="teacher"):
        load_data_and_model(path)
    assert not os.path.exists("PWNED")


def test_new_checkpoints_store_the_config_as_plain_data(trained):
    names = torch.serialization.get_unsafe_globals_in_checkpoint(trained["path"])
    assert not any(n.startswith(("recbole.", "yaml.", "recgoat_recbole.model")) for n in names), names
    config = _genuine(trained)["config"]
    assert isinstance(config, StoredConfig) and config["model"] == "RecGOAT"


def test_checkpoint_written_before_the_plain_config_format_still_loads(trained, tmp_path):
    """Earlier versions stored RecBole's Config object (protocol 2): it loads through stand-ins, safely."""
    from recbole.quick_start import load_data_and_model

    state = _genuine(trained)
    legacy = Config.__new__(Config)
    legacy.__dict__.update(state["config"].__dict__)
    state["config"] = legacy
    path = str(tmp_path / "legacy.pth")
    torch.save(state, path, pickle_protocol=2)
    assert "recbole.config.configurator.Config" in torch.serialization.get_unsafe_globals_in_checkpoint(path)
    config, model, *_ = load_data_and_model(path)
    assert isinstance(model, RecGOAT) and config["model"] == "RecGOAT" and config.model_class is RecGOAT
    for key, value in model.state_dict().items():
        torch.testing.assert_close(value, state["state_dict"][key])


def test_fresh_process_evaluation_of_the_checkpoint_equals_the_reported_test(trained):
    """``load_data_and_model`` then ``Trainer.evaluate`` in a new interpreter (no Config built there, so the
    numpy aliases must come from import) scores exactly what ``run_recbole`` reported for the best checkpoint."""
    code = textwrap.dedent(f"""
        import json, os
        os.chdir({str(trained['folder'])!r})
        import recgoat_recbole
        from recbole.quick_start import load_data_and_model
        from recbole.utils import get_trainer
        config, model, dataset, train, valid, test = load_data_and_model({trained['path']!r})
        trainer = get_trainer(config["MODEL_TYPE"], config["model"])(config, model)
        print(json.dumps(dict(trainer.evaluate(test, load_best_model=False))))
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-3000:]
    fresh = json.loads(out.stdout.strip().splitlines()[-1])
    assert fresh == pytest.approx(trained["test"], abs=1e-9)


def test_eval_cache_follows_loaded_parameters(mini_ml):
    """RecGOAT caches its eval embeddings; loading other parameters (as Trainer.evaluate(load_best_model=True)
    does, in eval mode) must not score with the stale ones."""
    from recbole.data import create_dataset, data_preparation

    config = Config(model=RecGOAT, config_dict=mini_config(mini_ml, backbone="LightGCN"))
    train, _, _ = data_preparation(config, create_dataset(config))
    model = RecGOAT(config, train._dataset)
    other = {k: v.clone() for k, v in model.state_dict().items()}
    model.eval()
    batch = {model.USER_ID: torch.arange(1, 5)}
    before = model.full_sort_predict(batch).clone()
    with torch.no_grad():  # an optimiser step outside the trainer, still in eval mode
        model.user_embedding.weight.add_(1.0)
    moved = model.full_sort_predict(batch).clone()
    assert not torch.allclose(before, moved)
    model.load_state_dict(other)
    torch.testing.assert_close(model.full_sort_predict(batch), before)
    # tensors swapped rather than copied into (assign=True, .to()): the tracked list follows, still in eval mode
    shifted = {k: (v + 1.0 if k == "user_embedding.weight" else v) for k, v in other.items()}
    model.load_state_dict(shifted, assign=True)
    torch.testing.assert_close(model.full_sort_predict(batch), moved)
    model.to(torch.float64)
    assert model.full_sort_predict(batch).dtype == torch.float64
    model.to(torch.float32).load_state_dict(other)
    torch.testing.assert_close(model.full_sort_predict(batch), before)


# ------------------------------------------------------------------------------------- dataset caches
def _plant(path: str) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "wb") as f:
        pickle.dump(Reduce(exec, (f"{PAYLOAD}",)), f)


@pytest.mark.parametrize("model", ["RecGOAT", "LightGCN"])
def test_planted_dataset_and_dataloader_caches_are_not_unpickled(mini_ml, model):
    from recbole.quick_start import run_recbole

    dataset_class = "FeatureDataset" if model == "RecGOAT" else "Dataset"
    _plant(f"saved/ml-mini-{dataset_class}.pth")
    _plant(f"saved/ml-mini-for-{model}-dataloader.pth")
    run_recbole(model=model, config_dict=mini_config(mini_ml, epochs=1, save_dataset=True,
                                                       save_dataloaders=True), saved=False)
    assert not os.path.exists("PWNED")
    assert glob.glob("saved/*.recgoat-cache")  # our signed caches were written instead


def test_explicit_plain_pickle_cache_path_is_refused_with_one_line(mini_ml):
    from recbole.data import create_dataset

    from recgoat_recbole.dataset_cache import CacheError

    _plant("mine.pth")
    with pytest.raises(CacheError, match="plain pickle"):
        create_dataset(Config(model=RecGOAT, config_dict=mini_config(mini_ml, dataset_save_path="mine.pth")))
    assert not os.path.exists("PWNED")


def test_dataset_cache_is_keyed_by_modalities_and_feature_contents(mini_ml, tmp_path):
    """Switching modalities or rewriting a feature file (same size) must not reuse the cached features."""
    import shutil

    from recbole.data import create_dataset

    from recgoat_core.feature_files import read_features, write_features

    data = tmp_path / "data"
    shutil.copytree(mini_ml["folder"], data / "ml-mini")
    base = dict(mini_config(mini_ml), data_path=str(data), save_dataset=True)
    first = create_dataset(Config(model=RecGOAT, config_dict=base))
    assert set(first.item_features) == {"text", "genre"}
    again = create_dataset(Config(model=RecGOAT, config_dict=base))
    np.testing.assert_array_equal(again.item_features["text"], first.item_features["text"])
    assert len(glob.glob("saved/*.recgoat-cache")) == 1  # the second call read the cache

    text_only = create_dataset(Config(model=RecGOAT, config_dict=dict(base, item_modalities={"text": "text.npz"})))
    assert set(text_only.item_features) == {"text"}

    genre = read_features(data / "ml-mini" / "genre.npz")
    write_features(data / "ml-mini" / "genre.npz", genre.tokens, genre.features[::-1].copy())  # same size
    changed = create_dataset(Config(model=RecGOAT, config_dict=base))
    assert not np.array_equal(changed.item_features["genre"], first.item_features["genre"])


def test_cache_signed_by_another_user_is_rebuilt_not_loaded(mini_ml, monkeypatch, tmp_path, caplog):
    from recbole.data import create_dataset

    config = Config(model=RecGOAT, config_dict=mini_config(mini_ml, save_dataset=True))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "other-user"))
    create_dataset(config)
    (cache,) = glob.glob("saved/*.recgoat-cache")
    with open(cache, "rb") as f:
        blob = f.read()
    with open(cache, "wb") as f:  # the other user's file, with a payload: its MAC is still theirs
        f.write(blob.split(b"\n", 3)[0] + b"\n" + b"\n".join(blob.split(b"\n", 3)[1:3]) + b"\n"
                + pickle.dumps(Reduce(exec, (PAYLOAD,))))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "me"))
    dataset = create_dataset(config)
    assert not os.path.exists("PWNED")
    assert set(dataset.item_features) == {"text", "genre"}
    assert "signature does not verify" in caplog.text
