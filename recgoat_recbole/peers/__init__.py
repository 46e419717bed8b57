"""Multimodal peers of RecGOAT as RecBole general recommenders: :class:`FREEDOM` (ACM MM 2023) and
:class:`LGMRec` (AAAI 2024), written from the papers and compared with MMRec's implementations.

They read the same feature files as RecGOAT (``item_modalities``, through :class:`RecGOATDataset` and
:func:`recgoat_recbole.dataset.features_for_model`), so ``run_recbole(model="FREEDOM", config_dict={...,
"item_modalities": {...}})`` works on every dataset RecGOAT reads. :func:`register_peers` registers both, like
RecGOAT (model class, dataset class, default YAML in ``recgoat_recbole/properties``).
"""

from __future__ import annotations

import os

__all__ = ["register_peers", "PEER_MODELS"]

#: the models :func:`register_peers` registers
PEER_MODELS = ("FREEDOM", "LGMRec")


def register_peers() -> None:
    """Register FREEDOM and LGMRec (idempotent), with :class:`RecGOATDataset` as their dataset class."""
    from recgoat_recbole import registry
    from recgoat_recbole.dataset import RecGOATDataset
    from recgoat_recbole.peers.freedom import FREEDOM
    from recgoat_recbole.peers.lgmrec import LGMRec

    registry.install()  # no-op once `import recgoat_recbole` has installed it
    properties = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "properties")
    for model in (FREEDOM, LGMRec):
        registry.register_model(model, RecGOATDataset, os.path.join(properties, f"{model.__name__}.yaml"))


def __getattr__(name: str):
    if name in PEER_MODELS:
        from recgoat_recbole.peers import freedom, lgmrec

        return {"FREEDOM": freedom.FREEDOM, "LGMRec": lgmrec.LGMRec}[name]
    raise AttributeError(name)
