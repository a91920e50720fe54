"""``EarlyStopping``: patience with ``min_delta``, thresholds, non-finite values, strictness, state."""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import pytest
import torch

import torchbolt as pl
from torchbolt.callbacks import EarlyStopping
from torchbolt.callbacks.early_stopping import EarlyStoppingReason
from torchbolt.demos.boring_classes import BoringModel
from torchbolt.utilities.exceptions import MisconfigurationException


class Scripted(BoringModel):
    """Logs ``score`` = ``scores[i]`` at the i-th validation."""

    def __init__(self, scores: list[float]) -> None:
        super().__init__()
        self.scores = scores
        self.validations = 0

    def validation_step(self, batch: Any, batch_idx: int) -> Any:
        self.log("score", torch.tensor(self.scores[min(self.validations, len(self.scores) - 1)]))
        return super().validation_step(batch, batch_idx)

    def on_validation_epoch_end(self) -> None:
        self.validations += 1


def fit(callback: EarlyStopping, scores: list[float], **kwargs: Any) -> pl.Trainer:
    options: dict[str, Any] = {"max_epochs": len(scores), "limit_train_batches": 1, "limit_val_batches": 1,
                               "num_sanity_val_steps": 0, "logger": False, "enable_checkpointing": False,
                               "enable_progress_bar": False, "enable_model_summary": False}
    options.update(kwargs)
    trainer = pl.Trainer(callbacks=[callback], **options)
    trainer.fit(Scripted(scores))
    return trainer


@pytest.mark.parametrize(("scores", "min_delta", "patience", "stopped_after"), [
    ([5, 4, 4, 4, 4, 4], 0.0, 2, 4),         # no change for 2 checks: stop after the 4th epoch
    ([5, 4.95, 4.92, 4.91, 4.9, 4.8], 0.1, 3, 4),  # gains over the best of at most 0.09 < min_delta
    ([5, 4.95, 4.92, 4.91, 4.9, 4.8], 0.0, 3, 6),  # ... which count without min_delta: no stop
    ([5, 6, 7, 4, 5, 6, 7, 8], 0.0, 3, 7),   # the count restarts at each improvement
])
def test_patience_counts_checks_without_an_improvement_larger_than_min_delta(
        scores: list[float], min_delta: float, patience: int, stopped_after: int) -> None:
    callback = EarlyStopping("score", min_delta=min_delta, patience=patience)
    trainer = fit(callback, scores)
    assert trainer.current_epoch == stopped_after
    expect_stop = stopped_after < len(scores)
    assert (callback.stopping_reason == EarlyStoppingReason.PATIENCE_EXHAUSTED) == expect_stop


def test_mode_max_treats_increases_as_improvements() -> None:
    callback = EarlyStopping("score", mode="max", patience=1)
    trainer = fit(callback, [1, 2, 3, 3, 5])
    assert trainer.current_epoch == 4 and callback.best_score == 3


def test_stopping_threshold_stops_as_soon_as_it_is_reached() -> None:
    callback = EarlyStopping("score", stopping_threshold=2.0, patience=10)
    trainer = fit(callback, [5, 3, 1.5, 1, 0.5])
    assert trainer.current_epoch == 3
    assert callback.stopping_reason == EarlyStoppingReason.STOPPING_THRESHOLD
    assert callback.stopping_reason_message is not None and "Stopping threshold reached" in callback.stopping_reason_message


def test_divergence_threshold_stops_as_soon_as_it_is_crossed() -> None:
    callback = EarlyStopping("score", divergence_threshold=10.0, patience=10)
    trainer = fit(callback, [5, 3, 11, 1])
    assert trainer.current_epoch == 3
    assert callback.stopping_reason == EarlyStoppingReason.DIVERGENCE_THRESHOLD


def test_check_finite_stops_on_nan() -> None:
    callback = EarlyStopping("score", patience=10)
    trainer = fit(callback, [5, math.nan, 1])
    assert trainer.current_epoch == 2 and callback.stopped_epoch == 1
    assert callback.stopping_reason == EarlyStoppingReason.NON_FINITE_METRIC


def test_check_finite_false_treats_nan_as_no_improvement() -> None:
    callback = EarlyStopping("score", patience=10, check_finite=False)
    trainer = fit(callback, [5, math.nan, 1])
    assert trainer.current_epoch == 3 and callback.stopping_reason == EarlyStoppingReason.NOT_STOPPED


