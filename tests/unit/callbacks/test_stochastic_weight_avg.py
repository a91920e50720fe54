"""StochasticWeightAveraging: the final weights are the average of the epoch-start snapshots; BN is recomputed."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import torchbolt as pl
from torchbolt.callbacks import Callback, StochasticWeightAveraging
from torchbolt.utilities.exceptions import MisconfigurationException


def _data() -> TensorDataset:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 4, generator=g) * 3 + 1
    return TensorDataset(x, x.sum(dim=1, keepdim=True))


class Model(pl.LightningModule):
    def __init__(self, batch_norm: bool = False, lr: float = 0.05) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Linear(4, 8)]
        if batch_norm:
            layers.append(nn.BatchNorm1d(8))
        layers += [nn.ReLU(), nn.Linear(8, 1)]
        self.net = nn.Sequential(*layers)
        self.lr = lr

    def training_step(self, batch, batch_idx):
        x, y = batch
        return F.mse_loss(self.net(x), y)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.lr)

    def train_dataloader(self):
        return DataLoader(_data(), batch_size=16)


class EpochStartWeights(Callback):
    def __init__(self) -> None:
        self.snapshots: dict[int, list[torch.Tensor]] = {}
        self.lrs: dict[int, float] = {}

    def on_train_epoch_start(self, trainer, pl_module):
        self.snapshots[trainer.current_epoch] = [p.detach().clone() for p in pl_module.parameters()]

    def on_train_epoch_end(self, trainer, pl_module):
        self.lrs[trainer.current_epoch] = trainer.optimizers[0].param_groups[0]["lr"]


def _fit(model: Model, *callbacks: Callback, max_epochs: int = 6) -> pl.Trainer:
    trainer = pl.Trainer(max_epochs=max_epochs, logger=False, enable_progress_bar=False, enable_model_summary=False,
                         enable_checkpointing=False, callbacks=list(callbacks))
    trainer.fit(model)
    return trainer


def test_final_weights_are_the_average_of_the_epoch_start_snapshots():
    recorder = EpochStartWeights()
    model = Model()
    _fit(model, recorder, StochasticWeightAveraging(swa_lrs=0.01, swa_epoch_start=3), max_epochs=6)
    # swa_epoch_start=3 (1-based) -> the starts of epochs 2..5 (0-based) are averaged
    for i, param in enumerate(model.parameters()):
        expected = torch.stack([recorder.snapshots[e][i] for e in range(2, 6)]).mean(dim=0)
        torch.testing.assert_close(param.detach(), expected)


def test_fractional_start_counts_from_max_epochs():
    recorder = EpochStartWeights()
    model = Model()
    swa = StochasticWeightAveraging(swa_lrs=0.01, swa_epoch_start=0.5)
    _fit(model, recorder, swa, max_epochs=6)
    assert swa.swa_start == 2 and int(swa.n_averaged) == 4


def test_learning_rate_anneals_to_the_swa_rate():
    recorder = EpochStartWeights()
    _fit(Model(lr=0.05), recorder, StochasticWeightAveraging(swa_lrs=0.01, swa_epoch_start=2, annealing_epochs=2,
                                                             annealing_strategy="linear"), max_epochs=6)
    assert recorder.lrs[0] == 0.05
    assert recorder.lrs[4] == pytest.approx(0.01) and recorder.lrs[5] == pytest.approx(0.01)


def test_batch_norm_statistics_are_recomputed_for_the_averaged_weights():
    recorder = EpochStartWeights()
    model = Model(batch_norm=True)
    trainer = _fit(model, recorder, StochasticWeightAveraging(swa_lrs=0.01, swa_epoch_start=2), max_epochs=4)
    # an extra epoch ran (forward only: no optimizer update), then max_epochs went back
    assert trainer.current_epoch == 5 and trainer.max_epochs == 4
    params = list(model.parameters())
    for i, param in enumerate(params):
        expected = torch.stack([recorder.snapshots[e][i] for e in range(1, 4)]).mean(dim=0)
        torch.testing.assert_close(param.detach(), expected)
    # momentum=None during the extra epoch: the statistics are the plain average over its batches
    linear, bn = model.net[0], model.net[1]
    with torch.no_grad():
        batch_stats = [(h.mean(0), h.var(0)) for h in (linear(x) for x, _ in DataLoader(_data(), batch_size=16))]
    torch.testing.assert_close(bn.running_mean, torch.stack([m for m, _ in batch_stats]).mean(0))
    torch.testing.assert_close(bn.running_var, torch.stack([v for _, v in batch_stats]).mean(0))
    assert bn.momentum == 0.1


@pytest.mark.parametrize("kwargs", [
    {"swa_lrs": -1.0}, {"swa_lrs": [0.1, -0.1]}, {"swa_lrs": 1}, {"swa_lrs": 0.1, "swa_epoch_start": 0},
    {"swa_lrs": 0.1, "swa_epoch_start": 1.5}, {"swa_lrs": 0.1, "avg_fn": 3}, {"swa_lrs": 0.1, "annealing_strategy": "x"},
])
def test_invalid_arguments_are_rejected(kwargs):
    with pytest.raises(MisconfigurationException):
        StochasticWeightAveraging(**kwargs)


def test_two_schedulers_are_rejected():
    class TwoSchedulers(Model):
        def configure_optimizers(self):
            opt = torch.optim.SGD(self.parameters(), lr=0.1)
            return [opt], [torch.optim.lr_scheduler.StepLR(opt, 1), torch.optim.lr_scheduler.StepLR(opt, 2)]

    with pytest.raises(MisconfigurationException, match="more than 1 `lr_scheduler`"):
        _fit(TwoSchedulers(), StochasticWeightAveraging(swa_lrs=0.1))
