"""The validation-only sweep behind RecGOAT's defaults (no test metric is read to choose anything).

    python benchmarks/validation_sweep.py --dataset ml-100k --epochs 15
    python benchmarks/validation_sweep.py --dataset tiktok --variants diagnose --epochs 10 --learning-rate 0.005

Each variant is RecGOAT (or LightGCN) with a few config overrides, trained for ``--epochs`` epochs on the
dataset's YAML (seed 2020) through the benchmark runner; the table reports the best *validation* NDCG@10.
Runs resume like ``recgoat bench``.
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from recgoat_recbole.bench.design import find_config  # noqa: E402
from recgoat_recbole.bench.design import RunSpec  # noqa: E402
from recgoat_recbole.bench.execute import run_all  # noqa: E402

#: every RecGOAT variant starts from the model defaults as they were before tuning (every alignment term on,
#: fusion weights id 0.5 / modalities 0.5), whatever a dataset YAML has set since; the variant then overrides
BEFORE_TUNING = {"cmcl_weight": 0.032, "use_oat": True, "wasserstein_weight": 0.001, "fusion_gamma": None}

#: the sweep behind the defaults (ml-100k, text + template profiles)
VARIANTS = {
    "LightGCN (RecBole)": ("LightGCN", {}),
    "ID-only, rating weights t=1": ("RecGOAT", {"id_only": True, "rating_temperature": 1.0}),
    "ID-only, rating weights t=4": ("RecGOAT", {"id_only": True, "rating_temperature": 4.0}),
    "ID-only, no rating weights": ("RecGOAT", {"id_only": True, "use_rating_weights": False}),
    "text, no alignment terms": ("RecGOAT", {"user_profile_feat": None, "cmcl_weight": 0.0, "wasserstein_weight": 0.0}),
    "text, CMCL only": ("RecGOAT", {"user_profile_feat": None, "wasserstein_weight": 0.0}),
    "text, CMCL + W (λ_ot 0.01)": ("RecGOAT", {"user_profile_feat": None, "wasserstein_weight": 0.01}),
    "text, CMCL + W (λ_ot 0.001)": ("RecGOAT", {"user_profile_feat": None, "wasserstein_weight": 0.001}),
    "text + profiles, no match_scale": ("RecGOAT", {"match_scale": False}),
    "text + profiles (defaults)": ("RecGOAT", {}),
}

#: where the modality branch hurts on TikTok (image + audio, 340 cold test items): which part is it?
DIAGNOSE = {
    "LightGCN (RecBole)": ("LightGCN", {}),
    "ID-only": ("RecGOAT", {"id_only": True}),
    "γ 0.1": ("RecGOAT", {"fusion_gamma": 0.1}),
    "γ 0.1, no GAT": ("RecGOAT", {"fusion_gamma": 0.1, "use_gat": False}),
    "γ 0.1, no cold-item fallback": ("RecGOAT", {"fusion_gamma": 0.1, "cold_items_from_features": False}),
    "γ 0.1, no alignment terms": ("RecGOAT", {"fusion_gamma": 0.1, "use_oat": False, "cmcl_weight": 0.0,
                                             "wasserstein_weight": 0.0}),
    "γ 0.1, alignment on the views only": ("RecGOAT", {"fusion_gamma": 0.1, "align_detach_target": True}),
    "γ 0.1, CMCL only": ("RecGOAT", {"fusion_gamma": 0.1, "use_oat": False, "wasserstein_weight": 0.0}),
    "γ 0.1, OAT (map + W) only": ("RecGOAT", {"fusion_gamma": 0.1, "cmcl_weight": 0.0}),
    "γ 0, alignment on the views only": ("RecGOAT", {"fusion_gamma": 0.0, "align_detach_target": True}),
    "γ 0.1, no alignment terms, λ_reg 1e-5": ("RecGOAT", {"fusion_gamma": 0.1, "use_oat": False, "cmcl_weight": 0.0,
                                                         "wasserstein_weight": 0.0, "reg_weight": 1e-5}),
}

#: ml-100k with γ = 0 (the best γ on validation): where does the gain over LightGCN come from?
DIAGNOSE_ML = {
    "γ 0": ("RecGOAT", {"fusion_gamma": 0.0}),
    "γ 0, alignment on the views only": ("RecGOAT", {"fusion_gamma": 0.0, "align_detach_target": True}),
    "γ 0, no alignment terms": ("RecGOAT", {"fusion_gamma": 0.0, "use_oat": False, "cmcl_weight": 0.0,
                                           "wasserstein_weight": 0.0}),
    "γ 0, no user graph": ("RecGOAT", {"fusion_gamma": 0.0, "use_user_graph": False}),
    "γ 0, γ_p 0.2": ("RecGOAT", {"fusion_gamma": 0.0, "user_profile_weight": 0.2}),
}

#: TikTok: can a weaker (or softer) CMCL pull help, as it does on ml-100k, instead of hurting?
CMCL_TIKTOK = {
    "γ 0, λ_c 0.002": ("RecGOAT", {"fusion_gamma": 0.0, "cmcl_weight": 0.002}),
    "γ 0, λ_c 0.008": ("RecGOAT", {"fusion_gamma": 0.0, "cmcl_weight": 0.008}),
    "γ 0, λ_c 0.032, τ 1": ("RecGOAT", {"fusion_gamma": 0.0, "cmcl_temperature": 1.0}),
}

SETS = {"defaults": VARIANTS, "diagnose": DIAGNOSE, "diagnose-ml": DIAGNOSE_ML, "cmcl-tiktok": CMCL_TIKTOK}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="ml-100k")
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--seed", type=int, default=2020)
    parser.add_argument("--variants", choices=sorted(SETS), default="defaults")
    parser.add_argument("--learning-rate", type=float, default=None, help="same for every variant")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    out = args.out or f"bench_runs/sweep-{args.dataset}-{args.variants}"
    config = (find_config(args.dataset),)
    common = {"epochs": args.epochs, "stopping_step": 1000, "show_progress": False, "save_dataset": False}
    if args.learning_rate is not None:
        common["learning_rate"] = args.learning_rate
    specs = [RunSpec(args.dataset, model, args.seed, label, config,
                     {**common, **(BEFORE_TUNING if model == "RecGOAT" else {}), **extra})
             for label, (model, extra) in SETS[args.variants].items()]
    records = run_all(specs, out, verbose=False, show_test=False)
    lr = f" --learning-rate {args.learning_rate:g}" if args.learning_rate is not None else ""
    lines = [f"`python benchmarks/validation_sweep.py --dataset {args.dataset} --variants {args.variants} "
             f"--epochs {args.epochs}{lr}` "
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
