"""``self.log`` follows Lightning's documented defaults and key naming."""

from __future__ import annotations

import warnings
from typing import Any

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

import torchbolt as pl
from tests.helpers.loggers import RecordingLogger
from tests.helpers.models import ClassifierModule, loader, quiet_trainer
from torchbolt.utilities.exceptions import MisconfigurationException


def _constant_loader(values: list[float], batch_sizes: list[int]) -> DataLoader:
    """Batches whose first element is ``values[i]`` repeated ``batch_sizes[i]`` times."""
    batches = [(torch.full((bs, 8), v), torch.zeros(bs, dtype=torch.long)) for v, bs in zip(values, batch_sizes)]
    return DataLoader(batches, batch_size=None)


class LogsBatchValue(ClassifierModule):
    """Logs the batch's constant value, so epoch reductions are checkable by hand."""

    def __init__(self, **log_kwargs: Any) -> None:
        super().__init__()
        self.log_kwargs = log_kwargs

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        self.log("value", batch[0][0, 0], **self.log_kwargs)
        return super().training_step(batch, batch_idx)

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self.log("val_value", batch[0][0, 0], **self.log_kwargs)


def test_training_step_defaults_to_step_level_values() -> None:
    logger = RecordingLogger()
    trainer = quiet_trainer(logger=logger, log_every_n_steps=1, limit_val_batches=0)
    trainer.fit(LogsBatchValue(), _constant_loader([1.0, 2.0, 3.0], [2, 2, 2]))
    assert logger.values_of("value") == [1.0, 2.0, 3.0]
    assert logger.steps_of("value") == [0, 1, 2]
    assert "value_epoch" not in trainer.callback_metrics
    assert trainer.callback_metrics["value"].item() == 3.0
    assert all(m["epoch"] == 0 for _, m in logger.metrics)


def test_validation_step_defaults_to_the_batch_size_weighted_epoch_mean() -> None:
    logger = RecordingLogger()
    trainer = quiet_trainer(logger=logger, num_sanity_val_steps=0)
    val = _constant_loader([1.0, 4.0], [3, 1])
    trainer.fit(LogsBatchValue(), _constant_loader([0.0], [2]), val)
    expected = (1.0 * 3 + 4.0 * 1) / 4
    assert trainer.callback_metrics["val_value"].item() == pytest.approx(expected)
    assert logger.values_of("val_value") == [pytest.approx(expected)]
    assert "val_value_step" not in trainer.callback_metrics


def test_on_step_and_on_epoch_fork_the_keys() -> None:
    logger = RecordingLogger()
    trainer = quiet_trainer(logger=logger, log_every_n_steps=1, limit_val_batches=0)
    trainer.fit(LogsBatchValue(on_step=True, on_epoch=True), _constant_loader([1.0, 2.0, 6.0], [1, 1, 2]))
    metrics = trainer.callback_metrics
    assert {"value", "value_step", "value_epoch"} <= set(metrics)
    assert metrics["value_epoch"].item() == pytest.approx((1 + 2 + 6 * 2) / 4)
    assert metrics["value"].item() == metrics["value_epoch"].item()
    assert logger.values_of("value_step") == [1.0, 2.0, 6.0]
    assert logger.values_of("value_epoch") == [pytest.approx(3.75)]
    assert "value" not in trainer.logged_metrics and "value_epoch" in trainer.logged_metrics
    # epoch values share the step of the epoch's last batch
    assert logger.steps_of("value_epoch") == [2]


@pytest.mark.parametrize(("reduce_fx", "expected"), [("max", 6.0), ("min", 1.0), ("sum", 9.0), (torch.max, 6.0)])
def test_reduce_fx(reduce_fx: Any, expected: float) -> None:
    trainer = quiet_trainer(limit_val_batches=0)
    model = LogsBatchValue(on_step=False, on_epoch=True, reduce_fx=reduce_fx)
    trainer.fit(model, _constant_loader([1.0, 2.0, 6.0], [1, 1, 2]))
    assert trainer.callback_metrics["value"].item() == expected


def test_explicit_batch_size_weights_the_mean() -> None:
    trainer = quiet_trainer(limit_val_batches=0)
    model = LogsBatchValue(on_step=False, on_epoch=True, batch_size=1)
    trainer.fit(model, _constant_loader([1.0, 4.0], [3, 1]))
    assert trainer.callback_metrics["value"].item() == pytest.approx(2.5)


