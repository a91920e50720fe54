"""The golden timeline of hook calls for fit, validate, test and predict (see docs/hooks.md)."""

from __future__ import annotations

from typing import Any

import pytest
import torch

import torchbolt as pl
from torchbolt.callbacks import Callback
from torchbolt.demos.boring_classes import BoringDataModule, BoringModel

MODULE_HOOKS = [
    "configure_callbacks", "prepare_data", "setup", "teardown", "configure_model", "configure_optimizers",
    "on_fit_start", "on_fit_end", "on_train_start", "on_train_end", "on_validation_start", "on_validation_end",
    "on_test_start", "on_test_end", "on_predict_start", "on_predict_end", "on_train_epoch_start",
    "on_train_epoch_end", "on_validation_epoch_start", "on_validation_epoch_end", "on_test_epoch_start",
    "on_test_epoch_end", "on_predict_epoch_start", "on_predict_epoch_end", "on_train_batch_start",
    "on_train_batch_end", "on_validation_batch_start", "on_validation_batch_end", "on_test_batch_start",
    "on_test_batch_end", "on_predict_batch_start", "on_predict_batch_end", "on_before_batch_transfer",
    "transfer_batch_to_device", "on_after_batch_transfer", "training_step", "validation_step", "test_step",
    "predict_step", "forward", "on_before_zero_grad", "optimizer_zero_grad", "on_before_backward", "backward",
    "on_after_backward", "on_before_optimizer_step", "configure_gradient_clipping", "clip_gradients",
    "optimizer_step", "lr_scheduler_step", "on_validation_model_zero_grad", "on_validation_model_eval",
    "on_validation_model_train", "on_test_model_eval", "on_test_model_train", "on_predict_model_eval",
    "train_dataloader", "val_dataloader", "test_dataloader", "predict_dataloader", "on_save_checkpoint",
    "on_load_checkpoint",
]
CALLBACK_HOOKS = [name for name in dir(Callback) if name.startswith("on_") or name in (
    "setup", "teardown", "state_dict", "load_state_dict")]


def _record_module(model: pl.LightningModule, calls: list[str]) -> None:
    for name in MODULE_HOOKS:
        original = getattr(model, name)

        def wrapper(*args: Any, _name: str = name, _original: Any = original, **kwargs: Any) -> Any:
            calls.append(_name)
            return _original(*args, **kwargs)

        model.__dict__[name] = wrapper


class RecordingCallback(Callback):
    def __init__(self, calls: list[str]) -> None:
        self.calls = calls
        for name in CALLBACK_HOOKS:
            original = getattr(self, name)

            def wrapper(*args: Any, _name: str = name, _original: Any = original, **kwargs: Any) -> Any:
                self.calls.append(f"Callback.{_name}")
                return _original(*args, **kwargs)

            setattr(self, name, wrapper)


def _transfer() -> list[str]:
    return ["on_before_batch_transfer", "transfer_batch_to_device", "on_after_batch_transfer"]


def _eval_loop(stage: str, batches: int) -> list[str]:
    step = "validation_step" if stage == "validation" else f"{stage}_step"
    out = [f"on_{stage}_model_eval", f"Callback.on_{stage}_start", f"on_{stage}_start",
           f"Callback.on_{stage}_epoch_start", f"on_{stage}_epoch_start"]
    for _ in range(batches):
        out += [*_transfer(), f"Callback.on_{stage}_batch_start", f"on_{stage}_batch_start", step, "forward",
                f"Callback.on_{stage}_batch_end", f"on_{stage}_batch_end"]
    out += [f"Callback.on_{stage}_epoch_end", f"on_{stage}_epoch_end", f"Callback.on_{stage}_end", f"on_{stage}_end"]
    if stage != "predict":
        out.append(f"on_{stage}_model_train")
    return out


def _train_batch(last: bool, step: bool = True, window_start: bool = True) -> list[str]:
    inner = ["training_step", "forward"]
    if window_start:
        inner += ["Callback.on_before_zero_grad", "on_before_zero_grad", "optimizer_zero_grad"]
    inner += ["Callback.on_before_backward", "on_before_backward", "backward", "Callback.on_after_backward",
              "on_after_backward"]
    out = [*_transfer(), "Callback.on_train_batch_start", "on_train_batch_start"]
    if step:
        out += ["optimizer_step", *inner, "Callback.on_before_optimizer_step", "on_before_optimizer_step",
                "configure_gradient_clipping", "clip_gradients"]
    else:
        out += inner
    if last:
        out.append("lr_scheduler_step")  # BoringModel's StepLR steps every epoch, at the epoch's last batch
    return [*out, "Callback.on_train_batch_end", "on_train_batch_end"]


