"""Multimodal peers of RecGOAT as RecBole general recommenders: :class:`~recgoat_recbole.peers.freedom.FREEDOM`
(ACM MM 2023) and :class:`~recgoat_recbole.peers.lgmrec.LGMRec` (AAAI 2024), written from the papers and
compared with MMRec's implementations.

They read the same feature files as RecGOAT (``item_modalities``, through
:class:`~recgoat_recbole.dataset.FeatureDataset` and :func:`recgoat_recbole.dataset.features_for_model`), so
``run_recbole(model="FREEDOM", config_dict={..., "item_modalities": {...}})`` works on every dataset RecGOAT
reads. :mod:`recgoat_recbole.models` registers them.
"""