def test_prog_bar_and_logger_flags() -> None:
    class Flags(ClassifierModule):
        def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
            loss = super().training_step(batch, batch_idx)
            self.log("shown", loss, prog_bar=True, logger=False)
            self.log("hidden", 1.0, logger=True)
            return loss

    logger = RecordingLogger()
    trainer = quiet_trainer(logger=logger, log_every_n_steps=1, limit_val_batches=0)
    trainer.fit(Flags())
    assert isinstance(trainer.progress_bar_metrics["shown"], float)
    assert "hidden" not in trainer.progress_bar_metrics
    assert logger.values_of("shown") == [] and logger.values_of("hidden")
    assert "shown" in trainer.callback_metrics


def test_values_stay_tensors_on_the_device() -> None:
    trainer = quiet_trainer(limit_val_batches=0)
    trainer.fit(ClassifierModule())
    value = trainer.callback_metrics["train_loss"]
    assert isinstance(value, torch.Tensor) and value.device.type == "cpu" and value.ndim == 0
    assert not value.requires_grad


def test_python_numbers_are_logged_as_tensors() -> None:
    class Numbers(ClassifierModule):
        def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
            self.log("count", batch_idx)
            self.log("ratio", 0.5, on_epoch=True)
            return super().training_step(batch, batch_idx)

    trainer = quiet_trainer(limit_val_batches=0)
    trainer.fit(Numbers())
    assert trainer.callback_metrics["count"].item() == 7
    assert trainer.callback_metrics["ratio_epoch"].item() == 0.5


def test_epoch_hooks_log_epoch_values() -> None:
    class EpochEnd(ClassifierModule):
        def on_train_epoch_end(self) -> None:
            self.log("epoch_stat", float(self.current_epoch) + 10)

    logger = RecordingLogger()
    trainer = quiet_trainer(logger=logger, max_epochs=2, limit_val_batches=0)
    trainer.fit(EpochEnd())
    assert logger.values_of("epoch_stat") == [10.0, 11.0]
    assert logger.steps_of("epoch_stat") == [7, 15]


def test_multiple_val_dataloaders_suffix_keys() -> None:
    class Two(ClassifierModule):
        def validation_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
            self.log("val_value", float(dataloader_idx))
            self.log("shared", 1.0, add_dataloader_idx=False)

        def val_dataloader(self) -> Any:
            return [loader(16), loader(16)]

    trainer = quiet_trainer(limit_train_batches=0)
    results = trainer.validate(Two(), verbose=False)
    assert results[0]["val_value/dataloader_idx_0"] == 0.0
    assert results[1]["val_value/dataloader_idx_1"] == 1.0
    assert "val_value/dataloader_idx_1" not in results[0]
    assert trainer.callback_metrics["shared"].item() == 1.0


def test_dict_of_val_dataloaders_work() -> None:
    seen: list[int] = []

    class Named(ClassifierModule):
        def validation_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
            seen.append(dataloader_idx)

        def val_dataloader(self) -> Any:
            return {"a": loader(16), "b": loader(8)}

    quiet_trainer().validate(Named(), verbose=False)
    assert seen == [0, 0, 1]


def test_logging_where_it_is_not_allowed() -> None:
    class FitStart(ClassifierModule):
        def on_fit_start(self) -> None:
            self.log("x", 1.0)

    with pytest.raises(MisconfigurationException, match="You can't `self.log\\(\\)` inside `on_fit_start`"):
        quiet_trainer().fit(FitStart())

    class Predict(ClassifierModule):
        def predict_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> Any:
            self.log("x", 1.0)

    with pytest.raises(MisconfigurationException, match="predict"):
        quiet_trainer().predict(Predict())


def test_epoch_level_hook_rejects_on_step() -> None:
    class Bad(ClassifierModule):
        def on_train_epoch_end(self) -> None:
            self.log("x", 1.0, on_step=True)

    with pytest.raises(MisconfigurationException, match=r"on_step=True\)` inside `on_train_epoch_end`"):
        quiet_trainer(limit_val_batches=0).fit(Bad())


