"""Every config key this package adds to RecBole, declared once: its default, its allowed range and one line of
documentation, per model.

RecBole layers a model's defaults above ``overall.yaml`` and below the dataset YAML and everything the user
passes (:mod:`recgoat_recbole.registry`); here the defaults are :func:`defaults`, the checks the models run when
they are built are :func:`rules` (:func:`recgoat_recbole.config_check.validate`), the dataset cache key reads
:data:`HOOK_KEYS`, and docs/config.md and docs/peers.md print :func:`markdown` (a test compares them).

The groups: the paper's method, our extensions (marked in the docs), the dataset hook (the feature files, read
by :class:`~recgoat_recbole.dataset.FeatureDataset` for every model that reads features) and performance knobs
(no effect on what is computed, only on memory and time).

``recbole_configs/paper.yaml`` is the paper's configuration; the defaults here are the settings we recommend.
RecGOAT's ``backbone``, ``align_gate`` and ``fusion_gamma`` were chosen on validation by the written protocol of
docs/protocol.md (its records: results/protocol-default); the others in an earlier round whose runs were not
kept as records.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from recgoat_recbole.config_check import BOOL, POSITIVE, PROB, WEIGHT, Rule, choice, integer, number

__all__ = ["known_keys", "unknown_keys", "Key", "BACKBONE_NAMES", "REMOVED", "HOOK_KEYS", "RECGOAT_KEYS", "FREEDOM_KEYS", "LGMREC_KEYS", "MODELS", "keys_of", "defaults",
           "rules", "markdown", "GROUPS"]

PAPER = "the paper's method"
EXTENSION = "our extensions"
HOOK = "the dataset hook"
PERFORMANCE = "performance"
PEER = "the model's own"
#: the groups in the order the docs print them
GROUPS = (HOOK, PAPER, EXTENSION, PERFORMANCE, PEER)


@dataclass(frozen=True)
class Key:
    """One config key: its default, the rule its value must pass (``None``: free-form, checked where it is
    read), its group and one line of documentation."""

    name: str
    default: Any
    rule: Rule | None
    group: str
    doc: str


#: the feature files, read by the dataset hook for every model that reads features (and part of its cache key)
HOOK_KEYS: tuple[Key, ...] = (
    Key("item_modalities", None, None, HOOK,
        "`{name: file}`, any number. A file is `.npy` (MMRec: row r = item token r; a `<file>.ids` sidecar overrides) or `.npz` (`ids`, `features`, optional `mask`). `auto:col1,col2` = the text of those columns of `<dataset>.item`, encoded and cached. A list `[text, image]` means `text_feat.npy`, `image_feat.npy`. Relative paths: the dataset folder first, then the working directory."),
    Key("text_encoder", None, None, HOOK,
        "encoder for `auto:` text (default: the offline all-MiniLM-L6-v2; any sentence-transformers name or path)"),
    Key("feature_cache_dir", "recgoat_cache", None, HOOK,
        "where `auto:` features, template profiles and kNN graphs are cached (in `<dir>/<dataset>/`)"),
    Key("feature_norm", "l2", choice("l2", "standard", "none"), HOOK,
        "`l2`, `standard` (z-score per column) or `none`, applied to raw features"),
    Key("missing_features", "error", choice("error", "zero"), HOOK,
        "`error` or `zero`: a dataset item or user without a feature row"),
    Key("user_profile_feat", None, None, HOOK,
        "a feature file keyed by user token (`recgoat features profiles`), or `auto:template[:cols]` for the offline template profiles built from the training split"),
    Key("id_only", False, BOOL, HOOK,
        "ignore every feature file: RecGOAT is its backbone alone (rating-weighted where it applies; with `use_rating_weights: false`, the plain backbone)"),
)

#: the RecBole recommenders RecGOAT's ID branch can be (``recgoat_recbole.aligned.BACKBONES``; a test compares)
BACKBONE_NAMES = ("LightGCN", "NGCF", "SGL", "NCL", "BPR", "SimpleX")

#: keys RecGOAT had and no longer reads -> where their job went (a config setting one is one ConfigError)
REMOVED: dict[str, str] = {
    **{key: "SGL's graph contrast on the ID branch is `backbone: SGL` (its ssl_weight / ssl_tau / drop_ratio; SGL "
            "sums over the batch and contrasts all nodes)"
       for key in ("id_ssl_weight", "id_ssl_temperature", "id_ssl_drop_ratio")},
    **{key: "FREEDOM's item–item graph over the ID embeddings is the peer `model: FREEDOM`"
       for key in ("item_graph_layers", "item_graph_weights")},
}

#: RecGOAT's own keys (with :data:`HOOK_KEYS`, its defaults)
RECGOAT_KEYS: tuple[Key, ...] = (
    Key("backbone", "NCL", replace(choice(*BACKBONE_NAMES), optional=True), PAPER,
        "the ID branch: a RecBole recommender with its own keys from its RecBole YAML (NCL: chosen on validation by docs/protocol.md; LightGCN is the paper's; `~`, as in checkpoints from before this key: LightGCN); what applies to which: docs/plugin.md. `SGL` is SGL's graph contrast on the ID branch"),
    Key("embedding_size", 64, integer(1), PAPER,
        "d, for every branch (a backbone other than LightGCN: its RecBole YAML's; NGCF's item vectors are its layers concatenated)"),
    Key("n_layers", 2, integer(0), PAPER,
        "the backbone's layers (LightGCN: RecBole's default; the paper uses 3; another backbone: its RecBole YAML's)"),
    Key("reg_weight", 0.0001, WEIGHT, PAPER,
        "λ_reg on the batch's layer-0 user/item embeddings (another backbone: its RecBole YAML's)"),
    Key("use_rating_weights", True, BOOL, PAPER,
        "\"rating attention\" edge weights when the data has `RATING_FIELD` (backbones LightGCN, NGCF, NCL; not SGL, which redraws its own graphs, nor BPR / SimpleX)"),
    Key("rating_temperature", 4.0, POSITIVE, PAPER,
        "t in `w_ui = |N_u| softmax((r_ui − r̄_u)/t)`"),
    Key("knn_k", 10, integer(0), PAPER,
        "item–item neighbours per modality"),
    Key("knn_chunk_size", 2048, integer(1), PERFORMANCE,
        "rows per similarity block (memory O(chunk · I))"),
    Key("knn_search", "exact", choice("exact", "hnsw"), EXTENSION,
        "our extension (for speed on large catalogues; it changes the graphs): `exact` or `hnsw`, an approximate search (faiss's HNSW graph, on the CPU) for every kNN graph of the run (the views', the user graph's, the gate's); docs/speed.md"),
    Key("use_gat", False, BOOL, PAPER,
        "the GAT over each modality's kNN graph (the paper: true, `recbole_configs/paper.yaml`); false, the default, uses the projected features without graph propagation"),
    Key("gat_layers", 1, integer(0), PAPER,
        "GAT layers per modality (and for the user graph)"),
    Key("gat_heads", 8, integer(1), PAPER,
        "attention heads (must divide `embedding_size`)"),
    Key("gat_dropout", 0.1, PROB, PAPER,
        "attention dropout (one mask per edge, shared by its heads)"),
    Key("use_user_graph", True, BOOL, PAPER,
        "false = ignore the profiles (ablation)"),
    Key("user_knn_k", 10, integer(0), PAPER,
        "user–user neighbours"),
    Key("user_profile_weight", 0.1, WEIGHT, PAPER,
        "γ_p: `z_u = z^id_u + γ_p z^p_u`"),
    Key("use_oat", True, BOOL, PAPER,
        "the transport map `z̃ = z (d·T + Δ)`; false = `z̃ = z`"),
    Key("oat_epsilon", 0.01, POSITIVE, PAPER,
        "Sinkhorn ε for the dimension plan"),
    Key("oat_cost_scale", 100.0, POSITIVE, PAPER,
        "the cost is multiplied by this (the authors' ×100)"),
    Key("oat_iters", 100, integer(1), PAPER,
        "Sinkhorn iterations per training step (warm-started; stops at tolerance)"),
    Key("oat_scale_plan", True, BOOL, PAPER,
        "use `d·T` (row-stochastic); false = `T` as in the authors' code"),
    Key("oat_residual_init", "zeros", choice("zeros", "xavier"), PAPER,
        "`zeros` or `xavier` (authors' code) for Δ"),
    Key("oat_plan_grad", False, BOOL, PAPER,
        "differentiate through unrolled Sinkhorn instead of holding the plan fixed"),
    Key("cmcl_weight", 0.032, WEIGHT, PAPER,
        "λ_c of the contrastive term; 0 turns it off"),
    Key("cmcl_temperature", 0.2, POSITIVE, PAPER,
        "τ"),
    Key("cmcl_max_items", None, integer(1, optional=True), EXTENSION,
        "our extension (for speed; it changes the loss): at most this many of the step's alignment items in one InfoNCE batch (a random subset, O(M²) instead of O(B²) per modality; ~ = all)"),
    Key("align_max_items", None, integer(1, optional=True), EXTENSION,
        "our extension (for speed; it changes the loss): at most this many of a step's distinct positive items enter the alignment terms (a uniformly random subset, drawn before their features are projected, so the step projects only those rows; CMCL and W see only them); ~ = all"),
    Key("oat_plan_every", 10, integer(1), EXTENSION,
        "our extension (for speed; it changes the training): the OAT plan and the views' scale are fitted on every item's projected features on one training step in this many (and on each epoch's first); the steps between reuse them (with the current Δ) and project only their batch's items. 1 = every step (the exact step; the plugin's default). Where a step's views are its batch's (no GAT, the views not in the score, `oat_plan_grad: false`); evaluation always fits them afresh. RecGOAT's 10: docs/protocol.md, issue 28"),
    Key("wasserstein_weight", 0.001, WEIGHT, PAPER,
        "λ_ot of the entropic W1 term; 0 turns it off"),
    Key("wasserstein_epsilon", 0.1, POSITIVE, PAPER,
        "Sinkhorn ε of the W term (cost in [0, 2] on unit vectors); not the OAT map's `oat_epsilon`"),
    Key("wasserstein_iters", 30, integer(1), PAPER,
        "its Sinkhorn iterations; not the OAT map's `oat_iters`"),
    Key("wasserstein_sample_size", 128, integer(1), PAPER,
        "batch items the W term uses (Sinkhorn is O(n²) per iteration)"),
    Key("align_detach_target", False, BOOL, EXTENSION,
        "true: stop-gradient on the unified z in CMCL and W, so the alignment moves only the LM views towards the ID space and never pulls the ID embeddings towards the content"),
    Key("align_target", "output", choice("output", "embedding"), EXTENSION,
        "our extension: `embedding` aligns the views with the layer-0 item embedding table (as `BPR+Align` does) instead of the fused, propagated item vectors of the paper"),
    Key("align_gate", True, BOOL, EXTENSION,
        "our extension: before training, each modality's co-occurrence lift is measured on the training split (how much more often an item's k feature neighbours share a user with it than random items do, `recgoat_core/feature_signal.py`); modalities below `align_gate_min_lift` get no CMCL / W terms. on by default (the paper has no gate: `recbole_configs/paper.yaml` turns it off)"),
    Key("align_gate_min_lift", 2.0, number(1), EXTENSION,
        "the lift a modality needs under `align_gate` (each run logs every modality's lift)"),
    Key("align_gate_fallback", "none", choice("none", "embedding"), EXTENSION,
        "our extension, with `align_gate`: `embedding` aligns a modality the gate closes with the layer-0 item embedding table (as `align_target: embedding`) instead of not at all. RecGOAT only; the plugin treats a closed modality as off"),
    Key("match_scale", True, BOOL, EXTENSION,
        "rescale each aligned view to the ID part's RMS norm before fusion (factor without gradient)"),
    Key("fusion", "fixed", choice("fixed", "learned", "sum", "concat"), PAPER,
        "`fixed`, `learned` (softmax over weights, initialised from `fusion_weights`), `sum`, `concat` (then Linear to d)"),
    Key("fusion_weights", None, None, PAPER,
        "`{id: γ_id, <modality>: γ_m}`, used when `fusion_gamma` is `~` or your configs set these weights and not `fusion_gamma` (the paper's configuration); `~`: id 0.5, the rest shared; normalised to sum 1; must be ≥ 0"),
    Key("fusion_gamma", 0.0, number(0, 1, optional=True), EXTENSION,
        "our extension: the views' share of the score; the modalities share γ equally and the ID part gets 1 − γ (the paper's sensitivity sweep). 0, the default, keeps the views out of warm items' scores: they shape the ID embeddings through CMCL / W and place cold items. `~` uses `fusion_weights`; your configs setting both is an error"),
    Key("fusion_norm", "none", choice("none", "layernorm", "l2"), PAPER,
        "`none`, `layernorm`, `l2` on the fused item vectors"),
    Key("fusion_dropout", 0.0, PROB, PAPER,
        "dropout on the fused item vectors"),
    Key("cold_items_from_features", True, BOOL, EXTENSION,
        "items with no training interaction are scored from their views alone (the modalities that are aligned or in the score; a modality with neither is not computed), never from their untrained ID vectors: in evaluation (in training a cold item keeps its own vector), with the views fitted on the items that have interactions (in training too); BPR and SimpleX backbones through their item table's cold rows. RecGOAT: with the fixed and learned fusions (sum and concat fuse every item alike). docs/plugin.md, Cold items"),
)

#: FREEDOM's own keys (Zhou & Shen, ACM MM 2023; MMRec's configs/model/FREEDOM.yaml)
FREEDOM_KEYS: tuple[Key, ...] = (
    Key("embedding_size", 64, integer(1), PEER,
        "d of the ID embeddings and of the projected features"),
    Key("n_ui_layers", 2, integer(0), PEER,
        "LightGCN layers over the (pruned) user–item graph"),
    Key("n_mm_layers", 1, integer(0), PEER,
        "propagation steps of the item ID embeddings over the frozen item–item graph"),
    Key("knn_k", 10, integer(1), PEER,
        "top-k per row of each modality's cosine similarity, the item itself included (MMRec's convention)"),
    Key("knn_chunk_size", 2048, integer(1), PEER,
        "rows per similarity block while building the kNN graph"),
    Key("knn_search", "exact", choice("exact", "hnsw"), PEER,
        "`exact` or `hnsw` (an approximate search, as RecGOAT's `knn_search`)"),
    Key("mm_image_weight", 0.1, number(0, 1), PEER,
        "weight of a modality named `image` in the fused graph; the other modalities share the rest equally (with no `image` modality: all equal)"),
    Key("mm_weights", None, None, PEER,
        "`{modality: weight}` naming every modality (normalised to sum 1); overrides `mm_image_weight`"),
    Key("dropout", 0.8, PROB, PEER,
        "share of the user–item edges pruned each epoch; 0 = the full graph"),
    Key("reg_weight", 0.0001, WEIGHT, PEER,
        "λ of the feature BPR term; 0 turns it off"),
    Key("train_features", True, BOOL, PEER,
        "the raw feature matrices are fine-tuned through the feature term (MMRec: `freeze=False`)"),
)

#: LGMRec's own keys (Guo et al., AAAI 2024; MMRec's configs/model/LGMRec.yaml, its Baby settings)
LGMREC_KEYS: tuple[Key, ...] = (
    Key("embedding_size", 64, integer(1), PEER,
        "d of the ID embeddings and of the projected features"),
    Key("n_ui_layers", 2, integer(0), PEER,
        "LightGCN layers of the collaborative graph embedding"),
    Key("n_mm_layers", 2, integer(0), PEER,
        "propagation steps of the modality graph embedding"),
    Key("n_hyper_layer", 1, integer(1), PEER,
        "hypergraph layers"),
    Key("hyper_num", 4, integer(1), PEER,
        "hyperedges per modality"),
    Key("keep_rate", 0.5, number(0, 1, low_open=True), PEER,
        "1 − dropout on the hyperedge assignments (training only)"),
    Key("alpha", 0.3, WEIGHT, PEER,
        "weight of the global (hypergraph) embedding"),
    Key("cl_weight", 0.0001, WEIGHT, PEER,
        "λ of the hypergraph contrastive term (summed over the batch, as MMRec)"),
    Key("reg_weight", 1e-06, WEIGHT, PEER,
        "λ of the norm penalty on the batch's final embeddings (RecBole's EmbLoss)"),
    Key("hyper_tau", 0.2, POSITIVE, PEER,
        "Gumbel-softmax and contrastive temperature (MMRec's fixed `tau`)"),
)

#: the keys of RecGOAT's that the alignment plugin (``<Backbone>+Align``) reads
_ALIGN_NAMES = (
    "use_gat", "knn_k", "knn_chunk_size", "knn_search", "gat_layers", "gat_heads", "gat_dropout", "use_oat", "oat_epsilon",
    "oat_cost_scale", "oat_iters", "oat_scale_plan", "oat_residual_init", "oat_plan_grad", "match_scale",
    "cmcl_weight", "cmcl_temperature", "cmcl_max_items", "align_max_items", "oat_plan_every", "wasserstein_weight", "wasserstein_epsilon",
    "wasserstein_iters", "wasserstein_sample_size", "align_detach_target", "align_gate", "align_gate_min_lift",
    "fusion_gamma", "cold_items_from_features",
)


def _pick(keys: tuple[Key, ...], names: tuple[str, ...]) -> tuple[Key, ...]:
    by_name = {k.name: k for k in keys}
    return tuple(by_name[n] for n in names)


def _with(keys: tuple[Key, ...], **new_defaults: Any) -> tuple[Key, ...]:
    return tuple(replace(k, default=new_defaults.pop(k.name)) if k.name in new_defaults else k for k in keys)


#: model name -> its keys (the dataset hook's first), with the defaults that differ per model
MODELS: dict[str, tuple[Key, ...]] = {
    "RecGOAT": HOOK_KEYS + RECGOAT_KEYS,
    # the plugin keeps the alignment gate off (the backbone decides, every modality is aligned) and the exact
    # step (docs/protocol.md, issue 28: its speed settings change only after the same check on its rows)
    "Align": HOOK_KEYS + _with(_pick(RECGOAT_KEYS, _ALIGN_NAMES), align_gate=False, oat_plan_every=1),
    # the peers read raw features, as MMRec does
    "FREEDOM": _with(HOOK_KEYS, feature_norm="none") + FREEDOM_KEYS,
    "LGMRec": _with(HOOK_KEYS, feature_norm="none") + LGMREC_KEYS,
}


def package_models(model: str) -> list[str]:
    """The names in :data:`MODELS` whose keys ``model`` runs with (``<B>+Align``: the plugin's and, when this
    package defines it, the backbone's; a RecBole model: none)."""
    from recgoat_recbole.bench.names import ALIGN_SUFFIX

    names = [model[: -len(ALIGN_SUFFIX)], "Align"] if model.endswith(ALIGN_SUFFIX) else [model]
    return [n for n in names if n in MODELS]


def keys_of(model: str) -> tuple[Key, ...]:
    """The keys of ``model`` (``RecGOAT``, ``Align``, ``FREEDOM`` or ``LGMRec``)."""
    return MODELS[model]


def defaults(model: str) -> dict[str, Any]:
    """``model``'s defaults, as RecBole layers a model YAML."""
    return {k.name: k.default for k in MODELS[model]}


def rules(model: str) -> dict[str, Rule]:
    """The checks of ``model``'s keys that have a rule."""
    return {k.name: k.rule for k in MODELS[model] if k.rule is not None}


def _shown(value: Any) -> str:
    if value is None:
        return "~"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float) and value and abs(value) < 1e-3:
        return f"{value:.0e}".replace("e-0", "e-")
    return str(value)


