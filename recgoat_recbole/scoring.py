"""Dot-product scoring with evaluation embeddings cached per parameter state, shared by RecGOAT and the peers.

A model scores ``score(u, i) = z_u · z_i`` from all users' and items' vectors (:meth:`scoring_embeddings`).
In eval mode those are computed once per parameter state: the cache is keyed by every parameter's and
buffer's version counter and storage, so no path -- ``Trainer.evaluate(load_best_model=True)`` loading the
best checkpoint, ``train()``/``eval()``, an optimiser step outside the trainer -- can score with embeddings of
parameters that are no longer the model's.
"""

from __future__ import annotations

import torch

__all__ = ["CachedScoring", "tensor_state"]


def tensor_state(tensors) -> tuple:
    """Each tensor's version counter and storage: changes with any in-place update (optimiser steps,
    ``load_state_dict``'s copies) or swap (``.to()``) of one of them; the key of a cache of what they compute."""
    return tuple((t._version, t.data_ptr()) for t in tensors)


class CachedScoring:
    """Mixin for a RecBole recommender (put it before ``GeneralRecommender`` in the bases)."""

    _cache: tuple[tuple, torch.Tensor, torch.Tensor] | None = None
    _tracked: list[torch.Tensor] | None = None  # parameters and buffers, listed once per structural change

    def scoring_embeddings(self) -> tuple[torch.Tensor, torch.Tensor]:
        """All users' and items' scoring vectors (deterministic: no sampling, no dropout in eval mode)."""
        raise NotImplementedError

    def _invalidate(self) -> None:
        """Drop the cached vectors (to free memory during training; correctness never depends on it)."""
        self._cache = None

    def _state_version(self) -> tuple:
        """Changes whenever any parameter or buffer does: in-place updates (optimiser steps,
        ``load_state_dict``'s copies) bump a tensor's version counter; a swapped tensor changes its storage.

        The tensors are listed once (not per evaluation batch: walking the module tree every call would
        cost time on every batch) and listed again after anything that can swap one:
        ``train()``/``eval()`` (every ``Trainer.evaluate`` and ``fit`` epoch), ``load_state_dict`` (also with
        ``assign=True``) and ``.to()``/``.cuda()``/``.half()`` (``_apply``)."""
        if self._tracked is None:
            self._tracked = [*self.parameters(), *self.buffers()]
        return tensor_state(self._tracked)

    def train(self, mode: bool = True):
        self._tracked = None
        return super().train(mode)

    def load_state_dict(self, *args, **kwargs):
        self._tracked = None
        return super().load_state_dict(*args, **kwargs)

    def _apply(self, *args, **kwargs):
        self._tracked = None
        return super()._apply(*args, **kwargs)

    def _embeddings(self) -> tuple[torch.Tensor, torch.Tensor]:
        """:meth:`scoring_embeddings`, in eval mode computed once per parameter state."""
        if self.training:
            return self.scoring_embeddings()
        version = self._state_version()
        if self._cache is None or self._cache[0] != version:
            with torch.no_grad():
                users, items = self.scoring_embeddings()
            self._cache = (version, users, items)
        return self._cache[1], self._cache[2]

    def predict(self, interaction) -> torch.Tensor:
        users, items = self._embeddings()
        return (users[interaction[self.USER_ID]] * items[interaction[self.ITEM_ID]]).sum(-1)

    def full_sort_predict(self, interaction) -> torch.Tensor:
        users, items = self._embeddings()
        return (users[interaction[self.USER_ID]] @ items.T).view(-1)
