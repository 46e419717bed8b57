"""The signing key cannot be forged or planted, a checkpoint cannot allocate what it likes nor set arbitrary
attributes, and saving a new best checkpoint never destroys the previous one (Ctrl-C, a full disk)."""
from __future__ import annotations

import copyreg
import errno
import glob
import os
import pickle

import numpy as np
import pytest
import torch
import yaml

from tests.conftest import PAYLOAD, Reduce, mini_config, working_dir


@pytest.fixture(scope="module")
def bpr(mini_ml, tmp_path_factory):
    """One BPR training (1 epoch, checkpoint kept): its folder and checkpoint."""
    from recgoat_recbole.training import run_training

    folder = tmp_path_factory.mktemp("bpr")
    with working_dir(folder):
        result = run_training(model="BPR", config_dict=mini_config(mini_ml, epochs=1), log_details=False)
        result.trainer.saved_model_file = os.path.abspath(result.checkpoint)
        result.checkpoint = result.trainer.saved_model_file
    return {"folder": folder, "path": result.checkpoint, "trainer": result.trainer, "test": result.data[2]}


# ------------------------------------------------------------------------------------------ the signing key
@pytest.fixture()
def key_home(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    from recgoat_recbole.signing import key_file

    return key_file()


def test_a_new_key_is_32_bytes_mode_0600_and_reused(key_home):
    from recgoat_recbole.signing import secret_key

    key = secret_key()
    assert len(key) == 32 and oct(os.stat(key_home).st_mode & 0o777) == "0o600" and secret_key() == key


def _plant(path: str, content: bytes, mode: int = 0o600) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(content)
    os.chmod(path, mode)


@pytest.mark.parametrize(("content", "mode", "message"), [
    (b"", 0o600, "holds 0 bytes"), (b"short", 0o600, "holds 5 bytes"), (b"k" * 32, 0o644, "mode 644"),
    (b"k" * 32, 0o660, "mode 660"),
])
def test_a_short_or_open_key_file_is_refused(key_home, content, mode, message):
    from recgoat_recbole.signing import KeyFileError, secret_key

    _plant(key_home, content, mode)
    with pytest.raises(KeyFileError, match=message):
        secret_key()


def test_a_key_owned_by_someone_else_is_refused(key_home):
    if os.getuid() != 0:
        pytest.skip("chown to another user needs root")
    from recgoat_recbole.signing import KeyFileError, secret_key

    _plant(key_home, b"k" * 32)
    os.chown(key_home, 12345, 12345)
    with pytest.raises(KeyFileError, match="owned by uid 12345"):
        secret_key()


def test_a_key_that_is_a_folder_or_a_link_is_refused(key_home, tmp_path):
    from recgoat_recbole.signing import KeyFileError, secret_key

    os.makedirs(key_home)
    with pytest.raises(KeyFileError, match="not a regular file"):
        secret_key()
    os.rmdir(key_home)
    _plant(str(tmp_path / "elsewhere"), b"k" * 32)
    os.symlink(tmp_path / "elsewhere", key_home)
    with pytest.raises(KeyFileError, match="symbolic link"):
        secret_key()


def test_a_key_folder_that_cannot_be_made_is_one_error(tmp_path, monkeypatch):
    from recgoat_recbole.signing import KeyFileError, secret_key

    (tmp_path / "afile").write_text("x")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "afile"))
    with pytest.raises(KeyFileError, match="cannot create the signing key"):
        secret_key()


def test_a_cache_forged_under_an_empty_key_never_loads(mini_ml, key_home, capsys):
    """The issue's end-to-end attack: an empty key file, then a cache signed with the key b"" (whose HMAC anyone
    can compute) -- the run is one error line and the payload never runs."""
    import hashlib
    import hmac

    from recgoat_cli import main

    _plant(key_home, b"")
    with open("mini.yaml", "w", encoding="utf-8") as f:
        yaml.safe_dump(mini_config(mini_ml, epochs=1, save_dataset=True), f)
    os.makedirs("saved")
    from recbole.config import Config

    from recgoat_recbole import RecGOAT
    from recgoat_recbole.dataset_cache import _MAGIC, _SUFFIX, dataset_key

    config = Config(model=RecGOAT, config_dict=mini_config(mini_ml, save_dataset=True))
    from recgoat_recbole.dataset import FeatureDataset

    key = dataset_key(config, FeatureDataset)
    payload = pickle.dumps(Reduce(exec, (PAYLOAD,)))
    mac = hmac.new(b"", key.encode() + b"\n" + payload, hashlib.sha256).hexdigest().encode()
    with open(f"saved/ml-mini-FeatureDataset-{key[:16]}{_SUFFIX}", "wb") as f:
        f.write(_MAGIC + key.encode() + b"\n" + mac + b"\n" + payload)
    code = main(["run", "--config", "mini.yaml", "--no-save"])
    err = capsys.readouterr().err
    assert code == 2 and "signing key" in err and "holds 0 bytes" in err and len(err.strip().splitlines()) == 1
    assert not os.path.exists("PWNED")


