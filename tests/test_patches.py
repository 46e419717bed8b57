"""One test (at least) per row of the patch table (recgoat_recbole.patches.TABLE); each fails without its patch on
today's stack."""
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
import scipy.sparse as sp
import torch

import recgoat_recbole
from recgoat_recbole import RecGOAT, patches
from recgoat_recbole.patches.ray_import import _build_pkg_resources_shim
from recgoat_recbole.patches.safe_checkpoints import recbole_checkpoint_globals


def test_all_patches_applied_once_in_table_order():
    assert patches.apply() == [p.name for p in patches.TABLE] == [
        "numpy_aliases", "ray_import", "scipy_dok_update", "safe_config_values", "safe_checkpoints",
        "safe_dataset_cache", "ddp_cpu", "model_lookup", "yaml_data_path"]
    assert patches.apply() == patches.APPLIED  # idempotent


def test_every_row_names_a_test_that_exists_and_attributes_it_replaces():
    """The table is the documentation of what we change: each row's test must exist (so deleting the test, or
    renaming it, breaks this), and each attribute it names must be where the row says."""
    import importlib

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    for row in patches.TABLE:
        assert row.kind in ("version fix", "security", "feature"), row
        path, _, test = row.test.partition("::")
        with open(os.path.join(root, path), encoding="utf-8") as f:
            assert f"def {test}(" in f.read(), f"{row.name}: {row.test} does not exist"
        for attribute in row.attributes:
            if attribute.startswith("sys.modules"):
                continue
            module_name, _, name = attribute.rpartition(".")
            while True:  # the longest importable prefix, then attributes
                try:
                    owner = importlib.import_module(module_name)
                    break
                except ImportError:
                    module_name, _, cls = module_name.rpartition(".")
                    name = f"{cls}.{name}"
            for part in name.split("."):
                owner = getattr(owner, part)


def test_importing_the_package_leaves_every_recbole_recommender_class_unchanged():
    """In a fresh interpreter: every class of recbole.model (each recommender and its bases) has the same
    attributes, with the same objects, before and after ``import recgoat_recbole`` -- importing this package
    must not change how RecBole's own models behave (Pop's count fix lives in the bench worker only)."""
    code = textwrap.dedent("""
        import inspect, json, pkgutil, importlib
        import numpy as np
        # RecBole 1.2.1 itself does not import on numpy 2 without the aliases: give them first, then compare
        for old, new in {"float": np.float64, "int": np.int_, "bool": np.bool_, "complex": np.complex128,
                         "object": np.object_, "str": np.str_, "long": np.int_, "unicode": np.str_,
                         "float_": np.float64, "unicode_": np.str_}.items():
            setattr(np, old, new)
        import recbole.model
        def classes():
            out = {}
            for info in pkgutil.walk_packages(recbole.model.__path__, "recbole.model."):
                if "exlib" in info.name:
                    continue
                try:
                    module = importlib.import_module(info.name)
                except ImportError:
                    continue
                for name, cls in inspect.getmembers(module, inspect.isclass):
                    if cls.__module__.startswith("recbole.model"):
                        out[f"{cls.__module__}.{cls.__qualname__}"] = {k: id(v) for k, v in vars(cls).items()}
            return out
        before = classes()
        import recgoat_recbole
        after = classes()
        changed = sorted(name for name in before if before[name] != after.get(name))
        print(json.dumps({"n": len(before), "changed": changed}))
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert report["n"] > 80  # every general, sequential, context-aware and knowledge model was seen
    assert report["changed"] == []


def test_bench_pop_counts_every_interaction_inside_its_block_only():
    from recbole.model.general_recommender.pop import Pop

    from recgoat_recbole.bench.pop_counts import counting_every_interaction

    class FakePop:
        ITEM_ID = "item_id"
        device = torch.device("cpu")

        def __init__(self):
            self.item_cnt = torch.zeros(5, 1, dtype=torch.long)

    batch = {"item_id": torch.tensor([1, 1, 1, 2, 4, 4])}
    fixed, original = FakePop(), FakePop()
    own = Pop.calculate_loss
    with counting_every_interaction():
        Pop.calculate_loss(fixed, batch)
    assert Pop.calculate_loss is own  # restored
    Pop.calculate_loss(original, batch)
    assert fixed.item_cnt.flatten().tolist() == [0, 3, 1, 0, 2] and fixed.max_cnt.item() == 3
    assert original.item_cnt.flatten().tolist() == [0, 1, 1, 0, 1]  # RecBole's: once per batch


def test_originals_are_recboles_own_functions_even_where_two_fixes_wrap_one():
    """ddp_cpu wraps the evaluate that safe_checkpoints wrapped: both must record RecBole's own evaluate."""
    from recbole.trainer import trainer as trainer_mod

    from recgoat_recbole.patches.unwrap import recbole_original

    own = patches.ORIGINALS["safe_checkpoints"]["evaluate"]
    assert patches.ORIGINALS["ddp_cpu"]["evaluate"] is own
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
        patches.ORIGINALS["numpy_aliases"]["compatibility_settings"](object())
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
    shim = _build_pkg_resources_shim()
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
    # ... and the patched path loads it with RecBole's classes allowlisted
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
    with recbole_checkpoint_globals(path):
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
        with recbole_checkpoint_globals(str(path)):
            pass


def test_checkpoint_with_foreign_global_is_refused(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"config": os.system, "state_dict": {}}, path)
    with pytest.raises(pickle.UnpicklingError, match="os.system|posix.system"):
        with recbole_checkpoint_globals(str(path)):
            pass


