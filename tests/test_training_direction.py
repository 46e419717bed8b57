"""RecGOAT learns in the right direction through RecBole's Trainer: a few epochs on the small real dataset."""
from __future__ import annotations

import torch
from recbole.trainer import Trainer

from tests.test_model import _build

EPOCHS = 4


def _ndcg(trainer, valid) -> float:
    return trainer.evaluate(valid, load_best_model=False, show_progress=False)["ndcg@10"]


def test_training_lowers_the_loss_and_ranks_validation_items_far_above_chance(mini_ml):
    """Four epochs of the full model: the epoch loss falls, and validation NDCG@10 is at least 3x both the untrained
    model's and a random scorer's (a model that learns the wrong way, e.g. BPR with positive and negative
    swapped, ends up at or below chance)."""
    config, _, train, valid, model = _build(mini_ml, epochs=EPOCHS, learning_rate=0.01)
    trainer = Trainer(config, model)
    untrained = _ndcg(trainer, valid)

    g = torch.Generator().manual_seed(0)
    model.full_sort_predict = lambda inter: torch.rand(len(inter[model.USER_ID]) * model.n_items, generator=g)
    chance = _ndcg(trainer, valid)
    del model.full_sort_predict

    trainer.fit(train, None, saved=False, show_progress=False)
    losses = [float(trainer.train_loss_dict[epoch]) for epoch in range(EPOCHS)]
    trained = _ndcg(trainer, valid)
    assert losses[-1] < 0.95 * losses[0], losses
    assert trained > 3 * max(untrained, chance), (trained, untrained, chance)
