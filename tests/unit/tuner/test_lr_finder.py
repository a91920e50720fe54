"""The learning-rate finder: suggestion, plot, restoration of all state, the callback and ``trainer.tune``."""

from __future__ import annotations

import itertools
import math
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import torchbolt as pl
from torchbolt.callbacks import LearningRateFinder
from torchbolt.tuner import Tuner
from torchbolt.tuner.lr_finder import _LRFinder
from torchbolt.utilities.exceptions import MisconfigurationException
from torchbolt.utilities.rank_zero import TorchboltDeprecationWarning


def _regression_data(n: int = 1024) -> TensorDataset:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 8, generator=g)
    w = torch.randn(8, 1, generator=g)
    return TensorDataset(x, x @ w + 0.01 * torch.randn(n, 1, generator=g))


class LinearRegression(pl.LightningModule):
    """Least squares with inputs ~ N(0, I): the loss Hessian is 2I, so SGD converges for lr < 1."""

    def __init__(self, lr: float = 1e-3, optimizer: str = "sgd", shuffle: bool = False) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.net = nn.Linear(8, 1)
        self.steps = 0

    def training_step(self, batch, batch_idx):
        self.steps += 1
        x, y = batch
        return F.mse_loss(self.net(x), y)

    def configure_optimizers(self):
        if self.hparams.optimizer == "adam":
            opt = torch.optim.Adam(self.parameters(), lr=self.hparams.lr)
            return [opt], [torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)]
        return torch.optim.SGD(self.parameters(), lr=self.hparams.lr)

    def train_dataloader(self):
        return DataLoader(_regression_data(), batch_size=32, shuffle=self.hparams.shuffle)


def _trainer(**kwargs) -> pl.Trainer:
    kwargs.setdefault("max_epochs", 1)
    return pl.Trainer(logger=False, enable_progress_bar=False, enable_model_summary=False,
                      enable_checkpointing=False, **kwargs)