def test_original_recbole_checkpoint_format_cannot_be_loaded_safely(tmp_path):
    path = tmp_path / "p4.pth"
    torch.save({"x": torch.ones(2)}, path, pickle_protocol=4)
    with pytest.raises(pickle.UnpicklingError, match="protocol"):
        with recbole_checkpoint_globals(str(path)):
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
    assert config["cmcl_weight"] == 0.032 and config["fusion"] == "fixed"  # from recgoat_recbole/keys.py
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
    assert isinstance(dataset, recgoat_recbole.FeatureDataset)
    assert set(dataset.item_features) == {"text", "genre"}


def test_relative_data_path_is_read_against_the_yaml(tmp_path, monkeypatch):
    """The generated YAML's relative data_path is read against the YAML by RecBole's own Config (not only by
    `recgoat`): run_recbole users need no data_path override after moving the folder."""
    import os

    from recbole.config import Config

    from recgoat_recbole.patches.yaml_data_path import ORIGINALS, resolve_data_path

    folder = tmp_path / "moved" / "toy"
    folder.mkdir(parents=True)
    (folder / "toy.yaml").write_text("dataset: toy\ndata_path: ..\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    config = Config(model="LightGCN", config_file_list=[str(folder / "toy.yaml")])
    assert os.path.samefile(config["data_path"], tmp_path / "moved" / "toy")  # RecBole appends the dataset name
    # RecBole alone reads it against the working directory
    raw = ORIGINALS["_load_config_files"](config, [str(folder / "toy.yaml")])
    assert raw["data_path"] == ".."
    # a data_path whose dataset folder is not next to the YAML is left for the working directory
    assert resolve_data_path({"dataset": "other", "data_path": "data"}, str(folder / "toy.yaml"))["data_path"] == "data"
    # config_dict still wins
    config = Config(model="LightGCN", config_file_list=[str(folder / "toy.yaml")],
                    config_dict={"data_path": str(elsewhere)})
    assert os.path.normpath(config["data_path"]) == os.path.normpath(str(elsewhere / "toy"))


def test_one_process_config_asks_cuda_only_after_gpu_id_is_visible(monkeypatch):
    """A CUDA runtime started before RecBole sets CUDA_VISIBLE_DEVICES from gpu_id ignores it: the ddp_cpu patch
    must not ask torch about CUDA first (gpu_id: 1 would train on GPU 0)."""
    import torch
    from recbole.config import Config

    seen = []
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: seen.append(os.environ.get("CUDA_VISIBLE_DEVICES"))
                        or False)
    Config(model="BPR", dataset="ml-100k", config_dict={"gpu_id": "1"})
    assert seen and set(seen) == {"1"}


def test_more_processes_than_listed_gpus_is_one_config_error(monkeypatch):
    import torch

    from recgoat_recbole.config_check import ConfigError
    from recgoat_recbole.patches import ddp_cpu

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", os.environ.get("CUDA_VISIBLE_DEVICES", ""))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    fake = type("C", (), {})()
    fake.final_config_dict = {"local_rank": 0, "gpu_id": "0", "nproc": 2, "use_gpu": True, "offset": 0,
                              "world_size": 2, "ip": "localhost", "port": "1"}
    with pytest.raises(ConfigError, match="2 processes on CUDA need as many GPUs in gpu_id, got '0'"):
        ddp_cpu._init_device(fake)
