"""``Timer``: measures each stage, stops fit after ``duration``, and keeps counting across a resume."""

from __future__ import annotations

import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

import torchbolt as pl
from torchbolt.callbacks import Timer
from torchbolt.demos.boring_classes import BoringModel
from torchbolt.utilities.exceptions import MisconfigurationException


class Slow(BoringModel):
    def training_step(self, batch: Any, batch_idx: int) -> Any:
        time.sleep(0.02)
        return super().training_step(batch, batch_idx)


def trainer(callbacks: list[Any], **kwargs: Any) -> pl.Trainer:
    options: dict[str, Any] = {"max_epochs": 1, "limit_train_batches": 50, "limit_val_batches": 1,
                               "num_sanity_val_steps": 0, "logger": False, "enable_checkpointing": False,
                               "enable_progress_bar": False, "enable_model_summary": False}
    options.update(kwargs)
    return pl.Trainer(callbacks=callbacks, **options)


def test_duration_stops_training_after_the_time_is_up() -> None:
    timer = Timer(duration=timedelta(milliseconds=100), verbose=False)
    t = trainer([timer])
    t.fit(Slow())
    assert 1 <= t.global_step < 50
    assert timer.time_elapsed("train") >= 0.1


def test_interval_epoch_checks_only_at_epoch_ends() -> None:
    timer = Timer(duration=timedelta(milliseconds=10), interval="epoch", verbose=False)
    t = trainer([timer], max_epochs=3, limit_train_batches=2)
    t.fit(Slow())
    assert (t.current_epoch, t.global_step) == (1, 2)


def test_max_time_adds_a_timer() -> None:
    t = trainer([], max_time={"milliseconds": 50})
    t.fit(Slow())
    assert any(isinstance(cb, Timer) for cb in t.callbacks) and t.global_step < 50


def test_time_spent_in_each_stage_is_measured() -> None:
    timer = Timer()
    t = trainer([timer], limit_train_batches=2)
    t.fit(Slow())
    t.validate(Slow(), verbose=False)
    assert timer.time_elapsed("train") >= 0.04
    assert timer.time_elapsed("validate") > 0 and timer.time_elapsed("test") == 0
    assert timer.start_time("train") is not None and timer.end_time("train") is not None
    assert timer.time_remaining() is None


def test_elapsed_training_time_is_restored_on_resume(tmp_path: Path) -> None:
    first = Timer()
    t = trainer([first], limit_train_batches=2)
    t.fit(Slow())
    t.save_checkpoint(tmp_path / "a.ckpt")
    elapsed = first.time_elapsed("train")
    # the limit is already used up: the resumed fit stops before its first batch
    resumed = Timer(duration=timedelta(microseconds=int(elapsed * 1e6)), verbose=False)  # floored: <= elapsed
    t = trainer([resumed], max_epochs=2, limit_train_batches=2)
    t.fit(Slow(), ckpt_path=tmp_path / "a.ckpt")
    assert t.global_step == 2
    assert resumed.time_elapsed("train") >= elapsed


@pytest.mark.parametrize(("duration", "message"), [
    ("12:00", "must be 'DD:HH:MM:SS'"),
    ({"weeks_": 1}, "dict keys must be timedelta arguments"),
    (3.5, "must be a 'DD:HH:MM:SS' string, a timedelta or a dict"),
])
def test_a_bad_duration_raises_naming_the_expected_forms(duration: Any, message: str) -> None:
    with pytest.raises(MisconfigurationException, match=message):
        Timer(duration=duration)


def test_duration_string_is_days_hours_minutes_seconds() -> None:
    assert Timer(duration="01:02:03:04").time_remaining() == pytest.approx(93784)
