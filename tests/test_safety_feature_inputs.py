"""Feature files and encoders from others (issue 30, items 6, 8 and 9): sizes are checked against the file
before anything is allocated, encoder folders that hold no model or ask for remote code are one line, the
text-feature cache is keyed by the encoder folder's contents, ``-o`` is checked before encoding (and ``.npy``
writes MMRec's layout), and ``--max-items`` below 1 is refused. Tiny files, fake encoders, no training."""
from __future__ import annotations

import json
import os
import time
import zipfile

import numpy as np
import pytest

from recgoat_core.feature_files import (INFLATE_FREE_BYTES, MAX_TOKEN_CHARS, FeatureFileError, read_features,
                                        write_features)


def _npy_header(f, shape, descr="<f4") -> None:
    np.lib.format.write_array_header_1_0(f, {"descr": descr, "fortran_order": False, "shape": shape})


def _run_cli(capsys, argv) -> tuple[int, str]:
    from recgoat_cli import main

    code = main(argv)
    return code, capsys.readouterr().err


def _one_line(code: int, err: str) -> None:
    assert code == 2 and err.startswith("recgoat: error:") and len(err.strip().splitlines()) == 1, err


# ------------------------------------------------------------------- 1: sizes checked before allocating
def test_npy_whose_header_claims_a_huge_shape_is_refused_before_allocating(tmp_path):
    path = tmp_path / "huge.npy"
    with open(path, "wb") as f:
        _npy_header(f, (10**6, 10**6))
        f.write(b"\0" * 1000)
    assert path.stat().st_size < 2000
    with pytest.raises(FeatureFileError, match=r"header claims 4000000000000 bytes .* but the file holds 1000") as info:
        read_features(path)
    assert str(path) in str(info.value)


def test_npy_shorter_than_its_header_says_is_refused_by_size(tmp_path):
    path = tmp_path / "short.npy"
    with open(path, "wb") as f:
        _npy_header(f, (10, 4))
        f.write(np.ones((3, 4), np.float32).tobytes())
    with pytest.raises(FeatureFileError, match="header claims 160 bytes .* but the file holds 48"):
        read_features(path)


