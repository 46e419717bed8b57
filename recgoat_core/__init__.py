"""recgoat_core: RecGOAT's framework-free core -- plain PyTorch/numpy, no RecBole, no patches.

- :mod:`recgoat_core.alignment` -- the alignment losses (CMCL, the OAT map, the entropic W1 term, Sinkhorn);
- :mod:`recgoat_core.graphs` -- the user–item adjacency, rating weights and chunked kNN graphs;
- :mod:`recgoat_core.layers` -- LightGCN propagation and the GAT;
- :mod:`recgoat_core.feature_files` -- the feature-file format and the alignment of rows to ids by token.

Importing any of these loads torch and numpy only (``tests/test_core_imports.py`` checks it in a fresh
interpreter). The RecBole adapter -- the model, the dataset hook, the registry, the compatibility fixes -- is
:mod:`recgoat_recbole`, which builds on this package.
"""

__all__ = ["alignment", "graphs", "layers", "feature_files"]
