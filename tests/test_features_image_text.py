"""Image and text extractors with small local models (no download)."""
from __future__ import annotations

import numpy as np
import pytest

from recgoat_core.feature_files import read_features


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory) -> str:
    """A randomly initialised CLIP vision tower + processor saved locally."""
    import torch
    from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModel

    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("tiny-clip")
    config = CLIPVisionConfig(hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=2,
                              image_size=32, patch_size=8)
    CLIPVisionModel(config).save_pretrained(folder)
    CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(folder)
    return str(folder)


def _images(folder, n=5):
    from PIL import Image

    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, (40, 48, 3), dtype=np.uint8)).save(folder / f"item{i}.png")
    (folder / "item_broken.jpg").write_bytes(b"not an image")
    return folder


def test_image_folder_with_a_corrupt_file(tmp_path, tiny_clip, caplog):
    from recgoat_recbole.features.image import extract_image_features

    folder = _images(tmp_path / "imgs")
    out = extract_image_features(str(folder), str(tmp_path / "image.npz"), tiny_clip, show_progress=False)
    f = read_features(out)
    assert sorted(f.tokens.tolist()) == sorted([f"item{i}" for i in range(5)] + ["item_broken"])
    broken = f.tokens.tolist().index("item_broken")
    assert not f.mask[broken] and f.mask.sum() == 5
    assert np.all(f.features[broken] == 0) and np.abs(f.features[f.mask]).sum(1).min() > 0
    assert "1 of 6 images missing or unreadable" in caplog.text


def test_image_csv_with_missing_path_and_same_vectors_as_folder(tmp_path, tiny_clip):
    from recgoat_recbole.features.image import extract_image_features

    folder = _images(tmp_path / "imgs", n=3)
    csv = tmp_path / "images.csv"
    csv.write_text("token,path\nA,imgs/item0.png\nB,imgs/item2.png\nC,imgs/nope.png\n")
    f = read_features(extract_image_features(str(csv), str(tmp_path / "a.npz"), tiny_clip, show_progress=False))
    g = read_features(extract_image_features(str(folder), str(tmp_path / "b.npz"), tiny_clip, show_progress=False))
    assert f.tokens.tolist() == ["A", "B", "C"] and f.mask.tolist() == [True, True, False]
    np.testing.assert_allclose(f.features[0], g.features[g.tokens.tolist().index("item0")], rtol=1e-4, atol=1e-5)


def test_unknown_vision_model_is_a_clear_error(tmp_path):
    from recgoat_recbole.features.image import extract_image_features

    _images(tmp_path / "imgs", n=1)
    with pytest.raises(FileNotFoundError, match="download it first"):
        extract_image_features(str(tmp_path / "imgs"), str(tmp_path / "x.npz"), str(tmp_path / "no-model"))


def test_text_features_keep_tokens_and_flag_empty_text(tmp_path, caplog):
    from recgoat_recbole.features.text import extract_text_features

    table = tmp_path / "items.item"
    table.write_text("item_id:token\ttitle:token_seq\tclass:token_seq\n7\tToy Story\tAnimation\n9\t\t\n"
                     "3\tHeat\tCrime Thriller\n")
    f = read_features(extract_text_features(table, tmp_path / "t.npz", ["title", "class"], show_progress=False))
    assert f.tokens.tolist() == ["7", "9", "3"] and f.mask.tolist() == [True, False, True]
    assert np.all(f.features[1] == 0)
    np.testing.assert_allclose(np.linalg.norm(f.features[[0, 2]], axis=1), 1.0, rtol=1e-5)
    assert float(f.features[0] @ f.features[2]) < 0.99  # different texts, different vectors
    assert "1 of 3 items have empty text" in caplog.text
    with pytest.raises(KeyError, match="nope"):
        extract_text_features(table, tmp_path / "u.npz", ["nope"], show_progress=False)


def test_allow_download_message_does_not_ask_for_the_flag_already_given(monkeypatch):
    import sentence_transformers

    from recgoat_recbole.features.text import load_text_encoder

    def fail(*args, **kwargs):
        raise OSError("no such repo")

    monkeypatch.setattr(sentence_transformers, "SentenceTransformer", fail)
    with pytest.raises(FileNotFoundError) as given:
        load_text_encoder("someone/model", allow_download=True)
    assert "--allow-download" not in str(given.value) and "no such repo" in str(given.value)
    with pytest.raises(FileNotFoundError) as not_given:
        load_text_encoder("someone/model")
    assert "--allow-download" in str(not_given.value)
