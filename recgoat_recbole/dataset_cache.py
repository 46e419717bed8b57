"""RecBole's dataset and dataloader caches, made safe to load and keyed by everything that shapes them.

RecBole 1.2.1's ``create_dataset`` ``pickle.load``s ``saved/<dataset>-<DatasetClass>.pth`` whenever that file
exists (also with ``save_dataset: false``), and ``data_preparation`` does the same with
``saved/<dataset>-for-<model>-dataloader.pth``: a file planted there runs code. Its reuse check also ignores
``item_modalities`` and the feature files, so changed features were silently replaced by the cached ones.

Here (:func:`create_dataset`, :func:`load_split_dataloaders`, :func:`save_split_dataloaders` replace RecBole's):

- A cache file is ``saved/<dataset>-<Class>-<key>.recgoat-cache``. ``key`` hashes the dataset class, every
  RecBole dataset argument (``dataset_arguments``, ``seed``, ``repeatable``), this package's feature settings,
  and the *contents* of every file in the dataset folder and of every feature file the config names.
  Anything that changes the data changes the file name: a stale cache is never found.
- The file carries an HMAC-SHA256 of its bytes under a secret key of the local user
  (:mod:`recgoat_recbole.signing`: ``$XDG_CACHE_HOME/recgoat_recbole/cache.key``, mode 0600, created on
  first use; a key that is short, not a regular file, not the user's own or open to others is refused).
  Only a file whose MAC verifies -- one this user's runs wrote -- is unpickled; anything else is ignored with a
  warning and rebuilt.
- RecBole's own cache files (plain pickles) are never read; an explicit ``dataset_save_path`` /
  ``dataloaders_save_path`` that is not a signed cache is refused with a one-line error.
"""

from __future__ import annotations

import hashlib
import hmac
import importlib
import logging
import os
import pickle
from typing import Any

from recgoat_core.feature_files import atomic_write
from recgoat_recbole.keys import HOOK_KEYS

__all__ = ["create_dataset", "load_split_dataloaders", "save_split_dataloaders", "dataset_key", "CacheError",
           "write_signed", "read_signed"]

logger = logging.getLogger(__name__)

_MAGIC = b"RECGOAT-CACHE-1\n"
_SUFFIX = ".recgoat-cache"
#: the dataset hook's keys (recgoat_recbole.keys): which feature files a dataset carries and how they are read
FEATURE_KEYS = tuple(k.name for k in HOOK_KEYS)


class CacheError(ValueError):
    """A cache file named by the user that cannot be trusted or read."""


# --------------------------------------------------------------------------------------------- signing
def _secret() -> bytes:
    from recgoat_recbole.signing import secret_key

    return secret_key()


def write_signed(path: str, obj: Any, key: str) -> None:
    """Pickle ``obj`` to ``path`` with an HMAC of the local user's secret (atomic: temp file + rename)."""
    payload = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    mac = hmac.new(_secret(), key.encode() + b"\n" + payload, hashlib.sha256).hexdigest().encode()
    atomic_write(path, lambda f: f.write(_MAGIC + key.encode() + b"\n" + mac + b"\n" + payload))


def read_signed(path: str, key: str | None) -> Any:
    """The object in a signed cache file, or raise :class:`CacheError` without unpickling anything when the
    file is not one this user wrote (bad MAC), is for another ``key``, or is damaged."""
    with open(path, "rb") as f:
        blob = f.read()
    if not blob.startswith(_MAGIC):
        raise CacheError(f"{path} is not a recgoat_recbole cache (a plain pickle can run code: not loaded)")
    try:
        stored_key, mac, payload = blob[len(_MAGIC):].split(b"\n", 2)
    except ValueError:
        raise CacheError(f"{path}: damaged cache file") from None
    expected = hmac.new(_secret(), stored_key + b"\n" + payload, hashlib.sha256).hexdigest().encode()
    if not hmac.compare_digest(mac, expected):
        raise CacheError(f"{path} was not written by this user's runs (its signature does not verify): not loaded")
    if key is not None and stored_key.decode() != key:
        raise CacheError(f"{path} was built from other data or settings")
    try:
        return pickle.loads(payload)  # noqa: S301 -- authenticated: written by this user's own process
    except Exception as exc:  # a signed file that no longer unpickles (e.g. another package version)
        raise CacheError(f"{path}: cannot be read ({type(exc).__name__}: {exc})") from None