@pytest.fixture(scope="module")
def zip_bomb(tmp_path_factory) -> str:
    """An .npz of ~0.3 MB whose features member inflates to 315 MB of zeros (declared in the zip directory)."""
    path = str(tmp_path_factory.mktemp("bomb") / "bomb.npz")
    rows, dim = 65536, 1200
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as archive:
        with archive.open("features.npy", "w") as member:
            _npy_header(member, (rows, dim))
            block = bytes(dim * 4 * 1024)
            for _ in range(rows // 1024):
                member.write(block)
        with archive.open("ids.npy", "w") as member:
            np.save(member, np.arange(rows).astype(str))
    return path


def test_npz_member_that_inflates_past_the_limit_is_refused_before_decompressing(zip_bomb, monkeypatch):
    info = zipfile.ZipFile(zip_bomb).getinfo("features.npy")
    assert info.file_size > INFLATE_FREE_BYTES and os.path.getsize(zip_bomb) < 2 << 20
    opened, real_open = [], zipfile.ZipFile.open

    def recording_open(self, name, *args, **kwargs):
        opened.append(getattr(name, "filename", name))
        return real_open(self, name, *args, **kwargs)

    monkeypatch.setattr(zipfile.ZipFile, "open", recording_open)
    start = time.perf_counter()
    with pytest.raises(FeatureFileError, match=r"member 'features' would inflate .* possible zip bomb") as info:
        read_features(zip_bomb)
    assert zip_bomb in str(info.value) and time.perf_counter() - start < 1.0
    assert "features.npy" not in opened  # refused from the zip directory, nothing decompressed


def test_npz_member_whose_header_claims_more_than_the_member_is_refused(tmp_path):
    path = tmp_path / "forged.npz"
    with zipfile.ZipFile(path, "w") as archive:  # stored, as np.savez writes
        with archive.open("features.npy", "w") as member:
            _npy_header(member, (10**6, 10**6))
            member.write(b"\0" * 12)
        with archive.open("ids.npy", "w") as member:
            np.save(member, np.array(["a"]))
    claims = r"member 'features': header claims 4000000000000 bytes .* the member holds 12"
    with pytest.raises(FeatureFileError, match=claims):
        read_features(path)


def test_ids_of_a_huge_string_dtype_are_refused(tmp_path):
    path = tmp_path / "ids.npz"
    np.savez(path, ids=np.array(["a"], dtype="<U10000000"), features=np.ones((1, 2), np.float32))
    with pytest.raises(FeatureFileError, match=rf"'ids' of dtype <U10000000 .*\(limit {MAX_TOKEN_CHARS}\)") as info:
        read_features(path)
    assert str(path) in str(info.value)


def test_sidecar_with_an_over_long_token_is_refused(tmp_path):
    path = tmp_path / "f.npy"
    np.save(path, np.ones((2, 3), np.float32))
    (tmp_path / "f.npy.ids").write_text("a\n" + "x" * (MAX_TOKEN_CHARS + 1) + "\n")
    with pytest.raises(FeatureFileError, match=f"token of {MAX_TOKEN_CHARS + 1} characters"):
        read_features(path)


def test_sidecar_whose_token_array_would_dwarf_the_file_is_refused(tmp_path):
    """Fixed-width tokens: 80,000 one-character lines and one of 4096 would take 1.3 GB as an array."""
    path = tmp_path / "f.npy"
    n = 80_000
    np.save(path, np.zeros((n + 1, 1), np.float32))
    (tmp_path / "f.npy.ids").write_text("".join(f"{chr(97 + i % 26)}{i}\n" for i in range(n)) + "y" * 4096 + "\n")
    with pytest.raises(FeatureFileError, match="would take .* bytes as an array"):
        read_features(path)


@pytest.mark.parametrize("split", [np.array([], dtype=str), np.array(["a", "b"]), np.array([[]], dtype=str)],
                         ids=["empty", "two_values", "empty_2d"])
def test_npz_with_an_empty_or_wrong_length_split_is_one_error(tmp_path, split):
    path = tmp_path / "p.npz"
    np.savez(path, ids=np.array(["a", "b"]), features=np.ones((2, 2), np.float32), split=split)
    with pytest.raises(FeatureFileError, match="'split' must hold one training-split fingerprint") as info:
        read_features(path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize("mask", [np.array([], dtype=bool), np.array([True]), np.array(True)],
                         ids=["empty", "short", "scalar"])
def test_npz_with_an_empty_or_wrong_length_mask_is_one_error(tmp_path, mask):
    """(Already one error before this round; kept as a regression case.)"""
    path = tmp_path / "m.npz"
    np.savez(path, ids=np.array(["a", "b"]), features=np.ones((2, 2), np.float32), mask=mask)
    with pytest.raises(FeatureFileError, match="mask"):
        read_features(path)


def test_legitimate_files_still_read(tmp_path):
    features = np.random.default_rng(0).normal(size=(50, 8)).astype(np.float32)
    tokens = [f"item{i}" for i in range(50)]
    write_features(tmp_path / "a.npz", tokens, features, mask=np.arange(50) % 2 == 0, split="abc")
    np.savez_compressed(tmp_path / "b.npz", ids=np.array(tokens), features=features)
    np.save(tmp_path / "c.npy", features.astype(np.float64))
    for name in ("a.npz", "b.npz", "c.npy"):
        f = read_features(tmp_path / name)
        np.testing.assert_array_equal(f.features, features)
    assert read_features(tmp_path / "a.npz").split == "abc"


# ---------------------------------------------------------------- 2: encoder folders, one line each
def _table(path) -> str:
    path.write_text("item_id:token\ttitle:token_seq\n2\tHeat\n0\tToy Story\n1\tJumanji\n")
    return str(path)


@pytest.fixture
def no_encoding(monkeypatch):
    """Fail the test if anything is encoded (the checks must come first)."""
    def refuse(*args, **kwargs):
        raise AssertionError("encoded although the command was going to fail")

    monkeypatch.setattr("recgoat_recbole.features.text.encode_texts", refuse)
    monkeypatch.setattr("recgoat_recbole.features.image.encode_images", refuse)


def _remote_code_folder(folder) -> str:
    folder.mkdir()
    (folder / "modules.json").write_text(json.dumps([{"idx": 0, "name": "0", "path": "", "type": "evil_mod.Evil"}]))
    (folder / "evil_mod.py").write_text("open('PWNED', 'w').write('ran')\nclass Evil:\n    pass\n")
    return str(folder)


def test_features_text_with_an_empty_encoder_folder_is_one_line(tmp_path, capsys, no_encoding):
    (tmp_path / "empty").mkdir()
    code, err = _run_cli(capsys, ["features", "text", _table(tmp_path / "t.item"), "--columns", "title",
                                  "--model", str(tmp_path / "empty"), "-o", "out.npz", "--quiet"])
    _one_line(code, err)
    assert "holds no model" in err and str(tmp_path / "empty") in err


def test_features_text_with_a_remote_code_modules_json_is_one_line_and_runs_nothing(tmp_path, capsys, no_encoding):
    folder = _remote_code_folder(tmp_path / "remote")
    code, err = _run_cli(capsys, ["features", "text", _table(tmp_path / "t.item"), "--columns", "title",
                                  "--model", folder, "-o", "out.npz", "--quiet"])
    _one_line(code, err)
    assert "'evil_mod.Evil' is not part of sentence-transformers" in err and "modules.json" in err
    assert not os.path.exists("PWNED")


def test_a_module_config_asking_for_trust_remote_code_is_refused(tmp_path):
    from recgoat_recbole.features.text import EncoderError, load_text_encoder

    folder = tmp_path / "asks"
    folder.mkdir()
    (folder / "modules.json").write_text(json.dumps(
        [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"}]))
    (folder / "config.json").write_text(json.dumps({"model_type": "bert"}))
    (folder / "sentence_bert_config.json").write_text(json.dumps({"model_args": {"trust_remote_code": True}}))
    with pytest.raises(EncoderError, match="trust_remote_code"):
        load_text_encoder(str(folder))


def test_text_encoder_config_key_with_an_unloadable_folder_is_a_feature_file_error(tmp_path):
    """``text_encoder`` (config) reaches the same loader: a folder transformers refuses is one clear error."""
    from recgoat_recbole.features.text import EncoderError, load_text_encoder

    folder = tmp_path / "custom"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "nope-custom", "auto_map": {"AutoModel": "m.M"}}))
    with pytest.raises(EncoderError, match=str(folder)) as info:
        load_text_encoder(str(folder))
    assert isinstance(info.value, FeatureFileError)  # printed by the CLI as one line


def test_features_image_with_an_empty_model_folder_is_one_line(tmp_path, capsys, no_encoding):
    from PIL import Image

    (tmp_path / "imgs").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "imgs" / "a.png")
    (tmp_path / "empty").mkdir()
    code, err = _run_cli(capsys, ["features", "image", str(tmp_path / "imgs"), "--model", str(tmp_path / "empty"),
                                  "-o", "out.npz", "--quiet"])
    _one_line(code, err)
    assert "vision model" in err and "holds no model" in err


# ---------------------------------------------- 3: the text cache is keyed by the encoder folder's contents
def _fake_encoder_folder(folder) -> str:
    (folder / "1_Pooling").mkdir(parents=True)
    (folder / "modules.json").write_text(json.dumps([
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}]))
    (folder / "config.json").write_text(json.dumps({"model_type": "bert"}))
    (folder / "1_Pooling" / "config.json").write_text(json.dumps({"pooling_mode_mean_tokens": True}))
    (folder / "model.safetensors").write_bytes(b"weights-v1")
    return str(folder)


