"""``trainer.validate``/``test`` return, per dataloader, what was logged while that dataloader ran."""

from __future__ import annotations

import torch
from torch.utils.data import DataLoader, TensorDataset

import torchbolt as pl


class _TwoLoaders(pl.LightningModule):
    """Logs one metric per loader under its own name, without the dataloader suffix."""

    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(2, 1)

    def validation_step(self, batch, batch_idx, dataloader_idx=0):
        value = self.layer(batch[0]).mean()
        name = "clean_loss" if dataloader_idx == 0 else "noisy_loss"
        self.log(name, value, add_dataloader_idx=False)
        self.log("shared", value)  # suffixed: shared/dataloader_idx_N

    def on_validation_epoch_end(self):
        self.log("epoch_level", 1.0)  # outside any dataloader: reported for each

    def test_step(self, batch, batch_idx, dataloader_idx=0):
        return self.validation_step(batch, batch_idx, dataloader_idx)

    def on_test_epoch_end(self):
        self.on_validation_epoch_end()


def _loaders() -> list[DataLoader]:
    return [DataLoader(TensorDataset(torch.randn(8, 2)), batch_size=4),
            DataLoader(TensorDataset(torch.randn(8, 2) * 3), batch_size=4)]


def _trainer() -> pl.Trainer:
    return pl.Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False,
                      enable_model_summary=False)


def test_validate_reports_each_metric_only_for_its_dataloader() -> None:
    results = _trainer().validate(_TwoLoaders(), _loaders(), verbose=False)
    assert set(results[0]) == {"clean_loss", "shared/dataloader_idx_0", "epoch_level"}
    assert set(results[1]) == {"noisy_loss", "shared/dataloader_idx_1", "epoch_level"}


def test_test_reports_each_metric_only_for_its_dataloader() -> None:
    results = _trainer().test(_TwoLoaders(), _loaders(), verbose=False)
    assert "noisy_loss" not in results[0] and "clean_loss" not in results[1]


def test_a_single_loader_gets_every_metric() -> None:
    results = _trainer().validate(_TwoLoaders(), _loaders()[0], verbose=False)
    assert set(results[0]) == {"clean_loss", "shared", "epoch_level"}
