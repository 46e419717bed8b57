"""One test (at least) per fix in recgoat_recbole.compat; each fails without its fix on today's stack."""
from __future__ import annotations

import glob
import os
import pickle
import subprocess
import sys

import numpy as np
import pytest
import scipy.sparse as sp
import torch

import recgoat_recbole
from recgoat_recbole import RecGOAT, compat


def test_all_fixes_applied_once():
    assert compat.apply() == ["numpy_aliases", "ray_import", "scipy_dok_update", "safe_config_values",
                              "safe_checkpoints",
                              "safe_dataset_cache", "ddp_cpu", "pop_counts"]
    assert compat.apply() == compat.APPLIED  # idempotent


def test_originals_are_recboles_own_functions_even_where_two_fixes_wrap_one():
    """ddp_cpu wraps the evaluate that safe_checkpoints wrapped: both must record RecBole's own evaluate."""
    from recbole.trainer import trainer as trainer_mod

    from recgoat_recbole.compat import recbole_original

    own = compat.ORIGINALS["safe_checkpoints"]["evaluate"]
    assert compat.ORIGINALS["ddp_cpu"]["evaluate"] is own
    assert own.__module__ == "recbole.trainer.trainer" and not getattr(own, "__recgoat_compat__", False)
    assert recbole_original(trainer_mod.Trainer.evaluate) is own  # the installed chain ends in it


# --------------------------------------------------------------------------------------------- numpy 2
def test_config_builds_on_numpy2_and_old_aliases_exist():
    from recbole.config import Config

    config = Config(model="BPR", dataset="ml-100k")
    assert config["model"] == "BPR"
    # the aliases RecBole's metrics use are set, to numpy-2-valid types
    assert np.float is np.float64 and np.bool is np.bool_ and np.unicode is np.str_


@pytest.mark.skipif(np.lib.NumpyVersion(np.__version__) < "2.0.0", reason="numpy 1 still has np.float_")
def test_original_compatibility_settings_breaks_on_numpy2():
    with pytest.raises(AttributeError):
        compat.ORIGINALS["numpy_aliases"](object())
    assert "float_" not in np.__dict__  # we did not put the removed numpy-2 names back


# ------------------------------------------------------------------------------------------- scipy 1.12
def test_dok_update_fills_entries():
    m = sp.dok_matrix((3, 4), dtype=np.float32)
    m._update({(0, 1): 2.0, (2, 3): 5.0})
    assert m.nnz == 2
    np.testing.assert_array_equal(m.toarray(), [[0, 2, 0, 0], [0, 0, 0, 0], [0, 0, 0, 5]])


def test_recbole_lightgcn_builds_its_adjacency(mini_ml):
    from recbole.config import Config
    from recbole.data import create_dataset, data_preparation
    from recbole.model.general_recommender import LightGCN

    config = Config(model="LightGCN", config_dict={"data_path": mini_ml["data_path"], "dataset": "ml-mini"})
    train, _, _ = data_preparation(config, create_dataset(config))
    model = LightGCN(config, train._dataset)  # calls dok_matrix._update
    assert model.norm_adj_matrix._nnz() == 2 * len(train._dataset.inter_feat)


