"""The learning-rate finder's accepted ranges (one step, a decreasing sweep) and a search in the middle of a fit."""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import torchbolt as pl
from torchbolt.callbacks import LearningRateFinder
from torchbolt.tuner import Tuner
from torchbolt.utilities.exceptions import MisconfigurationException


class Regression(pl.LightningModule):
    def __init__(self, learning_rate: float = 0.01) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.net = nn.Linear(4, 1)
        #: (global_step, fit_loop.max_steps) seen at each training batch
        self.seen: list[tuple[int, int]] = []

    def training_step(self, batch, batch_idx):
        self.seen.append((self.trainer.global_step, self.trainer.fit_loop.max_steps))
        x, y = batch
        return F.mse_loss(self.net(x), y)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.hparams.learning_rate)

    def train_dataloader(self):
        g = torch.Generator().manual_seed(0)
        x = torch.randn(256, 4, generator=g)
        return DataLoader(TensorDataset(x, x.sum(dim=1, keepdim=True)), batch_size=8)


def _trainer(**kwargs) -> pl.Trainer:
    kwargs.setdefault("max_epochs", 1)
    return pl.Trainer(logger=False, enable_progress_bar=False, enable_model_summary=False,
                      enable_checkpointing=False, **kwargs)


def test_a_single_step_search_runs_and_leaves_the_attribute_alone():
    model = Regression(learning_rate=0.123)
    finder = Tuner(_trainer()).lr_find(model, num_training=1)
    assert len(finder.results["lr"]) == 1
    assert finder.suggestion() is None  # one point gives no slope
    assert model.hparams.learning_rate == 0.123


def test_min_lr_above_max_lr_sweeps_downwards_with_a_warning():
    model = Regression()
    with pytest.warns(UserWarning, match="min_lr is larger than max_lr"):
        finder = Tuner(_trainer()).lr_find(model, min_lr=1.0, max_lr=1e-4, num_training=5, update_attr=False)
    lrs = finder.results["lr"]
    assert lrs[0] == pytest.approx(1.0) and lrs[-1] == pytest.approx(1e-4)
    assert all(a > b for a, b in itertools.pairwise(lrs))


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"min_lr": 0.0}, "min_lr=0.0"), ({"max_lr": -1.0}, "max_lr=-1.0"), ({"num_training": 0}, "num_training=0"),
])
def test_non_positive_rates_or_no_steps_are_refused(kwargs, match):
    with pytest.raises(MisconfigurationException, match=match):
        Tuner(_trainer()).lr_find(Regression(), **kwargs)


def test_total_batch_index_counts_the_batches_accumulated_into_the_steps():
    finder = Tuner(_trainer(accumulate_grad_batches=2)).lr_find(Regression(), num_training=10,
                                                               early_stop_threshold=None)
    assert len(finder.results["lr"]) == len(finder.results["loss"]) == 10
    assert finder._total_batch_idx == 19


def test_a_search_in_the_middle_of_a_fit_continues_from_the_current_step_and_is_undone():
    class SearchAtSecondEpoch(LearningRateFinder):
        def on_fit_start(self, trainer, pl_module):
            return

        def on_train_epoch_start(self, trainer, pl_module):
            if trainer.current_epoch == 1:
                self.lr_find(trainer, pl_module)

    model = Regression()
    trainer = _trainer(max_epochs=2, limit_train_batches=4, callbacks=[
        SearchAtSecondEpoch(num_training_steps=6, early_stop_threshold=None)])
    trainer.fit(model)
    search = model.seen[4:10]
    assert search == [(step, 10) for step in range(4, 10)]  # 6 steps from global step 4, stopping at 4 + 6
    assert model.seen[10:] == [(step, -1) for step in range(4, 8)]  # the fit goes on where it was
    assert trainer.global_step == 8


def test_the_lr_finder_refuses_to_run_inside_an_evaluation():
    class SearchBeforeValidation(LearningRateFinder):
        def on_validation_start(self, trainer, pl_module):
            self.lr_find(trainer, pl_module)

    class WithValidation(Regression):
        def validation_step(self, batch, batch_idx):
            pass

        val_dataloader = Regression.train_dataloader

    with pytest.raises(MisconfigurationException, match="runs inside `trainer.fit`"):
        _trainer(callbacks=[SearchBeforeValidation()]).validate(WithValidation())
