"""One GAT layer, forward + backward: the fused kernel (``recgoat_core.layers``) against the previous one.

    OMP_NUM_THREADS=1 python benchmarks/bench_gat.py [--device cpu|cuda] [--repeats 30]

Synthetic symmetric cosine-kNN graphs like TikTok's item graph (6,710 items, k = 10) and the Amazon-sized
set's (1,600 items), d = 64, 8 heads, dropout 0.1 in training mode and 0 in eval mode. The previous
implementation is the exact reference kept in ``tests/test_layers_gat_kernel.py``. Prints the median time per
call of each and the largest output difference (eval mode, same parameters).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from recgoat_core.graphs import knn_graph  # noqa: E402
from recgoat_core.layers import AttentionGraph, GATConv  # noqa: E402
from tests.test_layers_gat_kernel import ReferenceGATConv, ReferenceGraph  # noqa: E402


def timed(layer: torch.nn.Module, x: torch.Tensor, graph: torch.nn.Module, repeats: int) -> float:
    """Median seconds of ``layer(x, graph)`` forward + backward."""
    times = []
    for i in range(repeats + 3):
        if x.is_cuda:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        layer(x, graph).square().sum().backward()
        if x.is_cuda:
            torch.cuda.synchronize()
        if i >= 3:  # warm-up calls
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--heads", type=int, default=8)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--k", type=int, default=10)
    args = parser.parse_args()
    device = torch.device(args.device)
    print(f"torch {torch.__version__}, device {device}, threads {torch.get_num_threads()}, d={args.dim}, "
          f"heads={args.heads}, k={args.k}; median of {args.repeats} forward+backward calls")
    print("| items | edges (with loops) | mode | previous (ms) | fused (ms) | speed-up | max abs diff |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for n in (6710, 1600):
        torch.manual_seed(0)
        feats = torch.randn(n, 128)
        edges = knn_graph(feats, args.k, skip_first=False)
        new_graph = AttentionGraph(edges, n, args.heads).to(device)
        old_graph = ReferenceGraph(edges, n, args.heads).to(device)
        new = GATConv(args.dim, args.heads, dropout=0.1).to(device)
        old = ReferenceGATConv(args.dim, args.heads, dropout=0.1).to(device)
        old.load_state_dict(new.state_dict())
        x = torch.randn(n, args.dim, device=device, requires_grad=True)
        for mode in ("train", "eval"):
            new.train(mode == "train"), old.train(mode == "train")
            t_old = timed(old, x, old_graph, args.repeats)
            t_new = timed(new, x, new_graph, args.repeats)
            diff = ""
            if mode == "eval":
                with torch.no_grad():
                    diff = f"{float((new(x, new_graph) - old(x, old_graph)).abs().max()):.1e}"
            print(f"| {n:,} | {new_graph.n_edges:,} | {mode} | {t_old * 1e3:.2f} | {t_new * 1e3:.2f} | "
                  f"{t_old / t_new:.2f}x | {diff} |")


if __name__ == "__main__":
    main()