def test_verbose_logs_why_training_stopped(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="torchbolt.callbacks.early_stopping"):
        fit(EarlyStopping("score", patience=1, verbose=True), [3, 4])
    assert "Monitored metric score did not improve in the last 1 records. Best score: 3.000" in caplog.text


def test_strict_monitor_that_was_never_logged_raises_listing_the_logged_metrics() -> None:
    with pytest.raises(RuntimeError, match=r"metric `scor` which is not available.*use any of the following: `score`"):
        fit(EarlyStopping("scor"), [1, 2])


def test_non_strict_monitor_that_was_never_logged_warns_and_keeps_training() -> None:
    with pytest.warns(RuntimeWarning, match="metric `scor` which is not available"):
        trainer = fit(EarlyStopping("scor", strict=False), [1, 2])
    assert trainer.current_epoch == 2


def test_check_on_train_epoch_end_false_checks_after_every_validation() -> None:
    # two validations per epoch: patience runs out within the first epoch
    callback = EarlyStopping("score", patience=1, check_on_train_epoch_end=False)
    trainer = fit(callback, [3, 4, 1, 1], max_epochs=2, limit_train_batches=2, val_check_interval=0.5)
    assert trainer.current_epoch == 1 and callback.stopped_epoch == 0


def test_wait_count_and_best_score_are_restored_on_resume(tmp_path: Path) -> None:
    first = EarlyStopping("score", patience=3)
    trainer = fit(first, [5, 6, 7])
    assert first.wait_count == 2
    trainer.save_checkpoint(tmp_path / "a.ckpt")
    resumed = EarlyStopping("score", patience=3)
    trainer = pl.Trainer(max_epochs=6, limit_train_batches=1, limit_val_batches=1, logger=False,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                         callbacks=[resumed])
    model = Scripted([8])
    trainer.fit(model, ckpt_path=tmp_path / "a.ckpt")
    # one more check without improvement exhausts the restored count
    assert trainer.current_epoch == 4 and resumed.best_score == 5 and resumed.wait_count == 3


def test_state_dict_stores_the_stopping_reason_as_plain_data() -> None:
    callback = EarlyStopping("score", patience=1)
    fit(callback, [1, 2])
    state = callback.state_dict()
    assert state["stopping_reason"] == EarlyStoppingReason.PATIENCE_EXHAUSTED.value
    restored = EarlyStopping("score")
    restored.load_state_dict(state)
    assert restored.stopping_reason == EarlyStoppingReason.PATIENCE_EXHAUSTED
    assert restored.stopping_reason_message == callback.stopping_reason_message


def test_unknown_mode_raises() -> None:
    with pytest.raises(MisconfigurationException, match="`mode` can be min, max, got avg"):
        EarlyStopping("score", mode="avg")


def test_a_metric_the_module_logs_in_on_train_epoch_end_can_be_monitored() -> None:
    class EpochEndMetric(BoringModel):
        def on_train_epoch_end(self) -> None:
            self.log("epoch_score", float(10 - self.current_epoch))

    callback = EarlyStopping("epoch_score", mode="max", patience=2)
    trainer = pl.Trainer(max_epochs=5, limit_train_batches=1, limit_val_batches=0, logger=False,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                         callbacks=[callback])
    trainer.fit(EpochEndMetric())
    assert trainer.current_epoch == 3 and callback.best_score == 10


@pytest.mark.parametrize(("rank_zero_only", "world_size", "rank", "expected"), [
    (False, 1, 0, "bar"),
    (False, 2, 1, "[rank: 1] bar"),
    (True, 2, 0, "[rank: 0] bar"),
    (True, 2, 1, None),
])
def test_log_info_prefixes_the_rank_and_can_stay_on_rank_zero(
        caplog: pytest.LogCaptureFixture, rank_zero_only: bool, world_size: int, rank: int, expected: str | None
) -> None:
    from types import SimpleNamespace

    where = SimpleNamespace(world_size=world_size, global_rank=rank)
    with caplog.at_level(logging.INFO, logger="torchbolt.callbacks.early_stopping"):
        EarlyStopping._log_info(where, "bar", rank_zero_only)  # type: ignore[arg-type]
    assert [r.getMessage() for r in caplog.records] == ([expected] if expected else [])