def test_text_feature_cache_follows_the_local_encoder_folder_contents(tmp_path, monkeypatch):
    from recgoat_recbole.features import text

    encoded = []

    def fake_extract(table, output, columns, model=None, show_progress=False):
        encoded.append(output)
        return write_features(output, ["0", "1", "2"], np.eye(3, dtype=np.float32))

    monkeypatch.setattr(text, "extract_text_features", fake_extract)
    table, folder = _table(tmp_path / "t.item"), _fake_encoder_folder(tmp_path / "enc")
    first = text.cached_text_features(table, ["title"], tmp_path / "cache", model=folder)
    assert text.cached_text_features(table, ["title"], tmp_path / "cache", model=folder) == first
    assert len(encoded) == 1  # unchanged folder: reused
    (tmp_path / "enc" / "1_Pooling" / "config.json").write_text(json.dumps({"pooling_mode_cls_token": True}))
    pooled = text.cached_text_features(table, ["title"], tmp_path / "cache", model=folder)
    (tmp_path / "enc" / "model.safetensors").write_bytes(b"weights-v2")
    reweighted = text.cached_text_features(table, ["title"], tmp_path / "cache", model=folder)
    assert len({first, pooled, reweighted}) == 3 and len(encoded) == 3


def test_encoder_fingerprint_of_a_hub_name_includes_the_cached_snapshot(tmp_path, monkeypatch):
    import huggingface_hub.constants

    from recgoat_recbole.features.text import encoder_fingerprint

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    assert encoder_fingerprint("org/model") == "name org/model"  # not cached: the name alone
    repo = tmp_path / "hub" / "models--org--model"
    (repo / "refs").mkdir(parents=True)
    (repo / "blobs").mkdir()
    for commit, blob in (("a" * 40, "1" * 64), ("b" * 40, "2" * 64)):
        (repo / "blobs" / blob).write_bytes(blob.encode())
        (repo / "snapshots" / commit).mkdir(parents=True)
        os.symlink(repo / "blobs" / blob, repo / "snapshots" / commit / "model.safetensors")
    (repo / "refs" / "main").write_text("a" * 40)
    first = encoder_fingerprint("org/model")
    (repo / "refs" / "main").write_text("b" * 40)
    second = encoder_fingerprint("org/model")
    assert "a" * 40 in first and "b" * 40 in second and first != second