def _trainer(calls: list[str], **kwargs: Any) -> pl.Trainer:
    defaults: dict[str, Any] = {
        "max_epochs": 1, "limit_train_batches": 2, "limit_val_batches": 2, "limit_test_batches": 2,
        "limit_predict_batches": 2, "enable_progress_bar": False, "enable_model_summary": False,
        "enable_checkpointing": False, "logger": False,
    }
    defaults.update(kwargs)
    return pl.Trainer(callbacks=[RecordingCallback(calls)], **defaults)


def _setup(stage: str) -> list[str]:
    return ["configure_callbacks", "prepare_data", "Callback.setup", "setup", "configure_model"]


def test_fit_hook_order_with_validation() -> None:
    calls: list[str] = []
    model = BoringModel()
    _record_module(model, calls)
    _trainer(calls).fit(model)
    expected = [
        *_setup("fit"), "configure_optimizers", "Callback.on_fit_start", "on_fit_start",
        "Callback.on_sanity_check_start", "val_dataloader", *_eval_loop("validation", 2),
        "Callback.on_sanity_check_end",
        "train_dataloader", "Callback.on_train_start", "on_train_start",
        "Callback.on_train_epoch_start", "on_train_epoch_start",
        *_train_batch(last=False), *_train_batch(last=True),
        "on_validation_model_zero_grad", *_eval_loop("validation", 2),
        "Callback.on_train_epoch_end", "on_train_epoch_end",
        "Callback.on_train_end", "on_train_end", "Callback.on_fit_end", "on_fit_end",
        "Callback.teardown", "teardown",
    ]
    assert calls == expected


def test_fit_hook_order_with_accumulation() -> None:
    calls: list[str] = []
    model = BoringModel()
    _record_module(model, calls)
    _trainer(calls, limit_train_batches=3, accumulate_grad_batches=2, limit_val_batches=0).fit(model)
    expected = [
        *_setup("fit"), "configure_optimizers", "Callback.on_fit_start", "on_fit_start",
        "train_dataloader", "Callback.on_train_start", "on_train_start",
        "Callback.on_train_epoch_start", "on_train_epoch_start",
        *_train_batch(last=False, step=False, window_start=True),
        *_train_batch(last=False, step=True, window_start=False),
        *_train_batch(last=True, step=True, window_start=True),
        "Callback.on_train_epoch_end", "on_train_epoch_end",
        "Callback.on_train_end", "on_train_end", "Callback.on_fit_end", "on_fit_end",
        "Callback.teardown", "teardown",
    ]
    assert calls == expected


@pytest.mark.parametrize(("verb", "stage"), [("validate", "validation"), ("test", "test")])
def test_evaluation_hook_order(verb: str, stage: str) -> None:
    calls: list[str] = []
    model = BoringModel()
    _record_module(model, calls)
    getattr(_trainer(calls), verb)(model, verbose=False)
    loader = "val_dataloader" if stage == "validation" else "test_dataloader"
    expected = [*_setup(verb), loader, *_eval_loop(stage, 2), "Callback.teardown", "teardown"]
    assert calls == expected


def test_predict_hook_order() -> None:
    calls: list[str] = []
    model = BoringModel()
    _record_module(model, calls)
    predictions = _trainer(calls).predict(model)
    expected = [*_setup("predict"), "predict_dataloader", "on_predict_model_eval", "Callback.on_predict_start",
                "on_predict_start", "Callback.on_predict_epoch_start", "on_predict_epoch_start"]
    for _ in range(2):
        expected += [*_transfer(), "Callback.on_predict_batch_start", "on_predict_batch_start", "predict_step",
                     "forward", "Callback.on_predict_batch_end", "on_predict_batch_end"]
    expected += ["Callback.on_predict_epoch_end", "on_predict_epoch_end", "Callback.on_predict_end",
                 "on_predict_end", "Callback.teardown", "teardown"]
    assert calls == expected
    assert predictions is not None and len(predictions) == 2


def test_datamodule_hook_order() -> None:
    calls: list[str] = []

    class HookedDataModule(BoringDataModule):
        pass

    dm = HookedDataModule()
    for name in ("prepare_data", "setup", "teardown", "train_dataloader", "val_dataloader", "test_dataloader",
                 "predict_dataloader"):
        original = getattr(dm, name)

        def wrapper(*args: Any, _name: str = name, _original: Any = original, **kwargs: Any) -> Any:
            calls.append(_name)
            return _original(*args, **kwargs)

        setattr(dm, name, wrapper)
    trainer = _trainer([], reload_dataloaders_every_n_epochs=1)
    trainer.fit(BoringModel(), datamodule=dm)
    assert calls == ["prepare_data", "setup", "val_dataloader", "train_dataloader", "teardown"]
    calls.clear()
    trainer.test(BoringModel(), datamodule=dm, verbose=False)
    assert calls == ["prepare_data", "setup", "test_dataloader", "teardown"]


