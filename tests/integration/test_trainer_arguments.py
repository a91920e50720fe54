"""Every Trainer argument of the core has an observable effect (one test per behaviour)."""

from __future__ import annotations

import math
import os
import time
from typing import Any

import pytest
import torch

import torchbolt as pl
from tests.helpers.loggers import RecordingLogger
from tests.helpers.models import ClassifierModule, Counting, quiet_trainer
from torchbolt.callbacks import Callback, ModelSummary, TQDMProgressBar
from torchbolt.utilities.rank_zero import PossibleUserWarning

# 64 samples / batch 8 -> 8 training batches per epoch; 32 / 8 -> 4 validation batches


def _fit(**kwargs: Any) -> tuple[pl.Trainer, Counting]:
    counting = Counting()
    callbacks = [counting, *kwargs.pop("callbacks", [])]
    trainer = quiet_trainer(callbacks=callbacks, **kwargs)
    trainer.fit(ClassifierModule())
    return trainer, counting


def test_max_epochs_runs_that_many_epochs() -> None:
    trainer, counting = _fit(max_epochs=3)
    assert trainer.current_epoch == 3
    assert [e for e, _ in counting.train_batches].count(2) == 8
    assert trainer.global_step == 24


def test_max_epochs_defaults_to_1000_with_a_warning_when_fit_starts() -> None:
    # as in Lightning: unset until a fit gives it its value (and keeps it), warning then, not at construction
    trainer = quiet_trainer(max_epochs=None, callbacks=[StopAtFirstEpochEnd()])
    assert trainer.max_epochs is None and trainer.fit_loop.max_epochs is None
    with pytest.warns(PossibleUserWarning, match="max_epochs` was not set. Setting it to 1000"):
        trainer.fit(ClassifierModule())
    assert trainer.max_epochs == trainer.fit_loop.max_epochs == 1000
    assert trainer.current_epoch == 1


class StopAtFirstEpochEnd(Callback):
    def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        trainer.should_stop = True


def test_min_epochs_keeps_training_after_should_stop() -> None:
    trainer, _ = _fit(max_epochs=5, min_epochs=3, callbacks=[StopAtFirstEpochEnd()])
    assert trainer.current_epoch == 3


def test_should_stop_ends_fit_at_epoch_end_without_min_epochs() -> None:
    trainer, _ = _fit(max_epochs=5, callbacks=[StopAtFirstEpochEnd()])
    assert trainer.current_epoch == 1


def test_max_steps_stops_mid_epoch() -> None:
    trainer, counting = _fit(max_epochs=10, max_steps=5)
    assert trainer.global_step == 5
    assert len(counting.train_batches) == 5


class StopAtStep(Callback):
    def on_train_batch_end(self, trainer: Any, *args: Any) -> None:
        if trainer.global_step >= 2:
            trainer.should_stop = True


def test_min_steps_keeps_training_after_should_stop() -> None:
    trainer, _ = _fit(max_epochs=10, min_steps=11, callbacks=[StopAtStep()])
    assert trainer.global_step == 11


class SlowModule(ClassifierModule):
    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        time.sleep(0.02)
        return super().training_step(batch, batch_idx)


@pytest.mark.parametrize("max_time", ["00:00:00:01", {"seconds": 1}])
def test_max_time_stops_training(max_time: Any) -> None:
    trainer = quiet_trainer(max_time=max_time, max_epochs=1000)
    started = time.monotonic()
    trainer.fit(SlowModule())
    assert time.monotonic() - started < 20
    assert 1 <= trainer.global_step < 1000 * 8
    assert trainer.current_epoch < 1000


@pytest.mark.parametrize(("limit", "expected"), [(0.25, 2), (3, 3), (1.0, 8)])
def test_limit_train_batches(limit: float | int, expected: int) -> None:
    trainer, counting = _fit(limit_train_batches=limit)
    assert len(counting.train_batches) == expected
    assert trainer.num_training_batches == expected


@pytest.mark.parametrize(("limit", "expected"), [(0.5, 2), (1, 1), (0, 0)])
def test_limit_val_batches(limit: float | int, expected: int) -> None:
    _, counting = _fit(limit_val_batches=limit, num_sanity_val_steps=0)
    assert counting.val_batches == expected
    assert len(counting.val_runs) == (1 if expected else 0)


