"""How many sizes the batch-size finder tries, what it returns, and the search inside validate/test/predict.

The models run out of memory for real (a 1 PiB CPU allocation) when a batch is larger than a planted
threshold, in the step of the stage being searched only.
"""

from __future__ import annotations

import logging
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import torchbolt as pl
from torchbolt.callbacks import BatchSizeFinder
from torchbolt.tuner import Tuner
from torchbolt.utilities.exceptions import MisconfigurationException


def _data(n: int) -> TensorDataset:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 4, generator=g)
    return TensorDataset(x, x.sum(dim=1, keepdim=True))


def _fail_above(threshold: int | None, batch: torch.Tensor) -> None:
    if threshold is not None and batch.shape[0] > threshold:
        torch.empty(1 << 50, dtype=torch.uint8)  # the CPU allocator's real out-of-memory error


class SizedModel(pl.LightningModule):
    """Every loader reads ``hparams.batch_size``; ``<stage>_threshold`` plants an out-of-memory error in
    that stage's step. ``sizes[stage]`` records the batch size of every batch each stage ran."""

    def __init__(self, batch_size: int = 2, n: int = 64, train_threshold: int | None = None,
                 eval_threshold: int | None = None) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.net = nn.Linear(4, 1)
        self.sizes: dict[str, list[int]] = {"train": [], "val": [], "test": [], "predict": []}

    def _loss(self, batch, stage: str, threshold: int | None) -> torch.Tensor:
        x, y = batch
        _fail_above(threshold, x)
        self.sizes[stage].append(x.shape[0])
        return F.mse_loss(self.net(x), y)

    def training_step(self, batch, batch_idx):
        return self._loss(batch, "train", self.hparams.train_threshold)

    def validation_step(self, batch, batch_idx):
        self.log("val_loss", self._loss(batch, "val", self.hparams.eval_threshold))

    def test_step(self, batch, batch_idx):
        self.log("test_loss", self._loss(batch, "test", self.hparams.eval_threshold))

    def predict_step(self, batch, batch_idx):
        x, _ = batch
        _fail_above(self.hparams.eval_threshold, x)
        self.sizes["predict"].append(x.shape[0])
        return self.net(x)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)

    def _loader(self) -> DataLoader:
        return DataLoader(_data(self.hparams.n), batch_size=self.hparams.batch_size)

    train_dataloader = val_dataloader = test_dataloader = predict_dataloader = _loader


def _trainer(**kwargs) -> pl.Trainer:
    kwargs.setdefault("max_epochs", 1)
    return pl.Trainer(logger=False, enable_progress_bar=False, enable_model_summary=False,
                      enable_checkpointing=False, **kwargs)


# ---------------------------------------------------------------- how many trials, and the size returned
@pytest.mark.parametrize(("mode", "max_trials", "init_val", "expected", "tried"), [
    ("power", 3, 2, 8, [2, 4, 8]),          # no doubling after the last trial
    ("power", 1, 4, 4, [4]),
    ("binsearch", 3, 2, 8, [2, 4, 8]),
    ("power", 0, 2, 2, []),                 # no trial: init_val is kept
    ("binsearch", 0, 5, 5, []),
])
def test_max_trials_bounds_the_trials_and_the_result_is_a_size_that_was_tried(mode, max_trials, init_val, expected,
                                                                               tried):
    model = SizedModel(n=256)
    size = Tuner(_trainer()).scale_batch_size(model, mode=mode, max_trials=max_trials, init_val=init_val,
                                              steps_per_trial=1, margin=0.0)
    assert size == expected == model.hparams.batch_size
    assert model.sizes["train"] == tried


def test_binsearch_counts_only_successful_trials():
    # 32 ok, 64/48 fail, 40 ok, 44/42/41 fail: the interval closes at 40 after 2 of the 3 allowed successes
    model = SizedModel(n=256, train_threshold=40)
    size = Tuner(_trainer()).scale_batch_size(model, mode="binsearch", max_trials=3, init_val=32, steps_per_trial=1,
                                              margin=0.0)
    assert size == 40
    assert model.sizes["train"] == [32, 40]  # the failed trials never reached the end of a step


def test_one_trying_message_per_size_tried_after_the_first(caplog):
    model = SizedModel(n=256)
    with caplog.at_level(logging.INFO, logger="torchbolt"):
        Tuner(_trainer()).scale_batch_size(model, mode="power", max_trials=2, init_val=8, steps_per_trial=1)
    assert caplog.text.count("trying batch size") == 1
    assert "Batch size 8 succeeded, trying batch size 16" in caplog.text