# ------------------------------------------------------------------ 4: -o checked before any encoding
@pytest.mark.parametrize("output, message", [
    ("outdir", "is a folder"),
    ("afile/out.npz", "is a file"),
    ("out.txt", "must end in .npz or .npy"),
], ids=["existing_folder", "parent_is_a_file", "wrong_suffix"])
def test_features_text_bad_output_fails_before_encoding(tmp_path, capsys, no_encoding, output, message):
    os.mkdir("outdir")
    open("afile", "w").close()
    code, err = _run_cli(capsys, ["features", "text", _table(tmp_path / "t.item"), "--columns", "title",
                                  "-o", output, "--quiet"])
    _one_line(code, err)
    assert message in err and output.split("/")[0] in err


def test_features_image_output_folder_fails_before_encoding(tmp_path, capsys, no_encoding):
    os.mkdir("outdir")
    code, err = _run_cli(capsys, ["features", "image", str(tmp_path), "--model", "x", "-o", "outdir", "--quiet"])
    _one_line(code, err)
    assert "outdir is a folder" in err


# -------------------------------------------------------------------------- 5: --max-items below one
@pytest.mark.parametrize("max_items", [0, -3])
def test_prompt_with_max_items_below_one_is_refused(max_items):
    from recgoat_recbole.config_check import ConfigError
    from recgoat_recbole.features.profiles import build_prompt

    with pytest.raises(ConfigError, match="--max-items"):
        build_prompt("u1", [("i1", "a"), ("i2", "b"), ("i3", "c")], max_items=max_items)


def test_features_profiles_max_items_zero_is_one_error_line(capsys):
    """Refused by the parser (usage + one error line) or by the command (one line), never a run."""
    try:
        code, err = _run_cli(capsys, ["features", "profiles", "--dataset", "ml-100k", "--backend", "http", "--url",
                                      "http://127.0.0.1:9/v1", "--max-items", "0", "-o", "p.npz", "--quiet"])
    except SystemExit as exc:  # argparse: usage, then one error line
        code, err = exc.code, capsys.readouterr().err.strip().splitlines()[-1] + "\n"
        assert "error:" in err
    else:
        _one_line(code, err)
    assert code == 2 and "--max-items" in err and "got 0" in err and not os.path.exists("p.npz")
