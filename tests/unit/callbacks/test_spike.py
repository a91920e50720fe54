"""SpikeDetection: a loss spike stops training and records the batches to skip."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader

import torchbolt as pl
from torchbolt.callbacks import SpikeDetection, TrainingSpikeException


class ScriptedLoss(pl.LightningModule):
    """``training_step`` returns the scripted loss of each batch (plus a trainable term with zero gradient)."""

    def __init__(self, losses: list[float]) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(()))
        self.losses = losses

    def training_step(self, batch, batch_idx):
        return self.scale * 0.0 + self.losses[batch_idx]

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.0)

    def train_dataloader(self):
        return DataLoader(range(len(self.losses)), batch_size=1)


def _fit(losses: list[float], detector: SpikeDetection) -> pl.Trainer:
    trainer = pl.Trainer(max_epochs=1, logger=False, enable_progress_bar=False, enable_model_summary=False,
                         enable_checkpointing=False, callbacks=[detector])
    trainer.fit(ScriptedLoss(losses))
    return trainer


def test_spike_stops_training_and_writes_the_batches_to_skip(tmp_path):
    losses = [1.0, 0.9, 0.95, 0.85, 0.9, 0.8, 0.85, 5.0, 0.7]
    path = tmp_path / "skip.json"
    detector = SpikeDetection(window=4, rtol=2.0, exclude_batches_path=path)
    with pytest.raises(TrainingSpikeException, match="batch 7"):
        _fit(losses, detector)
    assert json.loads(path.read_text()) == [6, 7]


def test_losses_within_tolerance_are_not_spikes(tmp_path):
    losses = [1.0, 0.9, 1.5, 0.85, 1.6, 0.8, 1.4, 0.7]
    detector = SpikeDetection(window=4, rtol=2.0, exclude_batches_path=tmp_path)
    _fit(losses, detector)
    assert detector.bad_batches == []
    assert detector.running_mean == pytest.approx(sum(losses[-4:]) / 4)


def test_non_finite_loss_is_a_spike_with_finite_only(tmp_path):
    detector = SpikeDetection(exclude_batches_path=tmp_path)
    with pytest.raises(TrainingSpikeException, match="batch 3"):
        _fit([1.0, 0.9, 0.8, math.inf, 0.7], detector)
    assert json.loads((tmp_path / "skip_batches.json").read_text()) == [2, 3]


def test_non_finite_loss_is_left_out_of_the_mean_without_finite_only(tmp_path):
    detector = SpikeDetection(exclude_batches_path=tmp_path, finite_only=False)
    _fit([1.0, 0.9, math.nan, 0.8], detector)
    assert detector.running_mean == pytest.approx((1.0 + 0.9 + 0.8) / 3)


def test_warmup_batches_are_never_spikes(tmp_path):
    detector = SpikeDetection(warmup=3, exclude_batches_path=tmp_path)
    _fit([1.0, 100.0, 1000.0, 900.0], detector)
    assert detector.bad_batches == []
