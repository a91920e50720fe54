"""``estimated_stepping_batches`` when only ``max_steps`` bounds the fit."""

from __future__ import annotations

import math

import torchbolt as pl
from torchbolt.demos.boring_classes import BoringModel


def _trainer(**kwargs: object) -> pl.Trainer:
    return pl.Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False,
                      enable_model_summary=False, limit_val_batches=0, **kwargs)  # type: ignore[arg-type]


def test_max_steps_beyond_one_epoch_is_the_estimate() -> None:
    # 64 batches per epoch; with no epoch limit the fit runs all 100 steps
    trainer = _trainer(max_steps=100)
    trainer.fit(BoringModel())
    assert trainer.global_step == 100
    assert trainer.estimated_stepping_batches == 100


def test_no_limit_at_all_is_infinite() -> None:
    assert _trainer(max_epochs=-1).estimated_stepping_batches == math.inf


def test_an_epoch_limit_still_caps_the_estimate() -> None:
    trainer = _trainer(max_epochs=1, max_steps=100)
    trainer.fit(BoringModel())
    assert trainer.estimated_stepping_batches == 64