def test_same_key_with_different_arguments_in_one_hook_is_an_error() -> None:
    class Twice(ClassifierModule):
        def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
            self.log("x", 1.0)
            self.log("x", 2.0, prog_bar=True)
            return super().training_step(batch, batch_idx)

    with pytest.raises(MisconfigurationException, match="twice in `training_step` with different arguments"):
        quiet_trainer().fit(Twice())


def test_log_without_trainer_only_warns() -> None:
    model = ClassifierModule()
    with pytest.warns(UserWarning, match="not registered on the model yet"):
        model.log("x", 1.0)


def test_log_dict_logs_every_entry() -> None:
    class Dict(ClassifierModule):
        def validation_step(self, batch: Any, batch_idx: int) -> None:
            self.log_dict({"a": 1.0, "b": torch.tensor(2.0)}, prog_bar=True)

    trainer = quiet_trainer()
    trainer.validate(Dict(), verbose=False)
    assert trainer.callback_metrics["a"].item() == 1.0
    assert trainer.progress_bar_metrics == {"a": 1.0, "b": 2.0}


def test_mid_epoch_validation_metrics_use_the_current_step() -> None:
    logger = RecordingLogger()
    trainer = quiet_trainer(logger=logger, val_check_interval=0.5, num_sanity_val_steps=0)
    trainer.fit(ClassifierModule())
    assert logger.steps_of("val_loss") == [3, 7]


def test_test_returns_metrics_and_prints_a_table(capsys: pytest.CaptureFixture[str]) -> None:
    trainer = quiet_trainer()
    results = trainer.test(ClassifierModule())
    assert list(results[0]) == ["test_loss"] and isinstance(results[0]["test_loss"], float)
    out = capsys.readouterr().out
    assert "Test metric" in out and "test_loss" in out and "DataLoader 0" in out


def test_validate_verbose_false_prints_nothing(capsys: pytest.CaptureFixture[str]) -> None:
    quiet_trainer().validate(ClassifierModule(), verbose=False)
    assert "Validate metric" not in capsys.readouterr().out


def test_logger_true_without_logger_warns_once() -> None:
    class Explicit(ClassifierModule):
        def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
            self.log("x", 1.0, logger=True)
            return super().training_step(batch, batch_idx)

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        quiet_trainer(limit_val_batches=0).fit(Explicit())
    assert sum("no logger configured" in str(w.message) for w in caught) == 1


def test_iterable_dataset_without_length() -> None:
    class Stream(torch.utils.data.IterableDataset):
        def __iter__(self) -> Any:
            data = TensorDataset(torch.randn(20, 8), torch.zeros(20, dtype=torch.long))
            yield from data

    trainer = quiet_trainer(max_epochs=2, limit_val_batches=0)
    trainer.fit(ClassifierModule(), DataLoader(Stream(), batch_size=4))
    assert trainer.global_step == 10
    assert trainer.num_training_batches == float("inf")


def test_trainer_state_flags_during_each_stage() -> None:
    seen: dict[str, tuple[bool, bool, bool, bool, bool]] = {}

    class Probe(pl.Callback):
        def _record(self, key: str, trainer: pl.Trainer) -> None:
            seen.setdefault(key, (trainer.training, trainer.validating, trainer.testing, trainer.predicting,
                                  trainer.sanity_checking))

        def on_train_batch_start(self, trainer: Any, *args: Any) -> None:
            self._record("train", trainer)

        def on_validation_batch_start(self, trainer: Any, *args: Any, **kwargs: Any) -> None:
            self._record("sanity" if trainer.sanity_checking else "val", trainer)

        def on_test_batch_start(self, trainer: Any, *args: Any, **kwargs: Any) -> None:
            self._record("test", trainer)

        def on_predict_batch_start(self, trainer: Any, *args: Any, **kwargs: Any) -> None:
            self._record("predict", trainer)

    trainer = quiet_trainer(callbacks=[Probe()], limit_train_batches=1, limit_val_batches=1)
    model = ClassifierModule()
    trainer.fit(model)
    trainer.test(model, verbose=False)
    trainer.predict(model)
    assert seen == {
        "sanity": (False, False, False, False, True),
        "train": (True, False, False, False, False),
        "val": (False, True, False, False, False),
        "test": (False, False, True, False, False),
        "predict": (False, False, False, True, False),
    }
    assert trainer.state.finished and trainer.state.fn == "predict"
