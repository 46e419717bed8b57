"""Files written atomically get the mode the user's umask gives a new file, as open() would -- not the 0600 of
the temporary file they are written to: an imported dataset folder is meant to be moved and shared."""
from __future__ import annotations

import contextlib
import os

import numpy as np
import pytest

from recgoat_core.feature_files import atomic_write, write_features
from tests.helpers import lightgcn_source


@contextlib.contextmanager
def umask(mask: int):
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


def _mode(path) -> int:
    return os.stat(path).st_mode & 0o777


def test_imported_files_are_0644_under_umask_022(tmp_path):
    from recgoat_recbole.importers import import_lightgcn

    src = lightgcn_source(tmp_path / "src")
    with umask(0o022):
        report = import_lightgcn(str(src), "out", "lg", {"image": "img.npy"})
    assert _mode(report.folder) == 0o755
    files = sorted(os.listdir(report.folder))
    assert "image.npz" in files and "lg.yaml" in files and "lg.train.inter" in files
    assert {name: _mode(os.path.join(report.folder, name)) for name in files} == {name: 0o644 for name in files}


@pytest.mark.parametrize("mask", [0o022, 0o027, 0o077])
def test_atomic_write_follows_the_umask(mask):
    with umask(mask):
        atomic_write("a.txt", lambda f: f.write(b"x"))
        write_features("f.npy", ["0", "1"], np.eye(2, dtype=np.float32))
        write_features("f.npz", ["a", "b"], np.eye(2, dtype=np.float32))
    for path in ("a.txt", "f.npy", "f.npy.ids", "f.npz"):
        assert _mode(path) == 0o666 & ~mask, path


def test_an_explicit_mode_wins():
    with umask(0o022):
        atomic_write("private.txt", lambda f: f.write(b"x"), mode=0o600)
    assert _mode("private.txt") == 0o600


def test_tunings_best_yaml_keeps_the_umask_mode():
    from recgoat_recbole.bench.tuning import write_choice

    with umask(0o027):
        write_choice({"ml-100k": {"LightGCN": {"n_layers": 2}}}, "best.yaml", "test")
    assert _mode("best.yaml") == 0o640


def test_the_umask_is_read_without_changing_it(monkeypatch):
    import os

    from recgoat_core import feature_files

    old = os.umask(0o027)
    try:
        calls = []
        real = os.umask
        monkeypatch.setattr(feature_files.os, "umask", lambda m: calls.append(m) or real(m))
        assert feature_files.current_umask() == 0o027
        if os.path.exists("/proc/self/status"):
            assert not calls  # (setting it, even briefly, would give another thread's new file 022)
    finally:
        os.umask(old)
