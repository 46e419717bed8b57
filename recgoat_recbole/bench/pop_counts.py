"""The bench's one change to a RecBole model, applied in its worker process only while a ``Pop`` run trains.

``Pop.calculate_loss`` does ``item_cnt[item] = item_cnt[item] + 1``. With an item repeated in a batch, that
assignment adds 1 once, so Pop counts "batches that contain the item", not interactions. Popular items tie at
the number of batches, and the tie order follows the shuffling, so Pop's metrics depend on the seed.
:func:`counting_every_interaction` counts with ``index_add_`` for the duration of
one run; ``import recgoat_recbole`` leaves RecBole's Pop as it is. The run's record says so (``adjusted``),
and the bench's table prints it under the table.
"""

from __future__ import annotations

import contextlib
from typing import Any, Iterator

__all__ = ["counting_every_interaction", "NOTE"]

#: what the run's record (``adjusted``) and the table's footnote say
NOTE = "counts every interaction (RecBole 1.2.1's Pop counts an item once per batch: recgoat_recbole/bench/pop_counts.py)"


def _pop_calculate_loss(self: Any, interaction: Any) -> Any:
    """``Pop.calculate_loss`` that counts every interaction (RecBole's counts an item once per batch)."""
    import torch

    item = interaction[self.ITEM_ID]
    self.item_cnt.index_add_(0, item, torch.ones_like(item)[:, None].to(self.item_cnt.dtype))
    self.max_cnt = torch.max(self.item_cnt, dim=0)[0]
    return torch.nn.Parameter(torch.zeros(1)).to(self.device)


@contextlib.contextmanager
def counting_every_interaction() -> Iterator[None]:
    """RecBole's ``Pop`` counting every interaction inside the ``with`` block; its own method again after."""
    from recbole.model.general_recommender.pop import Pop

    own = Pop.__dict__["calculate_loss"]
    Pop.calculate_loss = _pop_calculate_loss
    try:
        yield
    finally:
        Pop.calculate_loss = own
