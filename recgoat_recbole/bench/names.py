"""Names the command line needs before anything is trained (``recgoat --help``): no heavy import here."""

__all__ = ["BUILTIN_BASELINES", "MULTIMODAL_PEERS", "DEFAULT_MODELS", "METRICS", "ALIGNABLE", "ALIGN_SUFFIX"]

#: RecBole 1.2.1 general recommenders the benchmark compares against by default
BUILTIN_BASELINES = ("Pop", "ItemKNN", "BPR", "LightGCN", "NGCF", "SGL", "NCL", "SimpleX", "EASE")

#: multimodal recommenders of this package (:mod:`recgoat_recbole.peers`): the default selection adds them on
#: every dataset whose config has ``item_modalities`` (they need item features), and skips them, with a note,
#: on the others
MULTIMODAL_PEERS = ("FREEDOM", "LGMRec")

#: the default selection of ``recgoat bench`` (no ``--models``); the peers are added per dataset
DEFAULT_MODELS = ("RecGOAT", *BUILTIN_BASELINES)

#: the backbones ``--align`` adds ``<Backbone>+Align`` rows for (recgoat_recbole.aligned.BACKBONES)
ALIGNABLE = ("LightGCN", "NGCF", "SGL", "NCL", "BPR", "SimpleX")
ALIGN_SUFFIX = "+Align"

#: the test metrics of the benchmark tables
METRICS = ("recall@10", "ndcg@10", "recall@20", "ndcg@20")
