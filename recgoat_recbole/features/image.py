"""Item images → feature file, with a vision backbone from ``transformers``.

Any ``AutoModel`` with an image processor works, by name or local path: a CLIP model (``get_image_features``),
a CLIP vision tower or ViT/DINO/ConvNeXt-style model (``pooler_output``, else the mean of the last hidden
state). Nothing is downloaded unless ``allow_download=True``, and remote code is never trusted: a local folder
that holds no model or needs custom code is one :class:`~recgoat_recbole.features.text.EncoderError`.

Images come from a folder (item token = file name without extension) or from a CSV/TSV of
``(token, path)`` rows (relative paths are relative to that file). An image that is missing or cannot be
decoded becomes a zero row with ``mask=False`` in the written ``.npz``; the count is logged and the run goes
on -- one corrupt file never stops a 100k-image job.
"""

from __future__ import annotations

import logging
import os
from typing import Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from recgoat_core.feature_files import FeatureFileError, check_mmrec_output, check_output_path, write_features
from recgoat_recbole.features.text import EncoderError, check_model_folder
from recgoat_recbole.features.text import model_not_found as _not_found

__all__ = ["IMAGE_SUFFIXES", "list_images", "load_vision_encoder", "encode_images", "extract_image_features"]

logger = logging.getLogger(__name__)
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif")


def list_images(source: str) -> tuple[list[str], list[str]]:
    """``(tokens, paths)`` from an image folder or a ``token,path`` CSV/TSV (header optional)."""
    if os.path.isdir(source):
        names = sorted(f for f in os.listdir(source) if f.lower().endswith(IMAGE_SUFFIXES))
        return [os.path.splitext(f)[0] for f in names], [os.path.join(source, f) for f in names]
    if not os.path.isfile(source):
        raise FileNotFoundError(f"image source not found: {source}")
    import pandas as pd

    sep = "\t" if source.endswith((".tsv", ".txt")) else ","
    frame = pd.read_csv(source, sep=sep, dtype=str, header=None, keep_default_na=False)
    if frame.shape[1] < 2:
        raise FeatureFileError(f"{source}: expected two columns (item token, image path)")
    if frame.iloc[0, 1].lower() in ("path", "image", "image_path", "file"):
        frame = frame.iloc[1:]
    base = os.path.dirname(os.path.abspath(source))
    paths = [p if os.path.isabs(p) else os.path.join(base, p) for p in frame.iloc[:, 1]]
    return frame.iloc[:, 0].tolist(), paths


def load_vision_encoder(model: str, device: str | None = None, allow_download: bool = False):
    """``(processor, model)`` for a ``transformers`` vision backbone (name or local path; a local folder is
    checked first, remote code never trusted)."""
    if os.path.isfile(model):
        raise EncoderError(f"vision model {model} is a file; give a transformers model folder or name")
    if os.path.isdir(model):
        check_model_folder(model, "vision model")
    from transformers import AutoImageProcessor, AutoModel

    kwargs = {"local_files_only": not allow_download, "trust_remote_code": False}  # False: no interactive prompt
    try:
        processor = AutoImageProcessor.from_pretrained(model, **kwargs)
        net = AutoModel.from_pretrained(model, **kwargs)
    except OSError as exc:
        if os.path.isdir(model):
            raise EncoderError(f"vision model {model}: cannot load ({' '.join(str(exc).split())[:300]})") from None
        raise FileNotFoundError(_not_found("vision model", model, allow_download, exc)) from exc
    except (ValueError, KeyError, TypeError) as exc:  # e.g. custom code (auto_map), an unknown model_type
        raise EncoderError(f"vision model {model}: cannot load ({' '.join(str(exc).split())[:300]})") from None
    return processor, net.to(device or "cpu").eval()


def _pool(result) -> torch.Tensor:
    """A model output's image vector: ``pooler_output``, else the mean of the last hidden state."""
    pooled = getattr(result, "pooler_output", None)
    if pooled is not None:
        return pooled
    hidden = result.last_hidden_state
    return hidden.flatten(2).mean(-1) if hidden.ndim == 4 else hidden.mean(1)  # conv maps or token sequences


@torch.no_grad()
def _embed(processor, net, images: list) -> np.ndarray:
    pixels = processor(images=images, return_tensors="pt")["pixel_values"].to(net.device)
    if hasattr(net, "get_image_features"):  # CLIP-style models
        out = net.get_image_features(pixel_values=pixels)
        out = out if torch.is_tensor(out) else _pool(out)
    else:
        out = _pool(net(pixel_values=pixels))
    return out.reshape(len(images), -1).float().cpu().numpy()


def encode_images(paths: Sequence[str], processor, net, batch_size: int = 32,
                  show_progress: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """``(features [n, dim], mask [n])``: unreadable images are zero rows with ``mask=False``."""
    from PIL import Image, UnidentifiedImageError

    chunks: list[tuple[list[int], np.ndarray]] = []
    mask = np.zeros(len(paths), dtype=bool)
    dim = None
    for start in tqdm(range(0, len(paths), batch_size), desc="images", disable=not show_progress, unit="batch"):
        images, rows = [], []
        for r in range(start, min(start + batch_size, len(paths))):
            try:
                with Image.open(paths[r]) as img:
                    images.append(img.convert("RGB"))
                rows.append(r)
            except (OSError, UnidentifiedImageError, ValueError) as exc:
                logger.debug(f"image {paths[r]}: {exc}")
        if images:
            emb = _embed(processor, net, images)
            dim = emb.shape[1]
            chunks.append((rows, emb))
            mask[rows] = True
    if dim is None:
        raise FeatureFileError("no image could be read (every file failed to decode)")
    features = np.zeros((len(paths), dim), dtype=np.float32)
    for rows, emb in chunks:
        features[rows] = emb
    return features, mask


def extract_image_features(source: str, output: str, model: str, device: str | None = None,
                           batch_size: int = 32, allow_download: bool = False, show_progress: bool = True) -> str:
    """Encode every image of ``source`` and write ``output`` (.npz: ids, features, mask; or .npy: MMRec's
    layout, row r = item id r, with a ``.ids`` sidecar); returns the path. ``output`` (and for .npy the tokens)
    is checked before anything is encoded."""
    output = check_output_path(output)
    tokens, paths = list_images(source)
    if not tokens:
        raise FeatureFileError(f"{source}: no images found (expected image files named by item token, or a CSV/TSV of token,path)")
    check_mmrec_output(output, tokens, f"the image tokens of {source}")
    processor, net = load_vision_encoder(model, device, allow_download)
    features, mask = encode_images(paths, processor, net, batch_size, show_progress)
    if (~mask).any():
        logger.warning(f"{int((~mask).sum())} of {len(mask)} images missing or unreadable: zero rows, mask=False")
    return write_features(output, tokens, features, mask)
