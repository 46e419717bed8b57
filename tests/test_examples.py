"""The plain-PyTorch example runs: the alignment losses work without RecBole in the training loop."""
from __future__ import annotations

import os
import re
import subprocess
import sys


def test_plain_pytorch_example_runs_one_epoch():
    script = os.path.join(os.path.dirname(__file__), "..", "examples", "plain_pytorch_alignment.py")
    out = subprocess.run([sys.executable, script, "--epochs", "1"], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    recalls = [float(x) for x in re.findall(r"Recall@10 = ([0-9.]+)", out.stdout)]
    assert len(recalls) == 2 and all(0 < r <= 1 for r in recalls)


def test_alignment_package_does_not_import_recbole():
    """The losses are plain PyTorch: no module under recgoat_recbole/alignment imports RecBole."""
    import ast
    import pathlib

    folder = pathlib.Path(__file__).parent.parent / "recgoat_recbole" / "alignment"
    imported = set()
    for path in folder.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                imported |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module:
                imported.add(node.module)
    assert imported, "no imports parsed"
    assert not {m for m in imported if m == "recbole" or m.startswith("recbole.")}, imported