@pytest.mark.parametrize(("limit", "expected"), [(0.5, 2), (3, 3)])
def test_limit_test_and_predict_batches(limit: float | int, expected: int) -> None:
    counting = Counting()
    trainer = quiet_trainer(callbacks=[counting], limit_test_batches=limit, limit_predict_batches=limit)
    model = ClassifierModule()
    trainer.test(model, verbose=False)
    predictions = trainer.predict(model)
    assert counting.test_batches == expected
    assert counting.predict_batches == expected
    assert predictions is not None and len(predictions) == expected


def test_overfit_batches_reuses_the_same_unshuffled_batches() -> None:
    seen: list[torch.Tensor] = []

    class Recording(ClassifierModule):
        def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
            seen.append(batch[0].clone())
            return super().training_step(batch, batch_idx)

    trainer = quiet_trainer(overfit_batches=2, max_epochs=2, num_sanity_val_steps=0)
    with pytest.warns(UserWarning, match="overfit"):
        trainer.fit(Recording())
    assert len(seen) == 4
    assert torch.equal(seen[0], seen[2]) and torch.equal(seen[1], seen[3])
    assert trainer.num_val_batches == [2]


def test_val_check_interval_fraction_validates_twice_per_epoch() -> None:
    _, counting = _fit(val_check_interval=0.5, num_sanity_val_steps=0, max_epochs=2)
    assert counting.val_runs == [4, 8, 12, 16]


def test_val_check_interval_int_counts_batches_within_the_epoch() -> None:
    _, counting = _fit(val_check_interval=3, num_sanity_val_steps=0)
    assert counting.val_runs == [3, 6]


def test_val_check_interval_int_across_epochs_without_epoch_check() -> None:
    _, counting = _fit(val_check_interval=5, check_val_every_n_epoch=None, num_sanity_val_steps=0, max_epochs=2)
    assert counting.val_runs == [5, 10, 15]


def test_val_check_interval_larger_than_epoch_is_an_error() -> None:
    with pytest.raises(ValueError, match="val_check_interval` \\(20\\) must be less than or equal"):
        _fit(val_check_interval=20)


def test_check_val_every_n_epoch() -> None:
    _, counting = _fit(check_val_every_n_epoch=2, num_sanity_val_steps=0, max_epochs=4)
    assert counting.val_runs == [16, 32]


@pytest.mark.parametrize(("steps", "expected"), [(0, 0), (2, 2), (-1, 4)])
def test_num_sanity_val_steps(steps: int, expected: int) -> None:
    batches: list[int] = []

    class Sanity(Callback):
        def on_validation_batch_end(self, trainer: Any, *args: Any, **kwargs: Any) -> None:
            if trainer.sanity_checking:
                batches.append(1)

    _fit(num_sanity_val_steps=steps, callbacks=[Sanity()])
    assert len(batches) == expected


def test_sanity_check_does_not_leave_metrics_behind() -> None:
    trainer = quiet_trainer(limit_train_batches=0)
    trainer.fit(ClassifierModule())
    assert "val_loss" not in trainer.callback_metrics


def test_log_every_n_steps_controls_logger_flushes() -> None:
    logger = RecordingLogger()
    trainer = quiet_trainer(logger=logger, log_every_n_steps=3, max_epochs=2, limit_val_batches=0)
    trainer.fit(ClassifierModule())
    assert logger.steps_of("train_loss") == [2, 5, 8, 11, 14]


def test_enable_progress_bar_adds_a_tqdm_bar(capsys: pytest.CaptureFixture[str]) -> None:
    trainer = pl.Trainer(max_epochs=1, logger=False, enable_checkpointing=False, enable_model_summary=False)
    assert isinstance(trainer.progress_bar_callback, TQDMProgressBar)
    trainer.fit(ClassifierModule())
    # captured output is not a terminal, so the bar writes its plain line
    assert "epoch 1/1 | step 8/8 |" in capsys.readouterr().out
    quiet = quiet_trainer()
    assert quiet.progress_bar_callback is None


def test_enable_model_summary_prints_parameter_counts(caplog: pytest.LogCaptureFixture) -> None:
    trainer = quiet_trainer(enable_model_summary=True)
    assert any(isinstance(c, ModelSummary) for c in trainer.callbacks)
    trainer.fit(ClassifierModule())
    out = caplog.text  # the summary is logged (INFO) on the `torchbolt` logger, as Lightning logs it
    assert "Trainable params" in out and "Sequential" in out
    assert str(8 * 16 + 16 + 16 * 2 + 2) in out


def test_accumulate_grad_batches_steps_every_n_batches() -> None:
    trainer, counting = _fit(accumulate_grad_batches=3, max_epochs=2)
    # 8 batches: steps after batches 3, 6 and the last one (8)
    assert trainer.global_step == 6
    assert counting.optimizer_steps == 6