# ---------------------------------------------------------------------------------------------- allocation
@pytest.mark.parametrize("bomb", [
    Reduce(copyreg._reconstructor, (np.ndarray, np.ndarray, (10**6, 10**6))),
    Reduce(np.core.multiarray._reconstruct if hasattr(np, "core") else None, (np.ndarray, (10**6, 10**6), b"b")),
], ids=["copyreg._reconstructor", "_reconstruct"])
def test_a_checkpoint_cannot_allocate_more_than_it_holds(bpr, tmp_path, bomb):
    from recgoat_recbole.patches.safe_checkpoints import recbole_checkpoint_globals

    state = torch.load(bpr["path"], weights_only=False)
    state["other_parameter"] = {"w": bomb}
    path = str(tmp_path / "bomb.pth")
    torch.save(state, path, pickle_protocol=2)
    with recbole_checkpoint_globals(path), pytest.raises(pickle.UnpicklingError, match="more than the file's"):
        torch.load(path)


def test_genuine_numpy_and_sparse_other_parameters_still_load(tmp_path):
    import scipy.sparse as sp

    from recgoat_recbole.patches.safe_checkpoints import recbole_checkpoint_globals

    dok = sp.dok_matrix((4, 4))
    dok[1, 2] = 3.0
    value = {"a": np.arange(12.0).reshape(3, 4), "csr": sp.random(50, 50, density=0.1, format="csr"), "dok": dok,
             "lil": sp.lil_matrix(np.eye(3))}
    path = str(tmp_path / "ok.pth")
    torch.save({"other_parameter": value}, path, pickle_protocol=2)
    with recbole_checkpoint_globals(path):
        loaded = torch.load(path)["other_parameter"]
    assert np.array_equal(loaded["a"], value["a"]) and (loaded["csr"] != value["csr"]).nnz == 0
    assert loaded["dok"][1, 2] == 3.0 and (loaded["lil"].toarray() == np.eye(3)).all()


# ------------------------------------------------------------------------------------------ other_parameter
@pytest.mark.parametrize("other", [{"training": "yes"}, {"forward": np.zeros(3)}, ["restore_user_e"]])
def test_other_parameter_must_be_the_models_own(bpr, tmp_path, other):
    from recbole.quick_start import load_data_and_model

    state = torch.load(bpr["path"], weights_only=False)
    state["other_parameter"] = other
    path = str(tmp_path / "other.pth")
    torch.save(state, path, pickle_protocol=2)
    with pytest.raises(pickle.UnpicklingError, match="other_parameter"):
        load_data_and_model(path)
    trainer = bpr["trainer"]
    with pytest.raises(pickle.UnpicklingError, match="other_parameter"):
        trainer.evaluate(bpr["test"], model_file=path)
    assert isinstance(trainer.model.training, bool) and "load_other_parameter" not in vars(trainer.model)


def test_a_lightgcn_checkpoint_with_its_own_other_parameters_loads(mini_ml):
    from recbole.quick_start import load_data_and_model

    from recgoat_recbole.training import run_training

    result = run_training(model="LightGCN", config_dict=mini_config(mini_ml, epochs=1), log_details=False)
    _, model, *_ = load_data_and_model(result.checkpoint)
    assert model.restore_user_e is None or isinstance(model.restore_user_e, torch.Tensor)


# -------------------------------------------------------------------------------------- saving checkpoints
def _checkpoints(folder) -> list[str]:
    return sorted(os.listdir(folder))


