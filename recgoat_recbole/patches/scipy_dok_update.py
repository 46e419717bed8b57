"""``scipy_dok_update`` -- scipy 1.12 moved ``dok_matrix`` storage to ``self._dict`` and dropped the private
``_update`` that RecBole's LightGCN, NGCF, NCL, SGL, GCMC, SpectralCF, KGIN and MCCLK call to fill their
adjacency. We add ``_update`` back as a bulk ``dict.update`` on that storage (the old semantics: no
per-key bounds check).
"""

from __future__ import annotations

from typing import Any

#: what :func:`install` replaced (RecBole's own functions)
ORIGINALS: dict[str, Any] = {}



def _dok_update(self: Any, data: dict) -> None:
    """``dok_matrix._update`` as scipy < 1.12 had it: a bulk dict update of the stored entries."""
    self._dict.update(data)


def install() -> None:
    import scipy.sparse as sp

    if hasattr(sp.dok_matrix, "_update"):
        return  # scipy < 1.12 still has it
    ORIGINALS["dok_matrix._update"] = None
    sp.dok_matrix._update = _dok_update