# --------------------------------------------------------------------------------------- ray/setuptools
def test_quick_start_imports_without_pkg_resources_and_bool8_is_gone():
    code = (
        "import sys, importlib.abc\n"
        "class Block(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path, target=None):\n"
        "        if name == 'pkg_resources': raise ImportError('blocked for the test')\n"
        "sys.meta_path.insert(0, Block())\n"
        "import recgoat_recbole, numpy as np\n"
        "import recbole.quick_start, pkg_resources\n"
        "assert 'shim' in (pkg_resources.__doc__ or ''), pkg_resources\n"
        "assert pkg_resources.get_distribution('numpy').version == np.__version__\n"
        "assert 'bool8' not in np.__dict__\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().endswith("ok")


def test_shim_names_itself_for_unknown_attributes():
    shim = compat._build_pkg_resources_shim()
    with pytest.raises(AttributeError, match="shim"):
        shim.working_set  # noqa: B018


# -------------------------------------------------------------------------------------- torch 2.6 loads
def _train_once(mini_ml, model="RecGOAT"):
    from recbole.quick_start import run_recbole
    from tests.conftest import mini_config

    result = run_recbole(model=model, config_dict=mini_config(mini_ml, epochs=1))
    return result, sorted(glob.glob("saved/*.pth"))[-1]


def test_trainer_reloads_and_load_data_and_model_reads_recgoat_checkpoint(mini_ml):
    from recbole.quick_start import load_data_and_model

    result, path = _train_once(mini_ml)
    assert set(result["test_result"]) == {"recall@10", "ndcg@10"}
    # safe loading is still on process-wide: a bare torch.load refuses RecBole's Config ...
    with pytest.raises(pickle.UnpicklingError):
        torch.load(path)
    # ... and the compat path loads it with RecBole's classes allowlisted
    config, model, dataset, train, valid, test = load_data_and_model(path)
    assert isinstance(model, RecGOAT) and config["model"] == "RecGOAT"
    state = torch.load(path, weights_only=False)["state_dict"]
    for key, value in model.state_dict().items():
        torch.testing.assert_close(value, state[key])


@pytest.mark.parametrize("model", ["ItemKNN", "EASE", "Pop"])
def test_nonparametric_builtins_reload_their_numpy_and_scipy_state(mini_ml, model):
    """ItemKNN / EASE / Pop keep scipy sparse matrices and numpy arrays in the checkpoint's other_parameter."""
    result, path = _train_once(mini_ml, model)
    assert 0 < result["test_result"]["ndcg@10"] <= 1
    with compat.recbole_checkpoint_globals(path):
        loaded = torch.load(path)["other_parameter"]
    reference = torch.load(path, weights_only=False)["other_parameter"]
    assert loaded.keys() == reference.keys()
    for key, value in reference.items():
        if hasattr(value, "toarray"):
            assert type(loaded[key]) is type(value)
            np.testing.assert_array_equal(loaded[key].toarray(), value.toarray())
        else:
            np.testing.assert_array_equal(np.asarray(loaded[key]), np.asarray(value))


def test_scipy_globals_outside_the_sparse_matrix_classes_are_refused(tmp_path):
    import scipy.sparse.linalg

    path = tmp_path / "odd.pth"
    torch.save({"other_parameter": {"f": scipy.sparse.linalg.spsolve}}, path, pickle_protocol=2)
    with pytest.raises(pickle.UnpicklingError, match="spsolve"):
        with compat.recbole_checkpoint_globals(str(path)):
            pass


def test_pop_counts_every_interaction_even_repeated_in_a_batch():
    from recbole.model.general_recommender.pop import Pop

    class FakePop:
        ITEM_ID = "item_id"
        device = torch.device("cpu")

        def __init__(self):
            self.item_cnt = torch.zeros(5, 1, dtype=torch.long)

    batch = {"item_id": torch.tensor([1, 1, 1, 2, 4, 4])}
    fixed, original = FakePop(), FakePop()
    Pop.calculate_loss(fixed, batch)
    compat.ORIGINALS["pop_counts"]["calculate_loss"](original, batch)
    assert fixed.item_cnt.flatten().tolist() == [0, 3, 1, 0, 2] and fixed.max_cnt.item() == 3
    assert original.item_cnt.flatten().tolist() == [0, 1, 1, 0, 1]  # RecBole's: once per batch


def test_checkpoint_with_foreign_global_is_refused(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"config": os.system, "state_dict": {}}, path)
    with pytest.raises(pickle.UnpicklingError, match="os.system|posix.system"):
        with compat.recbole_checkpoint_globals(str(path)):
            pass


def test_original_recbole_checkpoint_format_cannot_be_loaded_safely(tmp_path):
    path = tmp_path / "p4.pth"
    torch.save({"x": torch.ones(2)}, path, pickle_protocol=4)
    with pytest.raises(pickle.UnpicklingError, match="protocol"):
        with compat.recbole_checkpoint_globals(str(path)):
            pass


# -------------------------------------------------------------------------------------- external models
def test_run_recbole_with_class_and_with_name(mini_ml):
    from recbole.quick_start import run_recbole
    from tests.conftest import mini_config

    by_class = run_recbole(model=RecGOAT, config_dict=mini_config(mini_ml, epochs=1), saved=False)
    by_name = run_recbole(model="RecGOAT", config_dict=mini_config(mini_ml, epochs=1), saved=False)
    assert by_class["test_result"]["ndcg@10"] == pytest.approx(by_name["test_result"]["ndcg@10"])


def test_model_yaml_is_layered_below_user_settings(mini_ml):
    from recbole.config import Config

    config = Config(model=RecGOAT, config_dict={"data_path": mini_ml["data_path"], "dataset": "ml-mini"})
    assert config["cmcl_weight"] == 0.032 and config["fusion"] == "fixed"  # from properties/RecGOAT.yaml
    config = Config(model="RecGOAT", config_dict={"data_path": mini_ml["data_path"], "dataset": "ml-mini",
                                                  "cmcl_weight": 0.5})
    assert config["cmcl_weight"] == 0.5
    # the dataset YAML RecBole ships still sits above the model YAML
    config = Config(model=RecGOAT, dataset="ml-100k")
    assert config["load_col"] == {"inter": ["user_id", "item_id", "rating", "timestamp"]}


def test_get_model_unknown_name_is_one_clear_error():
    from recbole.utils import get_model

    assert get_model("RecGOAT") is RecGOAT
    with pytest.raises(ValueError, match="unknown model 'NoSuchModel'"):
        get_model("NoSuchModel")


def test_create_dataset_builds_recgoat_dataset(mini_ml):
    from recbole.config import Config
    from recbole.data import create_dataset

    from tests.conftest import mini_config

    dataset = create_dataset(Config(model=RecGOAT, config_dict=mini_config(mini_ml)))
    assert isinstance(dataset, recgoat_recbole.RecGOATDataset)
    assert set(dataset.item_features) == {"text", "genre"}
