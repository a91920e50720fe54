"""Every training-technique callback's state survives ``save_checkpoint`` + ``fit(ckpt_path=...)``.

Each test trains once without interruption while saving a checkpoint at the start of an epoch, then
trains a fresh model and fresh callbacks from that checkpoint, and compares the outcomes.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import torchbolt as pl
from torchbolt.callbacks import (
    BackboneFinetuning,
    BatchSizeFinder,
    Callback,
    EMAWeightAveraging,
    GradientAccumulationScheduler,
    LearningRateFinder,
    ModelPruning,
    NonFiniteGuard,
    SpikeDetection,
    StochasticWeightAveraging,
)


def _data() -> TensorDataset:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(48, 4, generator=g)
    return TensorDataset(x, x.sum(dim=1, keepdim=True))


class Model(pl.LightningModule):
    def __init__(self, batch_norm: bool = False, lr: float = 0.05, batch_size: int = 8,
                 nan_at: tuple[int, int] | None = None) -> None:
        super().__init__()
        self.save_hyperparameters()
        torch.manual_seed(0)
        norm: nn.Module = nn.BatchNorm1d(8) if batch_norm else nn.Identity()
        self.backbone = nn.Sequential(nn.Linear(4, 8), norm, nn.Tanh())
        self.head = nn.Linear(8, 1)
        self.steps = 0

    def training_step(self, batch, batch_idx):
        self.steps += 1
        x, y = batch
        loss = F.mse_loss(self.head(self.backbone(x)), y)
        if (self.current_epoch, batch_idx) == self.hparams.nan_at:
            loss = loss * float("nan")
        return loss

    def configure_optimizers(self):
        params = [p for p in self.parameters() if p.requires_grad]
        return torch.optim.SGD(params, lr=self.hparams.lr, momentum=0.9)

    def train_dataloader(self):
        return DataLoader(_data(), batch_size=self.hparams.batch_size)


class SaveAtEpochStart(Callback):
    def __init__(self, epoch: int, path: Path) -> None:
        self.epoch = epoch
        self.path = path

    def on_train_epoch_start(self, trainer, pl_module):
        if trainer.current_epoch == self.epoch:
            trainer.save_checkpoint(self.path)


def _trainer(callbacks: list[Callback], max_epochs: int) -> pl.Trainer:
    return pl.Trainer(max_epochs=max_epochs, logger=False, enable_progress_bar=False, enable_model_summary=False,
                      enable_checkpointing=False, callbacks=callbacks)


def _resume_matches(tmp_path: Path, make_callback: Callable[[], Callback], max_epochs: int, save_epoch: int,
                    **model_kwargs) -> tuple[Model, Callback, Model, Callback]:
    """Train without interruption and from the checkpoint; assert the final weights are identical."""
    path = tmp_path / "resume.ckpt"
    full_model, full_callback = Model(**model_kwargs), make_callback()
    full = _trainer([SaveAtEpochStart(save_epoch, path), full_callback], max_epochs)
    full.fit(full_model)
    resumed_model, resumed_callback = Model(**model_kwargs), make_callback()
    resumed = _trainer([resumed_callback], max_epochs)
    resumed.fit(resumed_model, ckpt_path=path)
    assert resumed.global_step == full.global_step
    for expected, actual in zip(full_model.state_dict().values(), resumed_model.state_dict().values()):
        torch.testing.assert_close(actual, expected, rtol=0, atol=0)
    return full_model, full_callback, resumed_model, resumed_callback


def test_stochastic_weight_averaging_resumes(tmp_path):
    _, full, _, resumed = _resume_matches(
        tmp_path, lambda: StochasticWeightAveraging(swa_lrs=0.01, swa_epoch_start=2), max_epochs=5, save_epoch=3)
    assert int(resumed.n_averaged) == int(full.n_averaged) == 4


def test_stochastic_weight_averaging_with_batch_norm_resumes(tmp_path):
    _resume_matches(tmp_path, lambda: StochasticWeightAveraging(swa_lrs=0.01, swa_epoch_start=2), max_epochs=4,
                    save_epoch=3, batch_norm=True)


def test_ema_weight_averaging_resumes(tmp_path):
    _, full, _, resumed = _resume_matches(tmp_path, lambda: EMAWeightAveraging(decay=0.8), max_epochs=3, save_epoch=1)
    assert resumed.state_dict() == full.state_dict()


def test_model_pruning_resumes_with_its_masks_and_initial_weights(tmp_path):
    def pruning() -> ModelPruning:
        return ModelPruning("l1_unstructured", parameter_names=["weight"], amount=lambda e: [0.3, 0.3, 0.3, 0][e])

    full_model, _, resumed_model, _ = _resume_matches(tmp_path, pruning, max_epochs=4, save_epoch=2)
    assert int((resumed_model.head.weight == 0).sum()) == int((full_model.head.weight == 0).sum()) > 0


def test_gradient_accumulation_schedule_resumes(tmp_path):
    _resume_matches(tmp_path, lambda: GradientAccumulationScheduler({1: 2, 2: 3}), max_epochs=3, save_epoch=2)


def test_backbone_finetuning_resumes_with_its_param_groups(tmp_path):
    _, full, resumed_model, resumed = _resume_matches(
        tmp_path, lambda: BackboneFinetuning(unfreeze_backbone_at_epoch=1, lambda_func=lambda e: 1.5), max_epochs=4,
        save_epoch=3)
    assert resumed.previous_backbone_lr == full.previous_backbone_lr
    assert len(resumed_model.trainer.optimizers[0].param_groups) == 2


def test_spike_detection_resumes_with_its_running_mean(tmp_path):
    _, full, _, resumed = _resume_matches(
        tmp_path, lambda: SpikeDetection(window=20, exclude_batches_path=tmp_path, rtol=50.0), max_epochs=3,
        save_epoch=1)
    assert resumed.state_dict() == full.state_dict()
    assert len(full.state_dict()["recent"]) == 18  # the losses before the checkpoint are part of the window


def test_nonfinite_guard_resumes_with_its_counts(tmp_path):
    _, full, _, resumed = _resume_matches(tmp_path, NonFiniteGuard, max_epochs=3, save_epoch=1, nan_at=(0, 2))
    assert resumed.skipped_steps == full.skipped_steps == 1


def test_learning_rate_finder_does_not_search_again_after_resume(tmp_path):
    full_model, full, resumed_model, _ = _resume_matches(
        tmp_path, lambda: LearningRateFinder(min_lr=1e-4, max_lr=1.0, num_training_steps=20), max_epochs=3,
        save_epoch=1)
    assert resumed_model.hparams.lr == full_model.hparams.lr == full.optimal_lr.suggestion()
    assert resumed_model.steps == 2 * 6  # two epochs of training, no search steps


def test_batch_size_finder_does_not_search_again_after_resume(tmp_path):
    full_model, _, resumed_model, _ = _resume_matches(
        tmp_path, lambda: BatchSizeFinder(init_val=4, max_trials=3), max_epochs=3, save_epoch=1, batch_size=4)
    assert resumed_model.hparams.batch_size == full_model.hparams.batch_size == 16
    assert resumed_model.steps == 2 * 3