# ---------------------------------------------------------------------------------------------- the key
def _feature_files(config: Any) -> list[str]:
    """The feature files the config names that exist (relative: dataset folder, then working directory)."""
    from recgoat_core.feature_files import FeatureFileError
    from recgoat_recbole.feature_paths import modality_files, resolve_feature_path

    specs = []
    try:
        specs += list(modality_files(config["item_modalities"]).values())
    except ValueError:
        pass
    if config["user_profile_feat"]:
        specs.append(str(config["user_profile_feat"]))
    files = []
    for spec in specs:
        if spec.startswith("auto:"):
            continue  # made from the .item file, which is hashed with the folder
        try:
            path = os.path.abspath(resolve_feature_path(spec, config["data_path"]))
        except FeatureFileError:
            continue  # building the dataset reports it
        files.append(path)
        if os.path.isfile(path + ".ids"):  # a .npy's row -> token sidecar shapes the rows as much as the file
            files.append(path + ".ids")
    return files


def _dataset_settings() -> list[str]:
    """Every config key that shapes a RecBole dataset: ``dataset_arguments`` and every key that RecBole's
    dataset settings file (``properties/dataset/sample.yaml``) declares (``numerical_features``,
    ``discretization``, ``kg_reverse_r``, ... are in the second only), then this package's feature keys."""
    import recbole
    import yaml
    from recbole.utils.argument_list import dataset_arguments

    sample = os.path.join(os.path.dirname(recbole.__file__), "properties", "dataset", "sample.yaml")
    with open(sample, encoding="utf-8") as f:
        declared = list(yaml.safe_load(f) or {})
    return list(dict.fromkeys([*dataset_arguments, *declared, "seed", "repeatable", "dataset", *FEATURE_KEYS]))


def dataset_key(config: Any, dataset_class: type) -> str:
    """A hash of everything that shapes ``dataset_class(config)`` (see the module docstring)."""
    from recgoat_core.feature_files import content_digest
    from recgoat_recbole.version import __version__

    h = hashlib.sha256()
    h.update(f"{dataset_class.__module__}.{dataset_class.__qualname__}|{__version__}".encode())
    for arg in _dataset_settings():
        h.update(f"|{arg}={config[arg]!r}".encode())
    folder = config["data_path"]
    files = sorted(os.path.join(folder, f) for f in os.listdir(folder)) if os.path.isdir(folder) else []
    for path in sorted(set(f for f in files if os.path.isfile(f)) | set(_feature_files(config))):
        h.update(f"|{os.path.abspath(path)}:{content_digest(path)}".encode())
    return h.hexdigest()


# -------------------------------------------------------------------------------------------- datasets
def _dataset_class(config: Any) -> type:
    """The class RecBole's ``create_dataset`` would build (``<Model>Dataset`` first, else by model type)."""
    from recbole.utils import ModelType

    module = importlib.import_module("recbole.data.dataset")
    if hasattr(module, config["model"] + "Dataset"):
        return getattr(module, config["model"] + "Dataset")
    by_type = {ModelType.GENERAL: "Dataset", ModelType.SEQUENTIAL: "SequentialDataset",
               ModelType.CONTEXT: "Dataset", ModelType.KNOWLEDGE: "KnowledgeBasedDataset",
               ModelType.TRADITIONAL: "Dataset", ModelType.DECISIONTREE: "Dataset"}
    return getattr(module, by_type[config["MODEL_TYPE"]])


def _cache_path(config: Any, stem: str, key: str) -> str:
    return os.path.join(config["checkpoint_dir"], f"{stem}-{key[:16]}{_SUFFIX}")


def _has_cache(config: Any, stem: str) -> bool:
    """Whether any cache named ``<stem>-*`` exists: when none does and none will be written, the key (which
    hashes every data file) is not worth computing."""
    folder = config["checkpoint_dir"]
    return os.path.isdir(folder) and any(f.startswith(f"{stem}-") and f.endswith(_SUFFIX) for f in os.listdir(folder))


