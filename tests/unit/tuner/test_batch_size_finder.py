"""The batch-size finder against a model that really runs out of memory above a planted batch size."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import torchbolt as pl
from torchbolt.callbacks import BatchSizeFinder
from torchbolt.tuner import Tuner
from torchbolt.utilities.exceptions import MisconfigurationException


def _data(n: int = 512) -> TensorDataset:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 4, generator=g)
    return TensorDataset(x, x.sum(dim=1, keepdim=True))


def _oom_above(threshold: int, batch: torch.Tensor, kind: str) -> None:
    if batch.shape[0] <= threshold:
        return
    if kind == "cpu":
        # a real allocation failure of the CPU allocator (1 PiB), not a simulated one
        torch.empty(1 << 50, dtype=torch.uint8)
    raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")


class OOMModel(pl.LightningModule):
    """Runs out of memory in ``training_step`` when a batch holds more than ``threshold`` samples."""

    def __init__(self, batch_size: int = 2, threshold: int = 40, oom: str = "cpu", data_size: int = 512) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.net = nn.Linear(4, 1)
        self.tried: list[int] = []

    def on_train_start(self):
        self.tried.append(self.trainer.train_dataloader.batch_size)

    def training_step(self, batch, batch_idx):
        x, y = batch
        _oom_above(self.hparams.threshold, x, self.hparams.oom)
        return F.mse_loss(self.net(x), y)

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=0.01)

    def train_dataloader(self):
        return DataLoader(_data(self.hparams.data_size), batch_size=self.hparams.batch_size)


def _trainer(**kwargs) -> pl.Trainer:
    return pl.Trainer(max_epochs=1, logger=False, enable_progress_bar=False, enable_model_summary=False,
                      enable_checkpointing=False, **kwargs)


def test_power_mode_returns_the_largest_power_of_two_below_the_oom_threshold():
    model = OOMModel(threshold=40)
    size = Tuner(_trainer()).scale_batch_size(model, mode="power")
    assert size == 32 == model.hparams.batch_size
    assert model.tried == [2, 4, 8, 16, 32, 64]


def test_binsearch_returns_the_largest_size_below_the_oom_threshold():
    model = OOMModel(threshold=40)
    size = Tuner(_trainer()).scale_batch_size(model, mode="binsearch", margin=0.0)
    assert size == 40 == model.hparams.batch_size
    assert model.tried == [2, 4, 8, 16, 32, 64, 48, 40, 44, 42, 41]


def test_search_leaves_weights_and_optimizer_untouched():
    model = OOMModel(threshold=40)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    trainer = _trainer()
    Tuner(trainer).scale_batch_size(model, mode="binsearch")
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert trainer.global_step == 0
    assert all(not state for opt in trainer.optimizers for state in opt.state.values())


def test_torch_out_of_memory_error_ends_a_trial():
    model = OOMModel(threshold=10, oom="cuda")
    assert Tuner(_trainer()).scale_batch_size(model, mode="power") == 8


def test_other_errors_propagate_and_state_is_restored():
    class Broken(OOMModel):
        def training_step(self, batch, batch_idx):
            if batch[0].shape[0] > 4:
                raise RuntimeError("a bug in the model")
            return super().training_step(batch, batch_idx)

    model = Broken()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    trainer = _trainer()
    with pytest.raises(RuntimeError, match="a bug in the model"):
        Tuner(trainer).scale_batch_size(model)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert not any(isinstance(cb, BatchSizeFinder) for cb in trainer.callbacks)


def test_growth_stops_once_a_batch_holds_the_whole_dataset():
    model = OOMModel(threshold=10_000, data_size=50)
    assert Tuner(_trainer()).scale_batch_size(model) == 64
    assert model.tried == [2, 4, 8, 16, 32, 64]


def test_batch_size_on_the_datamodule_is_set():
    class DataModule(pl.LightningDataModule):
        def __init__(self, batch_size: int = 2):
            super().__init__()
            self.batch_size = batch_size

        def train_dataloader(self):
            return DataLoader(_data(), batch_size=self.batch_size)

    class Model(OOMModel):
        def __init__(self):
            super().__init__()
            del self.hparams["batch_size"]

        def train_dataloader(self):
            raise AssertionError("the datamodule's loader is used")

    datamodule = DataModule()
    size = Tuner(_trainer()).scale_batch_size(Model(), datamodule=datamodule)
    assert size == 32 == datamodule.batch_size


def test_callback_trains_with_the_size_found():
    model = OOMModel(threshold=40)
    trainer = _trainer(callbacks=[BatchSizeFinder(mode="binsearch", margin=0.0)])
    trainer.fit(model)
    assert trainer.train_dataloader.batch_size == 40
    assert trainer.global_step == -(-512 // 40)


def test_dataloaders_passed_to_fit_are_rejected():
    model = OOMModel()
    with pytest.raises(MisconfigurationException, match="passed directly"):
        Tuner(_trainer()).scale_batch_size(model, train_dataloaders=DataLoader(_data(), batch_size=2))


def test_missing_batch_size_attribute_is_rejected():
    model = OOMModel()
    with pytest.raises(MisconfigurationException, match="Field batch_sz not found"):
        Tuner(_trainer()).scale_batch_size(model, batch_arg_name="batch_sz")


def test_unknown_mode_is_rejected():
    with pytest.raises(ValueError, match="mode"):
        BatchSizeFinder(mode="triple")


def test_trainer_tune_with_auto_scale_batch_size_mode():
    with pytest.warns(DeprecationWarning):
        trainer = _trainer(auto_scale_batch_size="binsearch")
    model = OOMModel(threshold=40)
    with pytest.warns(DeprecationWarning, match="trainer.tune"):
        result = trainer.tune(model)
    assert result == {"scale_batch_size": 40}


def test_binsearch_lowers_the_size_found_by_the_margin_lightnings_default_five_percent():
    model = OOMModel(threshold=40)
    assert Tuner(_trainer()).scale_batch_size(model, mode="binsearch") == 38 == model.hparams.batch_size
    model = OOMModel(threshold=40)
    assert Tuner(_trainer()).scale_batch_size(model, mode="binsearch", margin=0.2) == 32


@pytest.mark.parametrize("mode", ["power", "binsearch"])
def test_max_val_caps_every_size_tried(mode: str):
    model = OOMModel(threshold=40)
    size = Tuner(_trainer()).scale_batch_size(model, mode=mode, max_val=12, margin=0.0)
    assert size == 12 and max(model.tried) == 12


@pytest.mark.parametrize(("kwargs", "match"), [({"margin": 1.0}, "margin"), ({"margin": -0.1}, "margin"),
                                               ({"max_val": 0}, "max_val")])
def test_bad_margin_or_max_val_is_refused(kwargs, match):
    with pytest.raises(MisconfigurationException, match=match):
        Tuner(_trainer()).scale_batch_size(OOMModel(), **kwargs)


def test_after_the_search_the_train_dataloader_has_the_size_found():
    model = OOMModel(threshold=40)
    trainer = _trainer()
    size = Tuner(trainer).scale_batch_size(model, mode="power")
    assert trainer.train_dataloader is not None and trainer.train_dataloader.batch_size == size == 32
