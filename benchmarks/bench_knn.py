"""kNN item-graph construction: time and peak memory at 20k / 100k / 200k synthetic items x 768-d.

    python benchmarks/bench_knn.py                       # 20k, 100k, 200k items, k = 10, chunk 2048
    python benchmarks/bench_knn.py --sizes 100000 --chunks 512 2048 8192   # memory is bounded by the chunk
    python benchmarks/bench_knn.py --backend torch      # torch's blocks on the CPU (default: faiss there)

Each (size, chunk) runs in its own process so that its peak RSS is its own. The features are clustered
Gaussians (200 centres, like item embeddings that form topics), float32, seed 0. Reported: wall time of
``recgoat_core.graphs.knn_graph`` (cosine, top-k per row, symmetrised), the process's peak RSS during the
call (the kernel's VmHWM, reset just before it), the RSS just before the call (features + torch), the
difference (what the graph build itself needed), and that difference against the O(chunk * n) similarity
block the docstring promises.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time


def _status_mib(field: str) -> float:
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _reset_peak() -> None:
    """Reset the kernel's peak-RSS mark (VmHWM) so the peak is the graph build's, not the data generation's."""
    with open("/proc/self/clear_refs", "w", encoding="ascii") as f:
        f.write("5")


def _one(n: int, dim: int, k: int, chunk: int, backend: str | None) -> dict:
    import torch

    from recgoat_core.graphs import knn_graph

    g = torch.Generator().manual_seed(0)
    centres = torch.randn(200, dim, generator=g)
    x = centres[torch.randint(0, 200, (n,), generator=g)] + 0.5 * torch.randn(n, dim, generator=g)
    del centres
    _reset_peak()
    before = _status_mib("VmRSS")
    t0 = time.perf_counter()
    edges = knn_graph(x, k, chunk_size=chunk, skip_first=False, show_progress=False, backend=backend)
    seconds = time.perf_counter() - t0
    peak = _status_mib("VmHWM")
    return {"items": n, "dim": dim, "k": k, "chunk": chunk, "backend": backend or "default",
            "seconds": seconds, "edges": int(edges.shape[1]),
            "rss_before_mib": before, "peak_mib": peak, "build_mib": peak - before,
            "features_mib": n * dim * 4 / 2**20, "block_mib": chunk * n * 4 / 2**20,
            "threads": torch.get_num_threads()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[20_000, 100_000, 200_000])
    parser.add_argument("--dim", type=int, default=768)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--chunks", type=int, nargs="+", default=[2048])
    parser.add_argument("--backend", choices=["faiss", "torch"], default=None,
                        help="knn_graph's backend (default: its own choice, faiss on the CPU)")
    parser.add_argument("--json", default=None, help="also write the rows to this JSON file")
    parser.add_argument("--_child", nargs=2, type=int, metavar=("ITEMS", "CHUNK"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args._child:
        print(json.dumps(_one(args._child[0], args.dim, args.k, args._child[1], args.backend)))
        return
    rows = []
    print("| items | dim | k | chunk | time (s) | edges | RSS before (MiB) | peak RSS (MiB) | build (MiB) | "
          "chunk block (MiB) | features (MiB) |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for n in args.sizes:
        for chunk in args.chunks:
            backend = ["--backend", args.backend] if args.backend else []
            out = subprocess.run([sys.executable, os.path.abspath(__file__), "--dim", str(args.dim), "--k",
                                  str(args.k), *backend, "--_child", str(n), str(chunk)], check=True,
                                 capture_output=True, text=True)
            r = json.loads(out.stdout.strip().splitlines()[-1])
            rows.append(r)
            print(f"| {n:,} | {r['dim']} | {r['k']} | {chunk} | {r['seconds']:.1f} | {r['edges']:,} | "
                  f"{r['rss_before_mib']:.0f} | {r['peak_mib']:.0f} | {r['build_mib']:.0f} | {r['block_mib']:.0f} | "
                  f"{r['features_mib']:.0f} |", flush=True)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
