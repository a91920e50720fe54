"""What ``self.log`` accepts and refuses, where logged values go and when, as Lightning 2.x does it."""

from __future__ import annotations

from argparse import Namespace
from typing import Any

import pytest
import torch
from torch.utils.data import DataLoader

import torchbolt as pl
from tests.helpers.loggers import RecordingLogger
from tests.helpers.models import ClassifierModule, loader, quiet_trainer
from torchbolt.callbacks import Callback
from torchbolt.loggers import Logger
from torchbolt.trainer.states import RunningStage, TrainerFn
from torchbolt.utilities.exceptions import MisconfigurationException


class KeywordOnlyLogger(Logger):
    """A logger whose ``log_metrics`` only takes keyword arguments: a positional call would fail."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[int | None, dict[str, Any]]] = []

    @property
    def name(self) -> str:
        return "keywords"

    @property
    def version(self) -> int:
        return 0

    def log_metrics(self, *, metrics: dict[str, Any], step: int | None = None) -> None:  # type: ignore[override]
        self.calls.append((step, dict(metrics)))

    def log_hyperparams(self, params: dict[str, Any] | Namespace, *args: Any, **kwargs: Any) -> None:
        pass


class LogsIn(ClassifierModule):
    """Logs ``value`` from ``training_step`` with the given options."""

    def __init__(self, value: Any = 1.0, **options: Any) -> None:
        super().__init__()
        self.value = value
        self.options = options

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        self.log("value", self.value, **self.options)
        return super().training_step(batch, batch_idx)


# ---------------------------------------------------------------------- what reaches the loggers


def test_loggers_receive_metrics_and_step_as_keyword_arguments() -> None:
    logger = KeywordOnlyLogger()
    quiet_trainer(logger=logger, log_every_n_steps=1, limit_train_batches=2, limit_val_batches=0).fit(
        LogsIn(), loader(16))
    assert [step for step, metrics in logger.calls if "value" in metrics] == [0, 1]


def test_on_train_batch_end_sees_the_batch_values_and_what_it_logs_reaches_the_loggers_at_that_step() -> None:
    # as in Lightning, whose metric properties are computed from the running values: a callback reading
    # `callback_metrics` at a batch's end sees that batch's values, not the previous batch's
    seen: list[tuple[float, float, float]] = []

    class CountsBatches(ClassifierModule):
        def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
            self.log("batch", float(batch_idx), prog_bar=True)
            return super().training_step(batch, batch_idx)

    class Reads(Callback):
        def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
            seen.append((float(trainer.callback_metrics["batch"]), float(trainer.logged_metrics["batch"]),
                         float(trainer.progress_bar_metrics["batch"])))
            pl_module.log("seen_at_end", float(batch_idx))

    logger = RecordingLogger()
    quiet_trainer(logger=logger, callbacks=[Reads()], log_every_n_steps=1, limit_val_batches=0).fit(
        CountsBatches(), loader(16))  # two batches
    assert seen == [(0.0, 0.0, 0.0), (1.0, 1.0, 1.0)]
    rows = [(step, m["batch"], m["seen_at_end"]) for step, m in logger.metrics if "batch" in m]
    assert rows == [(0, 0.0, 0.0), (1, 1.0, 1.0)]


def test_a_synced_step_value_is_reduced_once_per_batch() -> None:
    # the batch's values are written before `on_train_batch_end` and again after it: one collective each
    from torchbolt.strategies import SingleDeviceStrategy

    class CountsReductions(SingleDeviceStrategy):
        calls = 0

        def reduce(self, tensor: Any, group: Any = None, reduce_op: str | None = "mean") -> Any:
            CountsReductions.calls += 1
            return tensor

    class Synced(ClassifierModule):
        def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
            loss = super().training_step(batch, batch_idx)
            self.log("synced", loss, sync_dist=True)
            return loss

    quiet_trainer(strategy=CountsReductions(device=torch.device("cpu")), limit_val_batches=0,
                  accumulate_grad_batches=2, max_epochs=1).fit(Synced(), loader(32))
    assert CountsReductions.calls == 4  # four batches (two steps), one reduction each, as in Lightning


def test_a_value_logged_in_on_train_start_reaches_the_loggers_once_with_the_first_epoch() -> None:
    class LogsAtTrainStart(ClassifierModule):
        def on_train_start(self) -> None:
            self.log("at_start", 123.0)

    logger = RecordingLogger()
    quiet_trainer(logger=logger, max_epochs=3, limit_train_batches=1, limit_val_batches=0,
                  log_every_n_steps=1).fit(LogsAtTrainStart(), loader(16))
    logged = [(step, m) for step, m in logger.metrics if "at_start" in m]
    assert logged == [(0, {"at_start": 123.0, "epoch": 0})]


def test_step_level_evaluation_values_count_batches_per_dataloader_across_a_fits_validations() -> None:
    class StepLevelEval(ClassifierModule):
        def validation_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
            self.log("val_idx", float(batch_idx), on_step=True, on_epoch=False)

        def val_dataloader(self) -> list[DataLoader]:
            return [loader(24, batch_size=8), loader(16, batch_size=8)]

    logger = RecordingLogger()
    trainer = quiet_trainer(logger=logger, max_epochs=2, limit_train_batches=1, num_sanity_val_steps=1)
    model = StepLevelEval()
    trainer.fit(model, loader(8))
    # the sanity check counts nothing; each dataloader has its own x-axis, continued in the next epoch
    assert logger.steps_of("val_idx/dataloader_idx_0") == [0, 1, 2, 3, 4, 5]
    assert logger.values_of("val_idx/dataloader_idx_0") == [0.0, 1.0, 2.0, 0.0, 1.0, 2.0]
    assert logger.steps_of("val_idx/dataloader_idx_1") == [0, 1, 2, 3]

    logger.metrics.clear()
    trainer.validate(model, verbose=False)  # a new evaluation run starts its x-axis at 0
    assert logger.steps_of("val_idx/dataloader_idx_0") == [0, 1, 2]
    assert logger.steps_of("val_idx/dataloader_idx_1") == [0, 1]


# ---------------------------------------------------------------------- reductions


@pytest.mark.parametrize(
    ("reduce_fx", "expected"),
    [(max, 3.0), (min, 0.0), ("SUM", 6.0), ("Max", 3.0), ("avg", 1.5), (torch.sum, 6.0), (sum, 6.0)],
)
def test_reduce_fx_accepts_names_in_any_case_and_the_builtins(reduce_fx: Any, expected: float) -> None:
    class LogsBatchIdx(ClassifierModule):
        def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
            self.log("idx", float(batch_idx), on_step=False, on_epoch=True, reduce_fx=reduce_fx)
            return super().training_step(batch, batch_idx)

    trainer = quiet_trainer(limit_train_batches=4, limit_val_batches=0)
    trainer.fit(LogsBatchIdx(), loader(32))
    assert trainer.callback_metrics["idx"].item() == expected


@pytest.mark.parametrize("reduce_fx", ["median", torch.argmax, lambda values: values])
def test_other_reductions_are_refused_with_the_supported_ones_named(reduce_fx: Any) -> None:
    with pytest.raises(MisconfigurationException, match=r"reduce_fx=\{min,max,mean,sum\}\)` are supported"):
        quiet_trainer(limit_train_batches=1, limit_val_batches=0).fit(
            LogsIn(reduce_fx=reduce_fx), loader(8))


# ---------------------------------------------------------------------- refused values and options


@pytest.mark.parametrize("value", [None, "high", {"a": 1}, [1, 2], (1, 2)])
def test_values_that_are_not_scalars_raise_value_error_naming_key_and_value(value: Any) -> None:
    with pytest.raises(ValueError, match=rf"self.log\(value, {__import__('re').escape(str(value))}\)` was called"):
        quiet_trainer(limit_train_batches=1, limit_val_batches=0).fit(LogsIn(value), loader(8))


def test_logging_at_neither_step_nor_epoch_level_is_refused() -> None:
    with pytest.raises(MisconfigurationException, match="is not useful"):
        quiet_trainer(limit_train_batches=1, limit_val_batches=0).fit(
            LogsIn(on_step=False, on_epoch=False), loader(8))


def test_logging_the_same_key_with_other_options_in_one_hook_is_refused() -> None:
    class TwoWays(ClassifierModule):
        def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
            self.log("twice", 1.0, prog_bar=False)
            self.log("twice", 1.0, prog_bar=True)
            return super().training_step(batch, batch_idx)

    with pytest.raises(MisconfigurationException, match=r"self.log\(twice, ...\)` twice in `training_step`"):
        quiet_trainer(limit_train_batches=1, limit_val_batches=0).fit(TwoWays(), loader(8))


def test_configure_callbacks_sees_the_trainer_and_cannot_log() -> None:
    seen: list[Any] = []

    class LogsInConfigureCallbacks(ClassifierModule):
        def configure_callbacks(self) -> list[Callback]:
            seen.append(self.trainer)
            self.log("nope", 1.0)
            return []

    trainer = quiet_trainer(limit_train_batches=1, limit_val_batches=0)
    with pytest.raises(MisconfigurationException, match="You can't `self.log\\(\\)` inside `configure_callbacks`"):
        trainer.fit(LogsInConfigureCallbacks(), loader(8))
    assert seen == [trainer]


def test_on_exception_cannot_log_even_when_the_run_failed_before_its_hooks_were_set_up() -> None:
    errors: list[BaseException] = []

    class FailsEarly(ClassifierModule):
        def configure_callbacks(self) -> list[Callback]:
            raise RuntimeError("broken configure_callbacks")

        def on_exception(self, exception: BaseException) -> None:
            try:
                self.log("nope", 1.0)
            except MisconfigurationException as err:
                errors.append(err)

    with pytest.raises(RuntimeError, match="broken configure_callbacks"):
        quiet_trainer().fit(FailsEarly(), loader(8))
    assert len(errors) == 1 and "inside `on_exception`" in str(errors[0])


# ---------------------------------------------------------------------- torchmetrics objects


def test_a_logged_metric_must_be_an_attribute_of_the_module() -> None:
    torchmetrics = pytest.importorskip("torchmetrics")

    class LogsStrayMetric(ClassifierModule):
        def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
            stray = torchmetrics.SumMetric()
            stray.update(1.0)
            self.log("stray", stray)
            return super().training_step(batch, batch_idx)

    with pytest.raises(MisconfigurationException, match="setting an attribute for the metric"):
        quiet_trainer(limit_train_batches=1, limit_val_batches=0).fit(LogsStrayMetric(), loader(8))

    class HasOneLogsAnother(LogsStrayMetric):
        def __init__(self) -> None:
            super().__init__()
            self.total = torchmetrics.SumMetric()

    with pytest.raises(MisconfigurationException, match=r"metric_attribute=name\)` where `name` is one of \['total'\]"):
        quiet_trainer(limit_train_batches=1, limit_val_batches=0).fit(HasOneLogsAnother(), loader(8))


def test_logged_metrics_are_reset_when_the_training_epoch_and_the_evaluation_end() -> None:
    torchmetrics = pytest.importorskip("torchmetrics")

    class CountingResets(torchmetrics.SumMetric):
        def __init__(self) -> None:
            super().__init__()
            self.resets = 0

        def reset(self) -> None:
            self.resets += 1
            super().reset()

    class LogsMetrics(ClassifierModule):
        def __init__(self) -> None:
            super().__init__()
            self.train_sum = CountingResets()
            self.val_sum = CountingResets()

        def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
            self.train_sum.update(1.0)
            self.log("train_sum", self.train_sum, on_step=False, on_epoch=True)
            return super().training_step(batch, batch_idx)

        def validation_step(self, batch: Any, batch_idx: int) -> None:
            self.val_sum.update(1.0)
            self.log("val_sum", self.val_sum)

    model = LogsMetrics()
    trainer = quiet_trainer(max_epochs=2, limit_train_batches=3, limit_val_batches=2, num_sanity_val_steps=0)
    trainer.fit(model, loader(32), loader(32))
    assert trainer.callback_metrics["train_sum"].item() == 3.0  # the second epoch's alone
    assert trainer.callback_metrics["val_sum"].item() == 2.0
    assert model.train_sum.resets == 2 and model.val_sum.resets == 2


# ---------------------------------------------------------------------- callbacks and hooks


def test_callbacks_can_log_with_self_log_and_self_log_dict() -> None:
    class LogsItself(Callback):
        def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
            self.log("from_callback", 2.0)  # type: ignore[attr-defined]

        def on_train_batch_end(self, trainer: pl.Trainer, *args: Any) -> None:
            self.log_dict({"a": 1.0, "b": 3.0})  # type: ignore[attr-defined]

    class OwnLog(Callback):
        def __init__(self) -> None:
            self.messages: list[str] = []

        def log(self, message: str) -> None:
            self.messages.append(message)

        def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
            self.log("started")

    own = OwnLog()
    trainer = quiet_trainer(limit_train_batches=2, limit_val_batches=0, callbacks=[LogsItself(), own])
    trainer.fit(ClassifierModule(), loader(16))
    assert {k: trainer.callback_metrics[k].item() for k in ("from_callback", "a", "b")} == {
        "from_callback": 2.0, "a": 1.0, "b": 3.0}
    assert own.messages == ["started"]  # a callback's own `log` method is left alone


def test_setup_receives_the_entry_point_and_the_stage_is_set_from_the_start() -> None:
    seen: list[tuple[Any, Any]] = []

    class Records(ClassifierModule):
        def setup(self, stage: str) -> None:
            seen.append((stage, self.trainer.state.stage))

    model = Records()
    trainer = quiet_trainer(limit_train_batches=1, limit_val_batches=1, num_sanity_val_steps=0)
    trainer.fit(model, loader(8), loader(8))
    trainer.test(model, loader(8), verbose=False)
    assert seen == [(TrainerFn.FITTING, RunningStage.TRAINING), (TrainerFn.TESTING, RunningStage.TESTING)]
    assert seen[0][0] == "fit" and isinstance(seen[0][0], str)


@pytest.mark.parametrize("manual", [False, True])
def test_training_step_may_leave_out_batch_idx(manual: bool) -> None:
    received: list[int] = []

    class BatchOnly(ClassifierModule):
        def __init__(self) -> None:
            super().__init__()
            self.automatic_optimization = not manual

        def training_step(self, batch: Any) -> torch.Tensor:  # type: ignore[override]
            received.append(len(batch))
            loss = super().training_step(batch, 0)
            if manual:
                opt = self.optimizers()
                opt.zero_grad()
                self.manual_backward(loss)
                opt.step()
            return loss

    quiet_trainer(limit_train_batches=2, limit_val_batches=0).fit(BatchOnly(), loader(16))
    assert received == [2, 2]  # called with the batch (inputs, targets) only


# ---------------------------------------------------------------------- outside a run; loggers


def test_a_module_attached_by_hand_logs_into_callback_metrics() -> None:
    model = ClassifierModule()
    trainer = pl.Trainer(logger=False, enable_progress_bar=False, enable_model_summary=False)
    trainer.state.stage = RunningStage.TRAINING
    model._current_fx_name = "training_step"
    model.trainer = trainer
    model.log("unsqueezed", torch.tensor([1.5]), on_epoch=True)
    assert trainer.callback_metrics["unsqueezed"].ndim == 0
    assert trainer.callback_metrics["unsqueezed"].item() == 1.5

    trainer.state.stage = None  # nothing says what runs: still an error
    with pytest.raises(MisconfigurationException, match="outside of a running loop"):
        model.log("other", 1.0)


def test_an_object_with_the_logger_interface_is_accepted_as_logger() -> None:
    class NotALoggerSubclass:
        name, version, save_dir, log_dir = "plain", 0, None, None

        def __init__(self) -> None:
            self.logged: list[tuple[int | None, dict[str, Any]]] = []

        def log_metrics(self, metrics: dict[str, Any], step: int | None = None) -> None:
            self.logged.append((step, dict(metrics)))

        def log_hyperparams(self, *args: Any, **kwargs: Any) -> None:
            pass

        def log_graph(self, *args: Any, **kwargs: Any) -> None:
            pass

        def save(self) -> None:
            pass

        def finalize(self, status: str) -> None:
            pass

        def after_save_checkpoint(self, checkpoint_callback: Any) -> None:
            pass

    plain = NotALoggerSubclass()
    trainer = quiet_trainer(logger=plain, log_every_n_steps=1, limit_train_batches=1, limit_val_batches=0)
    assert trainer.logger is plain
    trainer.fit(LogsIn(), loader(8))
    assert any("value" in metrics for _, metrics in plain.logged)
    with pytest.raises(MisconfigurationException, match="pass True, False, a Logger"):
        quiet_trainer(logger="tensorboard")