def test_suggestion_lands_in_known_good_range_and_plot_file_is_written(tmp_path):
    model = LinearRegression()
    lr_finder = Tuner(_trainer()).lr_find(model, min_lr=1e-5, max_lr=10.0, num_training=60)
    suggestion = lr_finder.suggestion()
    # SGD converges on this problem for lr < 1 and makes real progress within a few dozen steps from ~1e-2
    assert 1e-2 <= suggestion < 1.0
    fig = lr_finder.plot(suggest=True, show=False)
    path = tmp_path / "lr_find.png"
    fig.savefig(path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert path.stat().st_size > 5_000


def test_lr_find_sets_the_suggestion_on_the_attribute_and_hparams():
    model = LinearRegression(lr=1e-3)
    lr_finder = Tuner(_trainer()).lr_find(model, min_lr=1e-4, max_lr=1.0, num_training=30)
    assert model.hparams.lr == lr_finder.suggestion() != 1e-3


def test_lr_find_leaves_model_optimizer_and_trainer_as_before():
    torch.manual_seed(1)
    reference = LinearRegression(lr=0.01, optimizer="adam", shuffle=True)
    _trainer(max_epochs=2).fit(reference)

    torch.manual_seed(1)
    model = LinearRegression(lr=0.01, optimizer="adam", shuffle=True)
    trainer = _trainer(max_epochs=2)
    callbacks_before = list(trainer.callbacks)
    Tuner(trainer).lr_find(model, num_training=20, update_attr=False)
    assert trainer.global_step == 0 and trainer.current_epoch == 0
    assert trainer.callbacks == callbacks_before
    trainer.fit(model)
    # same weights bit for bit: weights, Adam state, scheduler, random stream (shuffling) were all restored
    for expected, actual in zip(reference.parameters(), model.parameters()):
        assert torch.equal(expected, actual)


def test_learning_rate_finder_callback_then_trains_at_the_suggested_rate():
    model = LinearRegression(lr=1e-3)
    finder = LearningRateFinder(min_lr=1e-4, max_lr=1.0, num_training_steps=30)
    trainer = _trainer(max_epochs=1, callbacks=[finder])
    trainer.fit(model)
    suggestion = finder.optimal_lr.suggestion()
    assert trainer.optimizers[0].param_groups[0]["lr"] == suggestion == model.hparams.lr
    # the search's steps do not count: the fit itself ran one full epoch
    assert trainer.global_step == len(_regression_data()) // 32


def test_lr_find_runs_exactly_the_requested_steps_and_then_ends_fit():
    model = LinearRegression()
    trainer = _trainer(max_epochs=3)
    lr_finder = Tuner(trainer).lr_find(model, min_lr=1e-6, max_lr=1e-3, num_training=25, early_stop_threshold=None)
    assert model.steps == 25
    assert len(lr_finder.results["lr"]) == len(lr_finder.results["loss"]) == 25
    assert trainer.state.finished


def test_lr_find_stops_early_when_the_loss_diverges():
    lr_finder = Tuner(_trainer()).lr_find(LinearRegression(), min_lr=1e-3, max_lr=1e3, num_training=100)
    assert 10 < len(lr_finder.results["loss"]) < 100


def test_exponential_mode_spaces_rates_evenly_in_log_scale_from_min_to_max():
    lr_finder = Tuner(_trainer()).lr_find(LinearRegression(), min_lr=1e-6, max_lr=1e-2, num_training=9,
                                          early_stop_threshold=None, update_attr=False)
    lrs = lr_finder.results["lr"]
    assert lrs[0] == pytest.approx(1e-6) and lrs[-1] == pytest.approx(1e-2)
    ratios = [b / a for a, b in itertools.pairwise(lrs)]
    assert ratios == pytest.approx([10 ** 0.5] * 8)


def test_linear_mode_spaces_rates_evenly_from_min_to_max():
    lr_finder = Tuner(_trainer()).lr_find(LinearRegression(), min_lr=0.01, max_lr=0.09, num_training=5,
                                          mode="linear", early_stop_threshold=None, update_attr=False)
    assert lr_finder.results["lr"] == pytest.approx([0.01, 0.03, 0.05, 0.07, 0.09])


def test_suggestion_is_the_steepest_descent_of_the_loss_curve():
    finder = _LRFinder("exponential", 1e-5, 1.0, 30)
    losses = [5.0] * 12 + [4.9, 4.5, 3.0, 2.9, 2.85] + [2.8] * 13
    finder.results = {"lr": [10 ** (-5 + i / 6) for i in range(30)], "loss": losses}
    # central differences: at index 13 the loss falls by (3.0 - 4.9) / 2, the most anywhere
    assert finder.suggestion() == finder.results["lr"][13]


def test_suggestion_ignores_non_finite_losses_without_shifting_the_index():
    finder = _LRFinder("exponential", 1e-5, 1.0, 30)
    losses = [5.0] * 10 + [math.nan, math.nan] + [4.9, 4.5, 3.0, 2.9] + [2.85] * 14
    finder.results = {"lr": list(range(30)), "loss": losses}
    assert finder.suggestion() == 13


def test_suggestion_is_none_with_too_few_points():
    finder = _LRFinder("linear", 0.1, 1.0, 5)
    finder.results = {"lr": [0.1, 0.2, 0.3], "loss": [1.0, 0.9, 0.8]}
    assert finder.suggestion() is None


def test_lr_find_without_a_learning_rate_attribute_raises():
    class NoLR(LinearRegression):
        def __init__(self):
            super().__init__()
            del self.hparams["lr"]

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    with pytest.raises(AttributeError, match="learning_rate"):
        Tuner(_trainer()).lr_find(NoLR(), num_training=5)


def test_lr_find_with_two_optimizers_raises():
    class TwoOptimizers(LinearRegression):
        def __init__(self):
            super().__init__()
            self.automatic_optimization = False

        def training_step(self, batch, batch_idx):
            return None

        def configure_optimizers(self):
            return [torch.optim.SGD(self.parameters(), lr=0.1), torch.optim.SGD(self.parameters(), lr=0.1)]

    with pytest.raises(MisconfigurationException, match="exactly one"):
        Tuner(_trainer()).lr_find(TwoOptimizers(), num_training=5)


def test_lr_find_is_skipped_under_fast_dev_run():
    trainer = pl.Trainer(fast_dev_run=True, max_epochs=1, enable_progress_bar=False, enable_model_summary=False)
    with pytest.warns(UserWarning, match="Skipping learning rate finder"):
        assert Tuner(trainer).lr_find(LinearRegression()) is None


def test_tuner_refuses_a_trainer_that_already_has_the_callback():
    trainer = _trainer(callbacks=[LearningRateFinder()])
    with pytest.raises(ValueError, match="already configured"):
        Tuner(trainer).lr_find(LinearRegression())


def test_trainer_tune_with_auto_lr_find_updates_hparams_lr_with_deprecation_warnings():
    with pytest.warns(TorchboltDeprecationWarning, match="auto_lr_find"):
        trainer = _trainer(auto_lr_find=True)
    model = LinearRegression(lr=1e-3)
    with pytest.warns(TorchboltDeprecationWarning, match="trainer.tune"):
        result = trainer.tune(model, lr_find_kwargs={"min_lr": 1e-4, "max_lr": 1.0, "num_training": 30})
    assert model.hparams.lr == result["lr_find"].suggestion() != 1e-3
    trainer.fit(model)
    assert trainer.optimizers[0].param_groups[0]["lr"] == model.hparams.lr


def test_lightning_1x_trainer_tuner_attribute_runs_the_lr_finder():
    model = LinearRegression(lr=1e-3)
    trainer = _trainer()
    with pytest.warns(TorchboltDeprecationWarning, match="trainer.tuner"):
        tuner = trainer.tuner
    lr_finder = tuner.lr_find(model, min_lr=1e-4, max_lr=1.0, num_training=30)
    assert model.hparams.lr == lr_finder.suggestion()


def test_trainer_tune_with_attribute_name_in_auto_lr_find():
    class CustomName(LinearRegression):
        def __init__(self):
            super().__init__()
            self.my_rate = 1e-3

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", TorchboltDeprecationWarning)
        trainer = _trainer(auto_lr_find="my_rate")
        model = CustomName()
        result = trainer.tune(model, lr_find_kwargs={"min_lr": 1e-4, "max_lr": 1.0, "num_training": 30})
    assert model.my_rate == result["lr_find"].suggestion()
    assert model.hparams.lr == 1e-3


def test_search_with_a_logger_gives_hooks_a_logger_that_records_nothing(tmp_path):
    from torchbolt.loggers import CSVLogger

    class UsesLogger(LinearRegression):
        def on_train_start(self):
            self.logger.log_hyperparams({"started": True})

    logger = CSVLogger(tmp_path)
    trainer = pl.Trainer(max_epochs=1, logger=logger, enable_progress_bar=False, enable_model_summary=False,
                         enable_checkpointing=False, log_every_n_steps=1)
    Tuner(trainer).lr_find(UsesLogger(), num_training=10, update_attr=False)
    assert trainer.logger is logger
    assert not (tmp_path / "lightning_logs").exists()
