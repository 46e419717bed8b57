"""Memory of the kNN builder and the alignment gate (issue 28): at Baby's shape the gate's kNN graph made the
model build the process's peak, with four float32 copies of a 4096-d feature matrix alive at once (the warm
rows, the unit rows, their faiss copy, the index's own). Now ``knn_graph`` holds one unit-row copy (searched by
``faiss.knn`` in place) and ``cooccurrence_lift`` passes the warm rows as a view when they are one run of rows.

Each case runs in a fresh interpreter that resets its peak RSS (``/proc/self/clear_refs``) after the matrix is
made and reports the peak above that, in units of the matrix's size: large enough (64 MB) that allocator noise
is a small fraction of one copy.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(not os.access("/proc/self/clear_refs", os.W_OK),
                                reason="needs Linux's /proc/self/clear_refs to reset the peak RSS")

_SCRIPT = r"""
import json, sys
import torch
torch.set_num_threads(1)
from recgoat_core.graphs import knn_graph, _faiss
from recgoat_core.feature_signal import cooccurrence_lift

def rss(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field):
                return int(line.split()[1]) * 1024

case, backend = sys.argv[1], sys.argv[2]
if backend == "faiss" and _faiss() is None:
    print(json.dumps({"skip": "faiss does not import"})); sys.exit()
g = torch.Generator().manual_seed(0)
n, d = 8192, 2048                                   # 64 MiB of float32
x = torch.randn(n, d, generator=g)
x[0] = 0                                            # the padding row
users = torch.randint(0, 500, (40_000,), generator=g)
items = torch.randint(1, n, (40_000,), generator=g)
items[:n - 1] = torch.arange(1, n)                  # every item but the padding has an interaction
knn_graph(x[:64], 5, 64, backend=backend)           # import faiss, warm the allocator
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")                                    # VmHWM := VmRSS
base = rss("VmRSS:")
if case == "graph":
    knn_graph(x, 10, 1024, backend=backend)
else:
    cooccurrence_lift(x, users, items, k=10, chunk_size=1024,
                      knn=lambda m, k, c, **kw: knn_graph(m, k, c, skip_first=False, backend=backend, **kw))
print(json.dumps({"copies": (rss("VmHWM:") - base) / x.nbytes}))
"""


def _extra_copies(case: str, backend: str) -> float:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    out = subprocess.run([sys.executable, "-c", _SCRIPT, case, backend], capture_output=True, text=True, env=env,
                         timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    if "skip" in result:
        pytest.skip(result["skip"])
    return result["copies"]


def test_faiss_knn_graph_holds_one_copy_of_the_features():
    """Before: the unit rows, the valid rows of them and faiss's index copy (3 copies above the input)."""
    assert _extra_copies("graph", "faiss") < 1.5


def test_gate_lift_does_not_copy_the_warm_rows():
    """Before: the warm rows (a copy) and the three of ``knn_graph`` (4 copies); the warm rows 1..n-1 are now a
    view, so the gate's kNN graph is the one copy of the search."""
    assert _extra_copies("lift", "faiss") < 1.5
