"""The layer rule: the core (``recgoat_core``) imports torch and numpy only -- no RecBole, no ray, no adapter --
and importing it patches nothing. Checked statically (every import statement of the core) and in a fresh
interpreter (what importing it actually loads and changes)."""
from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
import textwrap

import recgoat_core

CORE = os.path.dirname(recgoat_core.__file__)
#: what a core module may import at module level; tqdm only inside a function (a progress bar, when shown)
ALLOWED_ROOTS = {"__future__", "torch", "numpy", "recgoat_core"} | set(sys.stdlib_module_names)


def _core_files() -> list[str]:
    return sorted(os.path.join(d, f) for d, _, files in os.walk(CORE) for f in files if f.endswith(".py"))


def test_core_modules_import_only_torch_numpy_and_the_standard_library():
    bad = []
    for path in _core_files():
        tree = ast.parse(open(path, encoding="utf-8").read())
        for node in tree.body:  # module level: what importing the module loads
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module or ""] if isinstance(node, ast.ImportFrom) and node.level == 0 else [])
            bad += [f"{os.path.relpath(path, CORE)}: {n}" for n in names if n.split(".")[0] not in ALLOWED_ROOTS]
        for node in ast.walk(tree):  # anywhere: never the adapter or RecBole
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            bad += [f"{os.path.relpath(path, CORE)}: {n}" for n in names
                    if n.split(".")[0] in ("recbole", "recgoat_recbole", "ray")]
    assert not bad, bad


def test_importing_the_core_loads_no_recbole_and_patches_nothing():
    code = textwrap.dedent("""
        import json, sys
        import numpy as np, scipy.sparse as sp, torch
        before = (sorted(np.__dict__), sorted(sp.dok_matrix.__dict__), torch.load, sorted(sys.modules))
        import recgoat_core.alignment, recgoat_core.graphs, recgoat_core.layers, recgoat_core.feature_files
        new = sorted(set(sys.modules) - set(before[3]))
        print(json.dumps({
            "numpy": sorted(set(np.__dict__) - set(before[0])),
            "dok": sorted(set(sp.dok_matrix.__dict__) - set(before[1])),
            "torch_load_same": torch.load is before[2],
            "pkg_resources": "pkg_resources" in sys.modules,
            "frameworks": [m for m in new if m.split(".")[0] in ("recbole", "ray", "recgoat_recbole", "pandas")],
        }))
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert report == {"numpy": [], "dok": [], "torch_load_same": True, "pkg_resources": False, "frameworks": []}
