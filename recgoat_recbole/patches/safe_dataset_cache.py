"""``safe_dataset_cache`` -- RecBole's ``create_dataset`` unpickles ``saved/<dataset>-<Class>.pth`` whenever it exists, and
``data_preparation`` ``saved/<dataset>-for-<model>-dataloader.pth``: :mod:`recgoat_recbole.dataset_cache`
replaces them (signed, keyed caches) wherever RecBole's entry points look the functions up.
"""

from __future__ import annotations

from typing import Any

#: what :func:`install` replaced (RecBole's own functions)
ORIGINALS: dict[str, Any] = {}




def install() -> None:
    """RecBole unpickles ``saved/*.pth`` dataset/dataloader caches: use the signed, keyed ones instead
    (:mod:`recgoat_recbole.dataset_cache`), wherever RecBole's entry points look the functions up."""
    import recbole.data
    import recbole.data.utils as data_utils
    import recbole.quick_start.quick_start as qs

    from recgoat_recbole import dataset_cache

    ORIGINALS.update({name: getattr(data_utils, name) for name in
                                       ("create_dataset", "load_split_dataloaders", "save_split_dataloaders")})
    for module in (data_utils, recbole.data, qs):
        for name in ORIGINALS:
            if hasattr(module, name):
                setattr(module, name, getattr(dataset_cache, name))