def markdown(model: str, groups: tuple[str, ...] = GROUPS) -> str:
    """The docs' table of ``model``'s keys in ``groups``: key, default, allowed values, meaning."""
    lines = ["| key | default | allowed | meaning |", "| --- | --- | --- | --- |"]
    for group in groups:
        for k in MODELS[model]:
            if k.group == group:
                allowed = k.rule.describe() if k.rule is not None else "see meaning"
                lines.append(f"| `{k.name}` | {_shown(k.default)} | {allowed} | {k.doc} |")
    return "\n".join(lines)


#: the generated tables in the docs: ``<!-- keys MODEL -->`` ... ``<!-- /keys -->``
_BLOCK = r"(<!-- keys (\w+) -->\n)(.*?)(<!-- /keys -->)"


def render_docs(text: str) -> str:
    """``text`` (a docs page) with every marked block replaced by :func:`markdown` of its model."""
    import re

    return re.sub(_BLOCK, lambda m: m.group(1) + markdown(m.group(2)) + "\n" + m.group(4), text, flags=re.S)


#: keys RecBole's ``Config`` sets itself, or that its entry points take besides the YAML ones
_RUNTIME_KEYS = ("model", "dataset", "MODEL_TYPE", "MODEL_INPUT_TYPE", "device", "local_rank", "single_spec",
                 "eval_type", "valid_neg_sample_args", "test_neg_sample_args", "config_files", "nproc",
                 "world_size", "ip", "port", "offset", "group_offset",
                 "dist_backend",  # read by the ddp_cpu patch (docs/usage.md)
                 "encoding")  # read by RecBole's Dataset._load_feat, in no RecBole YAML


