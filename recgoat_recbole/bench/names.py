"""Names the command line needs before anything is trained (``recgoat --help``): no heavy import here."""

__all__ = ["BUILTIN_BASELINES", "METRICS"]

#: RecBole 1.2.1 general recommenders the benchmark compares against by default
BUILTIN_BASELINES = ("Pop", "ItemKNN", "BPR", "LightGCN", "NGCF", "SGL", "NCL", "SimpleX", "EASE")

#: the test metrics of the benchmark tables
METRICS = ("recall@10", "ndcg@10", "recall@20", "ndcg@20")