def test_on_exception_runs_for_callbacks_and_module_then_teardown() -> None:
    calls: list[str] = []

    class Failing(BoringModel):
        def training_step(self, batch, batch_idx):
            raise RuntimeError("boom")

    model = Failing()
    _record_module(model, calls)
    trainer = _trainer(calls, limit_val_batches=0)
    model.__dict__["on_exception"] = lambda exc: calls.append(f"on_exception:{exc}")
    with pytest.raises(RuntimeError, match="boom"):
        trainer.fit(model)
    assert "Callback.on_exception" in calls
    assert calls.index("Callback.on_exception") < calls.index("on_exception:boom")
    assert trainer.interrupted
    assert torch.is_grad_enabled()


class StatefulRecordingCallback(RecordingCallback):
    """Has state, so checkpoints store it and a resume calls its ``load_state_dict``."""

    def state_dict(self) -> dict[str, Any]:
        return {"foo": True}


def _checkpoint_trainer(calls: list[str], root: Any, **kwargs: Any) -> pl.Trainer:
    options: dict[str, Any] = {
        "max_epochs": 1, "limit_train_batches": 2, "limit_val_batches": 2, "enable_progress_bar": False,
        "enable_model_summary": False, "logger": False, "default_root_dir": str(root),
    }
    options.update(kwargs)
    return pl.Trainer(callbacks=[StatefulRecordingCallback(calls)], **options)


def _save_hooks() -> list[str]:
    # ModelCheckpoint monitors epoch-end metrics, so it saves after the module's on_train_epoch_end
    return ["Callback.state_dict", "Callback.on_save_checkpoint", "on_save_checkpoint"]


def test_fit_hook_order_with_checkpointing(tmp_path: Any) -> None:
    calls: list[str] = []
    model = BoringModel()
    _record_module(model, calls)
    _checkpoint_trainer(calls, tmp_path).fit(model)
    expected = [
        *_setup("fit"), "configure_optimizers", "Callback.on_fit_start", "on_fit_start",
        "Callback.on_sanity_check_start", "val_dataloader", *_eval_loop("validation", 2),
        "Callback.on_sanity_check_end",
        "train_dataloader", "Callback.on_train_start", "on_train_start",
        "Callback.on_train_epoch_start", "on_train_epoch_start",
        *_train_batch(last=False), *_train_batch(last=True),
        "on_validation_model_zero_grad", *_eval_loop("validation", 2),
        "Callback.on_train_epoch_end", "on_train_epoch_end", *_save_hooks(),
        "Callback.on_train_end", "on_train_end", "Callback.on_fit_end", "on_fit_end",
        "Callback.teardown", "teardown",
    ]
    assert calls == expected


def test_resume_hook_order_loads_checkpoint_after_configure_model(tmp_path: Any) -> None:
    first = _checkpoint_trainer([], tmp_path, limit_val_batches=0)
    first.fit(BoringModel())
    best_model_path = first.checkpoint_callback.best_model_path  # type: ignore[union-attr]

    calls: list[str] = []
    loaded: list[dict[str, Any]] = []
    model = BoringModel()
    _record_module(model, calls)
    original = model.__dict__["on_load_checkpoint"]
    model.__dict__["on_load_checkpoint"] = lambda checkpoint: (loaded.append(checkpoint), original(checkpoint))
    _checkpoint_trainer(calls, tmp_path, max_epochs=2, limit_val_batches=0).fit(model, ckpt_path=best_model_path)
    expected = [
        *_setup("fit"),
        "on_load_checkpoint", "Callback.on_load_checkpoint", "Callback.load_state_dict",
        "configure_optimizers", "Callback.on_fit_start", "on_fit_start",
        "train_dataloader", "Callback.on_train_start", "on_train_start",
        "Callback.on_train_epoch_start", "on_train_epoch_start",
        *_train_batch(last=False), *_train_batch(last=True),
        "Callback.on_train_epoch_end", "on_train_epoch_end", *_save_hooks(),
        "Callback.on_train_end", "on_train_end", "Callback.on_fit_end", "on_fit_end",
        "Callback.teardown", "teardown",
    ]
    assert calls == expected
    assert (loaded[0]["epoch"], loaded[0]["global_step"]) == (0, 2)
    assert loaded[0]["callbacks"]["StatefulRecordingCallback"] == {"foo": True}
