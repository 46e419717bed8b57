"""The plain-PyTorch example runs: the alignment losses work without RecBole in the training loop."""
from __future__ import annotations

import os
import re
import subprocess
import sys


def test_plain_pytorch_example_runs_one_epoch_without_recbole():
    """The example trains with the losses in its own loop, and nothing it imports loads RecBole or ray."""
    script = os.path.join(os.path.dirname(__file__), "..", "examples", "plain_pytorch_alignment.py")
    code = (f"import runpy, sys; sys.argv = [{script!r}, '--epochs', '1']; runpy.run_path({script!r}, run_name='__main__'); "
            "loaded = sorted(m for m in sys.modules if m.split('.')[0] in ('recbole', 'ray', 'recgoat_recbole')); "
            "print('LOADED', loaded)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    # per model: Recall@10 on the warm hold-out and on the cold items (no training interaction)
    recalls = [float(x) for x in re.findall(r"Recall@10 = ([0-9.]+)", out.stdout)]
    assert len(recalls) == 4 and all(0 <= r <= 1 for r in recalls) and recalls[0] > 0, out.stdout[-800:]
    assert "LOADED []" in out.stdout, out.stdout[-500:]
