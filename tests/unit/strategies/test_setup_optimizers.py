"""``Strategy.setup_optimizers(trainer)``: Lightning's public way to (re)create a fit's optimizers."""

from __future__ import annotations

from pathlib import Path

import torch

import torchbolt as pl
from torchbolt.demos.boring_classes import BoringModel
from torchbolt.trainer.states import TrainerFn


def test_setup_optimizers_builds_the_modules_optimizers_only_for_a_fit(tmp_path: Path) -> None:
    trainer = pl.Trainer(default_root_dir=tmp_path, max_epochs=1, limit_train_batches=1, limit_val_batches=0,
                         logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False)
    model = BoringModel()
    trainer.strategy.connect(model)
    trainer.state.fn = TrainerFn.VALIDATING
    trainer.strategy.setup_optimizers(trainer)
    assert trainer.strategy.optimizers == []  # an evaluation creates none
    trainer.state.fn = TrainerFn.FITTING
    trainer.strategy.setup_optimizers(trainer)
    (optimizer,) = trainer.strategy.optimizers
    assert isinstance(optimizer, torch.optim.SGD)
    assert optimizer.param_groups[0]["params"][0] is model.layer.weight
    # BoringModel's StepLR comes with its Lightning config
    (config,) = trainer.strategy.lr_scheduler_configs
    assert config.scheduler.optimizer is optimizer and config.interval == "epoch"