@pytest.mark.parametrize("failure", [KeyboardInterrupt(), OSError(errno.ENOSPC, "No space left on device")],
                         ids=["ctrl-c", "full-disk"])
def test_a_failed_save_keeps_the_previous_best_checkpoint(bpr, monkeypatch, failure):
    """Ctrl-C (or a full disk) while the trainer writes a new best checkpoint: the old one stays whole and
    loads, and no temporary file is left next to it."""
    from recbole.quick_start import load_data_and_model

    trainer, path = bpr["trainer"], bpr["path"]
    before = open(path, "rb").read()
    real_save = torch.save

    def interrupted(obj, f, *args, **kwargs):
        real_save(obj, f, *args, **kwargs)  # most of the bytes are out ...
        f.truncate(max(1, f.tell() // 2))
        raise failure  # ... when the user presses Ctrl-C / the disk fills up

    monkeypatch.setattr(torch, "save", interrupted)
    with pytest.raises(type(failure)) as exc:
        trainer._save_checkpoint(0, verbose=False)
    monkeypatch.setattr(torch, "save", real_save)
    if isinstance(failure, OSError):
        assert exc.value.filename == path  # the error names the checkpoint
    assert open(path, "rb").read() == before and _checkpoints(os.path.dirname(path)) == [os.path.basename(path)]
    load_data_and_model(path)


def test_a_checkpoint_keeps_the_umask_mode(bpr):
    umask = os.umask(0)
    os.umask(umask)
    bpr["trainer"]._save_checkpoint(0, verbose=False)
    assert os.stat(bpr["path"]).st_mode & 0o777 == 0o666 & ~umask


def test_a_full_disk_at_a_cli_save_is_one_line(mini_ml, monkeypatch, capsys):
    from recgoat_cli import main

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", full)
    with open("mini.yaml", "w", encoding="utf-8") as f:
        yaml.safe_dump(mini_config(mini_ml, epochs=1), f)
    code = main(["run", "--config", "mini.yaml", "--model", "BPR"])
    errors = [line for line in capsys.readouterr().err.splitlines() if not line.startswith("epoch ")]
    assert code == 2 and len(errors) == 1 and errors[0].startswith("recgoat: error: cannot write saved/")
    assert "No space left" in errors[0] and not glob.glob("saved/.*.tmp")


def test_a_dataset_cache_that_cannot_be_written_is_a_warning(mini_ml, monkeypatch, caplog):
    from recbole.config import Config
    from recbole.data import create_dataset

    from recgoat_recbole import RecGOAT, dataset_cache

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(dataset_cache, "write_signed", full)
    dataset = create_dataset(Config(model=RecGOAT, config_dict=mini_config(mini_ml, save_dataset=True)))
    assert dataset.item_num > 1 and "could not write the cache" in caplog.text


# ------------------------------------------------------------------------------------- what the cache key sees
def test_the_dataset_cache_key_sees_ids_sidecars_and_every_dataset_setting(mini_ml, tmp_path):
    """A feature file outside the dataset folder with its ``.ids`` sidecar reversed (same rows, other items),
    and ``numerical_features`` / ``discretization`` (not in RecBole's ``dataset_arguments``): each changes the
    key, so a cache built before is never served."""
    from recbole.config import Config

    from recgoat_recbole import RecGOAT
    from recgoat_recbole.dataset import FeatureDataset
    from recgoat_recbole.dataset_cache import dataset_key
    from recgoat_core.feature_files import read_features

    text = read_features(os.path.join(mini_ml["folder"], "text.npz"))
    outside = tmp_path / "text.npy"
    np.save(outside, text.features)
    (tmp_path / "text.npy.ids").write_text("\n".join(text.tokens) + "\n")

    def key(**overrides) -> str:
        config = Config(model=RecGOAT, config_dict=mini_config(mini_ml, item_modalities={"text": str(outside)},
                                                               **overrides))
        return dataset_key(config, FeatureDataset)

    first = key()
    (tmp_path / "text.npy.ids").write_text("\n".join(text.tokens[::-1]) + "\n")
    reversed_ids = key()
    assert reversed_ids != first
    assert key(numerical_features=["timestamp"]) != reversed_ids
    assert key(discretization={"timestamp": {"method": "ED", "bucket": 5}}) != reversed_ids
    assert key() == reversed_ids  # and the key is stable
