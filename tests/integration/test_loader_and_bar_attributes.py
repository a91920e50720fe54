"""Attributes Lightning code reads: the loaders of each stage, the last-batch flag, the bar's totals."""

from __future__ import annotations

import torch
from torch.utils.data import DataLoader, TensorDataset

import torchbolt as pl


def _loader(n: int = 8) -> DataLoader:
    return DataLoader(TensorDataset(torch.randn(n, 3)), batch_size=2)


class _Model(pl.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(3, 1)
        self.last_flags: list[bool] = []
        self.val_totals: list[int | float] = []

    def training_step(self, batch, batch_idx):
        return self.layer(batch[0]).pow(2).mean()

    def on_train_batch_end(self, outputs, batch, batch_idx):
        self.last_flags.append(self.trainer.is_last_batch)

    def on_validation_start(self):
        if not self.trainer.sanity_checking:
            self.val_totals.append(self.trainer.progress_bar_callback.total_val_batches)

    def validation_step(self, batch, batch_idx, dataloader_idx=0):
        pass

    def test_step(self, batch, batch_idx, dataloader_idx=0):
        pass

    def predict_step(self, batch, batch_idx, dataloader_idx=0):
        return batch[0]

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def _trainer(**kwargs) -> pl.Trainer:
    return pl.Trainer(logger=False, enable_checkpointing=False, enable_model_summary=False, **kwargs)


def test_is_last_batch_marks_the_epochs_last_training_batch() -> None:
    model = _Model()
    _trainer(max_epochs=1).fit(model, _loader(8))
    assert model.last_flags == [False, False, False, True]


def test_the_bar_counts_the_validation_batches_of_epochs_that_validate() -> None:
    model = _Model()
    trainer = _trainer(max_epochs=4, check_val_every_n_epoch=2, num_sanity_val_steps=0)
    trainer.fit(model, _loader(8), [_loader(6), _loader(4)])
    assert model.val_totals == [5, 5]  # epochs 2 and 4 validate: 3 + 2 batches each
    assert trainer.progress_bar_callback.total_train_batches == 4


def test_each_stage_exposes_its_loaders() -> None:
    model = _Model()
    trainer = _trainer(max_epochs=1)
    assert trainer.test_dataloaders is None and trainer.predict_dataloaders is None
    one, two = _loader(4), _loader(6)
    trainer.test(model, one, verbose=False)
    assert trainer.test_dataloaders is one
    trainer.predict(model, [one, two])
    assert trainer.predict_dataloaders == [one, two]
    assert trainer.progress_bar_callback.total_predict_batches == 5
    trainer.validate(model, two, verbose=False)
    assert trainer.val_dataloaders is two


def test_the_strategy_creates_tensors_in_the_precisions_dtype() -> None:
    trainer = _trainer(precision="bf16-true")
    with trainer.strategy.tensor_init_context():
        layer = torch.nn.Linear(2, 2)
    assert layer.weight.dtype == torch.bfloat16 and layer.weight.device == trainer.strategy.root_device
    with trainer.init_module():
        assert torch.nn.Linear(2, 2).weight.dtype == torch.bfloat16
