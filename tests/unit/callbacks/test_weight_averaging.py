"""WeightAveraging / EMAWeightAveraging: the EMA formula, validation on averaged weights, checkpoint layout."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import torchbolt as pl
from torchbolt.callbacks import Callback, EMAWeightAveraging, WeightAveraging


def _data() -> TensorDataset:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(48, 4, generator=g)
    return TensorDataset(x, x.sum(dim=1, keepdim=True))


class Model(pl.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Linear(4, 1)
        self.val_weights: list[torch.Tensor] = []

    def training_step(self, batch, batch_idx):
        x, y = batch
        return F.mse_loss(self.net(x), y)

    def validation_step(self, batch, batch_idx):
        if batch_idx == 0:
            self.val_weights.append(self.net.weight.detach().clone())

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)

    def train_dataloader(self):
        return DataLoader(_data(), batch_size=8)


class StepWeights(Callback):
    """The weights after every optimizer step (the callback runs before the averaging one)."""

    def __init__(self) -> None:
        self.after_step: list[list[torch.Tensor]] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.after_step.append([p.detach().clone() for p in pl_module.parameters()])


def _fit(model: Model, *callbacks: Callback, max_epochs: int = 2, val: bool = False) -> pl.Trainer:
    trainer = pl.Trainer(max_epochs=max_epochs, logger=False, enable_progress_bar=False, enable_model_summary=False,
                         enable_checkpointing=False, callbacks=list(callbacks), num_sanity_val_steps=0,
                         limit_val_batches=1 if val else 0)
    trainer.fit(model, val_dataloaders=DataLoader(_data(), batch_size=8) if val else None)
    return trainer


def _ema(snapshots: list[list[torch.Tensor]], decay: float) -> list[torch.Tensor]:
    ema = [t.clone() for t in snapshots[0]]  # the first update copies the weights
    for weights in snapshots[1:]:
        ema = [decay * e + (1 - decay) * w for e, w in zip(ema, weights)]
    return ema


def test_ema_weights_follow_the_ema_formula():
    recorder = StepWeights()
    model = Model()
    _fit(model, recorder, EMAWeightAveraging(decay=0.9))
    assert len(recorder.after_step) == 12
    for param, expected in zip(model.parameters(), _ema(recorder.after_step, 0.9)):
        torch.testing.assert_close(param.detach(), expected)


def test_ema_updates_every_n_steps_from_the_start_step():
    recorder = StepWeights()
    model = Model()
    _fit(model, recorder, EMAWeightAveraging(decay=0.5, update_every_n_steps=2, update_starting_at_step=3))
    # zero-based step indices 4, 6, 8, 10 update the average
    used = [recorder.after_step[i] for i in (4, 6, 8, 10)]
    for param, expected in zip(model.parameters(), _ema(used, 0.5)):
        torch.testing.assert_close(param.detach(), expected)


def test_default_weight_averaging_is_the_mean_of_all_steps():
    recorder = StepWeights()
    model = Model()
    _fit(model, recorder, WeightAveraging())
    for i, param in enumerate(model.parameters()):
        torch.testing.assert_close(param.detach(), torch.stack([s[i] for s in recorder.after_step]).mean(0))


def test_validation_runs_on_the_averaged_weights_and_training_continues_on_its_own():
    recorder = StepWeights()
    model = Model()
    ema = EMAWeightAveraging(decay=0.9)
    _fit(model, recorder, ema, max_epochs=2, val=True)
    first_epoch_average = _ema(recorder.after_step[:6], 0.9)
    torch.testing.assert_close(model.val_weights[0], first_epoch_average[0])
    # after validation the training weights were put back: the second epoch continued from them
    assert not torch.equal(recorder.after_step[5][0], first_epoch_average[0])


def test_checkpoint_holds_averaged_weights_in_state_dict_and_current_ones_aside(tmp_path):
    class SaveAtEnd(Callback):
        def on_train_epoch_end(self, trainer, pl_module):
            trainer.save_checkpoint(tmp_path / "mid.ckpt")

    recorder = StepWeights()
    model = Model()
    _fit(model, recorder, EMAWeightAveraging(decay=0.9), SaveAtEnd(), max_epochs=1)
    checkpoint = torch.load(tmp_path / "mid.ckpt", weights_only=True)
    expected = _ema(recorder.after_step, 0.9)
    torch.testing.assert_close(checkpoint["state_dict"]["net.weight"], expected[0])
    torch.testing.assert_close(checkpoint["current_model_state"]["net.weight"], recorder.after_step[-1][0])
    assert int(checkpoint["averaging_state"]["n_averaged"]) == 6
