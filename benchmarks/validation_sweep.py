"""The validation-only sweep behind RecGOAT's defaults (no test metric is read to choose anything).

    python benchmarks/validation_sweep.py --dataset ml-100k --epochs 15 --out bench_runs/sweep-ml-100k

Each variant is RecGOAT (or LightGCN) with a few config overrides, trained for ``--epochs`` epochs on the
dataset's YAML (seed 2020) through the benchmark runner; the table reports the best *validation* NDCG@10.
Runs resume like ``recgoat bench``.
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from recgoat_recbole.bench import find_config  # noqa: E402
from recgoat_recbole.bench.runner import RunSpec, run_all  # noqa: E402

VARIANTS = {
    "LightGCN (RecBole)": ("LightGCN", {}),
    "ID-only, rating weights t=1": ("RecGOAT", {"id_only": True, "rating_temperature": 1.0}),
    "ID-only, rating weights t=4": ("RecGOAT", {"id_only": True, "rating_temperature": 4.0}),
    "ID-only, no rating weights": ("RecGOAT", {"id_only": True, "use_rating_weights": False}),
    "text, no alignment terms": ("RecGOAT", {"user_profile_feat": None, "use_cmcl": False, "use_wasserstein": False}),
    "text, CMCL only": ("RecGOAT", {"user_profile_feat": None, "use_wasserstein": False}),
    "text, CMCL + W (λ_ot 0.01)": ("RecGOAT", {"user_profile_feat": None, "ot_weight": 0.01}),
    "text, CMCL + W (λ_ot 0.001)": ("RecGOAT", {"user_profile_feat": None, "ot_weight": 0.001}),
    "text + profiles, no match_scale": ("RecGOAT", {"match_scale": False}),
    "text + profiles (defaults)": ("RecGOAT", {}),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="ml-100k")
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--seed", type=int, default=2020)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    out = args.out or f"bench_runs/sweep-{args.dataset}"
    config = (find_config(args.dataset),)
    common = {"epochs": args.epochs, "stopping_step": 1000, "show_progress": False, "save_dataset": False}
    specs = [RunSpec(args.dataset, model, args.seed, label, config, {**common, **extra})
             for label, (model, extra) in VARIANTS.items()]
    records = run_all(specs, out, verbose=False, show_test=False)
    lines = [f"`python benchmarks/validation_sweep.py --dataset {args.dataset} --epochs {args.epochs}` "
             f"(seed {args.seed}; best validation NDCG@10 within the budget)", "",
             "| variant | valid NDCG@10 | valid Recall@10 | epoch (s) |", "| --- | --- | --- | --- |"]
    for r in records:
        lines.append(f"| {r['label']} | {r['valid']['ndcg@10']:.4f} | {r['valid']['recall@10']:.4f} | "
                     f"{r['epoch_s']:.2f} |")
    text = "\n".join(lines)
    with open(os.path.join(out, "sweep.md"), "w", encoding="utf-8") as f:
        f.write(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
