"""Feature caches are atomic, keyed by content and rebuilt when damaged; user profiles record the training split
they came from, and a file from another split is refused."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from recgoat_core.feature_files import FeatureFileError, file_fingerprint, read_features, write_features
from tests.conftest import mini_config


def test_fingerprint_sees_a_same_size_edit_within_the_same_second(tmp_path):
    path = tmp_path / "items.tsv"
    path.write_text("item_id:token\ttitle:token_seq\n1\tabc\n")
    stat = os.stat(path)
    before = file_fingerprint(path)
    path.write_text("item_id:token\ttitle:token_seq\n1\txyz\n")
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # same size, same mtime
    assert file_fingerprint(path) != before


def _table(path) -> str:
    path.write_text("item_id:token\ttitle:token_seq\n1\tToy Story\n2\tHeat\n3\tCasino\n")
    return str(path)


def test_damaged_text_cache_is_rebuilt_with_a_warning(tmp_path, caplog):
    from recgoat_recbole.features.text import cached_text_features

    table = _table(tmp_path / "t.item")
    out = cached_text_features(table, ["title"], tmp_path / "cache")
    good = read_features(out).features
    for damage in (b"", open(out, "rb").read()[:100]):  # empty, truncated
        with open(out, "wb") as f:
            f.write(damage)
        assert cached_text_features(table, ["title"], tmp_path / "cache") == out
        np.testing.assert_allclose(read_features(out).features, good, atol=1e-6)
    assert "damaged cache" in caplog.text


def test_concurrent_writers_never_tear_a_feature_file(tmp_path):
    """Two processes rewriting one path at once while this one reads it (with the old fixed temp name
    ``<path>.tmp.npz`` one writer renamed the other's half-written file: a crash or a torn file)."""
    path, go = str(tmp_path / "shared.npz"), str(tmp_path / "go")
    write_features(path, ["a", "b"], np.zeros((2, 64)))
    writer = textwrap.dedent(f"""
        import os, time
        import numpy as np
        from recgoat_core.feature_files import write_features
        print("ready", flush=True)
        while not os.path.exists({go!r}):
            time.sleep(0.005)
        for k in range(100):
            write_features({path!r}, [str(i) for i in range(500)], np.full((500, 64), float(k)))
    """)
    procs = [subprocess.Popen([sys.executable, "-c", writer], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for _ in range(2)]
    for p in procs:  # both imported and waiting: their writes overlap
        p.stdout.readline()
    open(go, "w").close()
    reads = 0
    while any(p.poll() is None for p in procs):
        f = read_features(path)  # never torn: FeatureFileError would fail the test
        assert (f.features == f.features[0, 0]).all()
        reads += 1
    errors = [p.stderr.read()[-1000:] for p in procs]
    assert all(p.returncode == 0 for p in procs), errors
    assert reads > 0 and not [n for n in os.listdir(tmp_path) if n.endswith(".tmp.npz")]


def _build(mini_ml, **overrides):
    from recbole.config import Config
    from recbole.data import create_dataset
    from recbole.utils import init_seed

    from recgoat_recbole import RecGOAT

    config = Config(model=RecGOAT, config_dict=mini_config(mini_ml, **overrides))
    init_seed(config["seed"], config["reproducibility"])  # as run_recbole does before splitting
    return config, create_dataset(config).build()


def test_profile_file_from_another_training_split_is_refused(mini_ml, tmp_path, caplog):
    from recbole.config import Config

    from recgoat_recbole import RecGOAT
    from recgoat_recbole.features.profiles import extract_profile_features

    config = Config(model=RecGOAT, config_dict=mini_config(mini_ml, seed=7))
    out = extract_profile_features(config, str(tmp_path / "profiles.npz"), columns=["movie_title", "class"],
                                   show_progress=False)
    assert read_features(out).split  # the fingerprint is recorded
    _, splits = _build(mini_ml, seed=7, user_profile_feat=out)  # the same split: used
    assert splits[0].user_features is not None and splits[2].user_features is splits[0].user_features
    with pytest.raises(FeatureFileError, match="another training split"):
        _build(mini_ml, seed=8, user_profile_feat=out)  # RS split shuffled by another seed
    # a file made elsewhere (no fingerprint) is used, with a warning
    _, splits = _build(mini_ml, seed=8)
    assert splits[0].user_features is not None and "does not record which training split" in caplog.text