def test_init_val_at_or_above_the_dataset_size_is_tried_once(caplog):
    model = SizedModel(batch_size=16, n=64)
    trainer = _trainer()
    with caplog.at_level(logging.INFO, logger="torchbolt"):
        size = Tuner(trainer).scale_batch_size(model, mode="power", max_trials=2, init_val=64, steps_per_trial=1)
    assert size == 64 and model.sizes["train"] == [64]
    assert caplog.text.count("trying batch size") == 0
    assert "greater or equal than the length of your dataset" in caplog.text


def test_negative_max_trials_is_refused():
    with pytest.raises(MisconfigurationException, match=r"max_trials=-1.*int >= 0"):
        Tuner(_trainer()).scale_batch_size(SizedModel(), max_trials=-1)


def test_after_a_fit_search_train_and_val_loaders_have_the_size_found():
    model = SizedModel(n=256, train_threshold=40)
    trainer = _trainer()
    size = Tuner(trainer).scale_batch_size(model, mode="power")
    assert size == 32
    assert trainer.train_dataloader.batch_size == 32
    assert trainer.val_dataloaders.batch_size == 32


# ---------------------------------------------------------------- validate / test / predict
@pytest.mark.parametrize("method", ["validate", "test", "predict"])
def test_tuner_searches_the_evaluation_batch_size_without_training(method):
    model = SizedModel(eval_threshold=24)
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    trainer = _trainer()
    size = Tuner(trainer).scale_batch_size(model, method=method)
    assert size == 16 == model.hparams.batch_size  # 32 ran out of memory
    assert model.sizes["train"] == []
    assert trainer.global_step == 0 and trainer.current_epoch == 0
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in weights.items())


@pytest.mark.parametrize("method", ["validate", "test"])
def test_callback_searches_then_the_evaluation_runs_with_the_size_found(method):
    model = SizedModel(eval_threshold=24)
    trainer = _trainer(callbacks=[BatchSizeFinder(mode="binsearch", margin=0.0)])
    results = getattr(trainer, method)(model)
    stage = "val" if method == "validate" else "test"
    assert model.hparams.batch_size == 24
    assert results and f"{stage}_loss" in results[0]
    loaders = trainer.val_dataloaders if method == "validate" else trainer.test_dataloaders
    assert loaders.batch_size == 24
    counts = trainer.num_val_batches if method == "validate" else trainer.num_test_batches
    assert counts == [math.ceil(64 / 24)]
    # the run itself: 64 samples in batches of 24 (the search's trials ran before, 3 batches each)
    assert model.sizes[stage][-3:] == [24, 24, 16]


def test_callback_in_predict_returns_predictions_of_the_whole_dataset_at_the_size_found():
    model = SizedModel(eval_threshold=24)
    trainer = _trainer(callbacks=[BatchSizeFinder()])
    predictions = trainer.predict(model)
    assert model.hparams.batch_size == 16
    assert [p.shape[0] for p in predictions] == [16, 16, 16, 16]
    assert trainer.predict_dataloaders.batch_size == 16


def test_validation_inside_fit_does_not_start_another_search():
    model = SizedModel(n=64)
    finder = BatchSizeFinder(max_trials=2, steps_per_trial=1)
    trainer = _trainer(callbacks=[finder], limit_train_batches=2, num_sanity_val_steps=1)
    trainer.fit(model)
    assert finder.optimal_batch_size == 4  # the fit's search (2 trials), not one at validation start
    assert trainer.val_dataloaders.batch_size == 4


def test_loaders_passed_to_an_evaluation_are_refused():
    model = SizedModel()
    with pytest.raises(MisconfigurationException, match=r"passed directly to `\.validate\(\)`"):
        _trainer(callbacks=[BatchSizeFinder()]).validate(model, dataloaders=model.val_dataloader())


def test_several_evaluation_loaders_are_refused_before_the_loop_starts():
    class TwoLoaders(SizedModel):
        def test_dataloader(self):
            return [self._loader(), self._loader()]

    model = TwoLoaders()
    with pytest.raises(MisconfigurationException, match="cannot be used with multiple test dataloaders"):
        Tuner(_trainer()).scale_batch_size(model, method="test")
    assert model.sizes["test"] == []


def test_setup_refuses_a_distributed_strategy_before_the_run():
    trainer = pl.Trainer(accelerator="cpu", devices=2, strategy="ddp", logger=False, max_epochs=1)
    with pytest.raises(MisconfigurationException, match="not supported with distributed strategies"):
        BatchSizeFinder().setup(trainer, SizedModel())