class RecordingSGD(torch.optim.SGD):
    """SGD that records the gradient norm and max |grad| it steps with (after clipping)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.norms: list[float] = []
        self.maxes: list[float] = []

    def step(self, closure: Any = None) -> Any:  # type: ignore[override]
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        grads = [p.grad for g in self.param_groups for p in g["params"] if p.grad is not None]
        self.norms.append(float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))))
        self.maxes.append(max(float(g.abs().max()) for g in grads))
        super().step()
        return loss


class ClipModule(ClassifierModule):
    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        return super().training_step(batch, batch_idx) * 100  # large gradients

    def configure_optimizers(self) -> torch.optim.Optimizer:
        self.opt = RecordingSGD(self.parameters(), lr=0.01)
        return self.opt


@pytest.mark.parametrize("algorithm", ["norm", "value"])
def test_gradient_clipping(algorithm: str) -> None:
    model = ClipModule()
    quiet_trainer(gradient_clip_val=0.5, gradient_clip_algorithm=algorithm, limit_val_batches=0).fit(model)
    if algorithm == "norm":
        assert max(model.opt.norms) <= 0.5 + 1e-5
    else:
        assert max(model.opt.maxes) <= 0.5 + 1e-7
    unclipped = ClipModule()
    quiet_trainer(limit_val_batches=0).fit(unclipped)
    assert max(unclipped.opt.norms) > 0.5


def test_deterministic_flag_enables_deterministic_algorithms() -> None:
    quiet_trainer(deterministic=True)
    assert torch.are_deterministic_algorithms_enabled()
    assert not torch.is_deterministic_algorithms_warn_only_enabled()
    quiet_trainer(deterministic="warn")
    assert torch.is_deterministic_algorithms_warn_only_enabled()


def test_benchmark_flag_sets_cudnn_benchmark() -> None:
    quiet_trainer(benchmark=True)
    assert torch.backends.cudnn.benchmark is True
    quiet_trainer(benchmark=False)
    assert torch.backends.cudnn.benchmark is False


@pytest.mark.parametrize("inference_mode", [True, False])
def test_inference_mode_in_evaluation(inference_mode: bool) -> None:
    seen: list[tuple[bool, bool]] = []

    class Probe(ClassifierModule):
        def validation_step(self, batch: Any, batch_idx: int) -> None:
            seen.append((torch.is_inference_mode_enabled(), torch.is_grad_enabled()))

    quiet_trainer(inference_mode=inference_mode, limit_val_batches=1).validate(Probe(), verbose=False)
    assert seen == [(inference_mode, False)]


def test_validation_inside_fit_never_uses_inference_mode() -> None:
    seen: list[bool] = []

    class Probe(ClassifierModule):
        def validation_step(self, batch: Any, batch_idx: int) -> None:
            seen.append(torch.is_inference_mode_enabled())

    quiet_trainer(limit_val_batches=1, limit_train_batches=1).fit(Probe())
    assert seen and not any(seen)


def test_detect_anomaly_is_on_during_training_only_when_asked() -> None:
    seen: list[bool] = []

    class Probe(ClassifierModule):
        def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
            seen.append(torch.is_anomaly_enabled())
            return super().training_step(batch, batch_idx)

    quiet_trainer(detect_anomaly=True, limit_train_batches=1, limit_val_batches=0).fit(Probe())
    quiet_trainer(limit_train_batches=1, limit_val_batches=0).fit(Probe())
    assert seen == [True, False]
    assert not torch.is_anomaly_enabled()


def test_barebones_runs_without_callbacks_logger_or_logging() -> None:
    trainer = pl.Trainer(barebones=True, max_epochs=1)
    assert trainer.callbacks == [] and trainer.loggers == []

    class Plain(ClassifierModule):
        def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
            x, y = batch
            return torch.nn.functional.cross_entropy(self(x), y)

        def validation_step(self, batch: Any, batch_idx: int) -> None:
            pass

    trainer.fit(Plain())
    assert trainer.global_step == 8
    # a module that logs still trains: each `self.log` warns and logs nothing
    logging_run = pl.Trainer(barebones=True, max_epochs=1)
    with pytest.warns(UserWarning, match=r"barebones=True\)` is configured, so nothing is logged"):
        logging_run.fit(ClassifierModule())
    assert logging_run.global_step == 8 and logging_run.callback_metrics == {}


@pytest.mark.parametrize("extra", [
    {"enable_checkpointing": True}, {"enable_progress_bar": True}, {"enable_model_summary": True},
    {"logger": True}, {"log_every_n_steps": 1}, {"num_sanity_val_steps": 1}, {"fast_dev_run": 1},
    {"detect_anomaly": True}, {"profiler": "simple"},
])
def test_barebones_rejects_features_with_per_step_cost(extra: dict[str, Any]) -> None:
    (arg, value), = extra.items()
    with pytest.raises(ValueError, match=rf"barebones.*`Trainer\({arg}={value!r}\)` was passed"):
        pl.Trainer(barebones=True, **extra)
    with pytest.raises(pl.utilities.MisconfigurationException):
        pl.Trainer(barebones=True, **extra)


def test_barebones_reports_the_per_step_features_as_off() -> None:
    trainer = pl.Trainer(barebones=True, max_epochs=1, log_every_n_steps=0, num_sanity_val_steps=0)
    assert trainer.log_every_n_steps == 0 and trainer.num_sanity_val_steps == 0 and not trainer.fast_dev_run
    assert not trainer.checkpoint_callbacks and not trainer.loggers and trainer.progress_bar_callback is None


def test_reload_dataloaders_every_n_epochs() -> None:
    calls: list[str] = []

    class Reloading(ClassifierModule):
        def train_dataloader(self) -> Any:
            calls.append("train")
            return super().train_dataloader()

        def val_dataloader(self) -> Any:
            calls.append("val")
            return super().val_dataloader()

    quiet_trainer(max_epochs=3, reload_dataloaders_every_n_epochs=1, num_sanity_val_steps=0).fit(Reloading())
    assert calls.count("train") == 3 and calls.count("val") == 3
    calls.clear()
    quiet_trainer(max_epochs=3, num_sanity_val_steps=0).fit(Reloading())
    assert calls.count("train") == 1 and calls.count("val") == 1


def test_default_root_dir_receives_the_default_logs(tmp_path: Any) -> None:
    root = tmp_path / "runs"
    trainer = pl.Trainer(default_root_dir=root, max_epochs=1, enable_progress_bar=False,
                         enable_model_summary=False, enable_checkpointing=False)
    trainer.fit(ClassifierModule())
    assert trainer.log_dir.startswith(str(root))
    assert os.path.isdir(root / "lightning_logs" / "version_0")


@pytest.mark.parametrize(("fast_dev_run", "batches"), [(True, 1), (3, 3)])
def test_fast_dev_run_runs_n_batches_of_each_loop_and_writes_nothing(tmp_path: Any, fast_dev_run: Any,
                                                                     batches: int) -> None:
    counting = Counting()
    trainer = pl.Trainer(fast_dev_run=fast_dev_run, callbacks=[counting], default_root_dir=tmp_path / "out",
                         enable_progress_bar=False)
    model = ClassifierModule()
    trainer.fit(model)
    trainer.test(model, verbose=False)
    trainer.predict(model)
    assert len(counting.train_batches) == batches
    assert counting.val_batches == batches and counting.test_batches == batches
    assert counting.predict_batches == batches
    assert counting.calls["sanity"] == 0
    assert trainer.current_epoch == 1
    assert not (tmp_path / "out").exists()


def test_devices_and_accelerator_on_cpu() -> None:
    trainer = quiet_trainer(accelerator="cpu", devices=1)
    assert trainer.num_devices == 1 and trainer.strategy.root_device == torch.device("cpu")
    auto = quiet_trainer()
    assert auto.strategy.root_device.type in ("cpu", "cuda", "mps")


def test_estimated_stepping_batches_inside_configure_optimizers() -> None:
    seen: list[float] = []

    class OneCycle(ClassifierModule):
        def configure_optimizers(self) -> Any:
            optimizer = torch.optim.SGD(self.parameters(), lr=0.1)
            total = self.trainer.estimated_stepping_batches
            seen.append(total)
            scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=0.1, total_steps=int(total))
            return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    trainer = quiet_trainer(max_epochs=3, accumulate_grad_batches=3, limit_val_batches=0)
    trainer.fit(OneCycle())
    assert seen == [9] and trainer.global_step == 9
    assert math.isinf(quiet_trainer(max_epochs=-1).estimated_stepping_batches)


def test_pl_trainer_environment_variables_fill_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PL_TRAINER_MAX_EPOCHS", "3")
    monkeypatch.setenv("PL_TRAINER_ACCELERATOR", "cpu")
    trainer = pl.Trainer(logger=False)
    assert trainer.max_epochs == 3 and type(trainer.accelerator).__name__ == "CPUAccelerator"
    assert pl.Trainer(max_epochs=5, logger=False).max_epochs == 5