def create_dataset(config: Any) -> Any:
    """``recbole.data.create_dataset`` without unpickling untrusted files, and with a complete cache key."""
    dataset_class = _dataset_class(config)
    stem = f"{config['dataset']}-{dataset_class.__name__}"
    legacy = os.path.join(config["checkpoint_dir"], f"{stem}.pth")
    if os.path.isfile(legacy):
        logger.warning(f"ignoring {legacy}: RecBole's plain-pickle dataset cache is never loaded "
                       "(it could run code); recgoat_recbole keeps its own signed cache")
    explicit = config["dataset_save_path"]
    if explicit and not os.path.isfile(explicit):
        raise CacheError(f"dataset_save_path {explicit} not found")
    if not (explicit or config["save_dataset"] or _has_cache(config, stem)):
        return dataset_class(config)  # no cache to read or write
    key = dataset_key(config, dataset_class)
    path = explicit or _cache_path(config, stem, key)
    if os.path.isfile(path):
        try:
            dataset = read_signed(path, key)
            logger.info(f"dataset: loaded from the signed cache {path}")
            return dataset
        except CacheError as exc:
            if explicit:
                raise CacheError(f"dataset_save_path: {exc}") from None
            logger.warning(f"{exc}; rebuilding the dataset")
    dataset = dataset_class(config)
    if config["save_dataset"] and _write_cache(path, dataset, key):
        logger.info(f"dataset: saved to {path}")
    return dataset


def _write_cache(path: str, obj: Any, key: str) -> bool:
    """:func:`write_signed`, where a cache that cannot be written (a full disk, a read-only folder) is one
    warning and the run goes on without it: the cache only saves time. Returns whether it was written."""
    try:
        write_signed(path, obj, key)
    except OSError as exc:
        logger.warning(f"could not write the cache {path}: {exc.strerror or exc}; continuing without it")
        return False
    return True


# ----------------------------------------------------------------------------------------- dataloaders
_LOADER_KEYS = ("model", "eval_args", "train_neg_sample_args", "valid_neg_sample_args", "test_neg_sample_args",
                "shuffle", "MODEL_TYPE")


def _loaders_stem(config: Any) -> str:
    return f"{config['dataset']}-for-{config['model']}-dataloader"


def _loaders_key(config: Any) -> str:
    h = hashlib.sha256(dataset_key(config, _dataset_class(config)).encode())  # the data they were split from
    for arg in _LOADER_KEYS:
        h.update(f"|{arg}={config[arg]!r}".encode())
    return h.hexdigest()


def save_split_dataloaders(config: Any, dataloaders: tuple) -> None:
    """RecBole's ``save_split_dataloaders`` writing a signed, keyed cache (``save_dataloaders: true``)."""
    key = _loaders_key(config)
    path = config["dataloaders_save_path"] or _cache_path(config, _loaders_stem(config), key)
    serial = []
    for loader in dataloaders:
        state = loader.generator.get_state()
        loader.generator = None
        loader.sampler.generator = None
        serial.append((loader, state))
    try:
        written = _write_cache(path, serial, key)
    finally:
        import torch

        for loader, state in serial:  # the loaders stay usable in this process
            generator = torch.Generator()
            generator.set_state(state)
            loader.generator = generator
            loader.sampler.generator = generator
    if written:
        logger.info(f"dataloaders: saved to {path}")


def load_split_dataloaders(config: Any) -> tuple | None:
    """RecBole's ``load_split_dataloaders`` reading only signed caches built from the same data and settings."""
    import torch

    explicit = config["dataloaders_save_path"]
    stem = _loaders_stem(config)
    if not explicit and not _has_cache(config, stem):
        return None  # nothing saved: no key to compute
    key = _loaders_key(config)
    path = explicit or _cache_path(config, stem, key)
    if not os.path.isfile(path):
        if explicit and not config["save_dataloaders"]:
            raise CacheError(f"dataloaders_save_path {explicit} not found")
        return None
    try:
        serial = read_signed(path, key)
    except CacheError as exc:
        if explicit and not config["save_dataloaders"]:
            raise CacheError(f"dataloaders_save_path: {exc}") from None
        logger.warning(f"{exc}; splitting again")
        return None
    loaders = []
    for loader, state in serial:
        generator = torch.Generator()
        generator.set_state(state)
        loader.generator = generator
        loader.sampler.generator = generator
        loader.update_config(config)
        loaders.append(loader)
    logger.info(f"dataloaders: loaded from the signed cache {path}")
    return tuple(loaders)