def known_keys() -> frozenset[str]:
    """Every config key some run reads: the keys of every YAML RecBole 1.2.1 ships (``overall``, each dataset's,
    each model's, the quick-start ones), every key this package declares (:mod:`recgoat_recbole.keys`, the
    removed ones included: they have their own error), and what RecBole's ``Config`` sets itself."""
    import glob
    import os

    import recbole
    import yaml

    names = set(_RUNTIME_KEYS) | set(REMOVED)
    for model_keys in MODELS.values():
        names.update(k.name for k in model_keys)
    folder = os.path.join(os.path.dirname(recbole.__file__), "properties")
    for path in glob.glob(os.path.join(folder, "**", "*.yaml"), recursive=True):
        try:
            with open(path, encoding="utf-8") as f:
                data = yaml.safe_load(f)
        except (OSError, yaml.YAMLError):
            continue
        if isinstance(data, dict):
            names.update(str(k) for k in data)
    return frozenset(names)


def unknown_keys(config: Any, known: frozenset[str] | None = None) -> list[tuple[str, str | None]]:
    """The keys *you* set (config files, ``config_dict``, the command line) that no run reads, each with the
    closest known key (or ``None``): ``[("embeding_size", "embedding_size"), ...]``. RecBole keeps such a key
    and nothing reads it, so a typo runs the default silently. A key that another model reads is not unknown
    (a YAML shared by several models is fine)."""
    import difflib

    known = known_keys() if known is None else known
    yours: dict[str, None] = {}
    for part in ("file_config_dict", "variable_config_dict", "cmd_config_dict"):
        yours.update(dict.fromkeys(getattr(config, part, None) or {}))
    internal = getattr(config, "internal_config_dict", None) or {}
    out = []
    for key in yours:
        if key in known or key in internal:
            continue
        close = difflib.get_close_matches(key, sorted(known), n=1, cutoff=0.75)
        out.append((key, close[0] if close else None))
    return out


if __name__ == "__main__":  # python -m recgoat_recbole.keys docs/config.md docs/peers.md: rewrite their tables
    import sys

    for page in sys.argv[1:]:
        with open(page, encoding="utf-8") as f:
            old = f.read()
        with open(page, "w", encoding="utf-8") as f:
            f.write(render_docs(old))
