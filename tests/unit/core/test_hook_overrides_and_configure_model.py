"""Which hooks count as overridden, and when ``configure_model``/``configure_sharded_model`` run."""

from __future__ import annotations

from functools import partial, update_wrapper
from pathlib import Path
from typing import Any
from unittest.mock import Mock

import torch

import torchbolt as pl
from torchbolt.demos.boring_classes import BoringModel
from torchbolt.utilities.model_helpers import is_overridden


def _trainer(tmp_path: Path, **kwargs: Any) -> pl.Trainer:
    defaults: dict[str, Any] = dict(default_root_dir=tmp_path, logger=False, enable_progress_bar=False,
                                    enable_model_summary=False, enable_checkpointing=False)
    defaults.update(kwargs)
    return pl.Trainer(**defaults)


class _Recording(BoringModel):
    """Every hook listed is replaced on the instance by a wrapper that records the call, then runs it."""

    def __init__(self, hooks: list[str]) -> None:
        super().__init__()
        self.calls: list[str] = []
        for name in hooks:
            original = getattr(self, name)

            def record(name: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
                self.calls.append(name)
                return fn(*args, **kwargs) if fn is not None else None

            wrapper = partial(record, name, original)
            update_wrapper(wrapper, original)  # type: ignore[arg-type]
            setattr(self, name, wrapper)


def test_a_recording_wrapper_around_the_inherited_hook_is_not_an_override() -> None:
    model = _Recording(["configure_model", "on_fit_start"])
    assert not is_overridden("configure_model", model)
    assert not is_overridden("on_fit_start", model)


def test_what_counts_as_an_override() -> None:
    class WithHook(BoringModel):
        def configure_model(self) -> None:
            pass

    assert is_overridden("configure_model", WithHook())
    model = BoringModel()
    assert not is_overridden("configure_model", model)
    model.configure_model = lambda: None  # type: ignore[method-assign]
    assert is_overridden("configure_model", model)  # different code: an override

    wrapped = BoringModel()
    wrapped.on_fit_start = Mock(wraps=wrapped.on_fit_start)  # type: ignore[method-assign]
    assert not is_overridden("on_fit_start", wrapped)  # a spy on the inherited hook
    blank = BoringModel()
    blank.on_fit_start = Mock()  # type: ignore[method-assign]
    assert not is_overridden("on_fit_start", blank)  # a mock wrapping nothing has no code of its own

    class Removed(BoringModel):
        configure_model = None  # type: ignore[assignment]

    assert not is_overridden("configure_model", Removed())
    assert not is_overridden("configure_model", None)


def test_configure_model_runs_only_when_overridden_and_the_legacy_hook_only_when_overridden(tmp_path: Path) -> None:
    model = _Recording(["configure_model", "configure_sharded_model", "on_fit_start"])
    _trainer(tmp_path, max_steps=1, limit_val_batches=0).fit(model)
    # the wrappers are still called for hooks the Trainer always calls...
    assert "on_fit_start" in model.calls
    # ...but neither model-creation hook: the class overrides neither
    assert "configure_model" not in model.calls and "configure_sharded_model" not in model.calls

    class Builds(_Recording):
        def configure_model(self) -> None:
            self.extra = torch.nn.Linear(2, 2)

    built = Builds(["configure_model", "configure_sharded_model"])
    _trainer(tmp_path, max_steps=1, limit_val_batches=0).fit(built)
    assert built.calls == ["configure_model"]
    assert isinstance(built.extra, torch.nn.Linear)


def test_load_from_checkpoint_builds_configure_model_layers_before_loading(tmp_path: Path) -> None:
    class Lazy(BoringModel):
        def configure_model(self) -> None:
            if not hasattr(self, "head"):
                self.head = torch.nn.Linear(2, 3)

    model = Lazy()
    trainer = _trainer(tmp_path, max_steps=1, limit_val_batches=0)
    trainer.fit(model)
    path = tmp_path / "lazy.ckpt"
    trainer.save_checkpoint(path)
    restored = Lazy.load_from_checkpoint(path)
    torch.testing.assert_close(restored.head.weight, model.head.weight)


def test_eval_with_zero_batches_requests_no_loader_and_runs_no_loop_hook(tmp_path: Path) -> None:
    model = _Recording(["val_dataloader", "on_validation_start", "on_validation_model_eval", "setup", "teardown"])
    assert _trainer(tmp_path, limit_val_batches=0).validate(model, verbose=False) == []
    assert model.calls == ["setup", "teardown"]
    predicting = _Recording(["predict_dataloader", "on_predict_start"])
    assert _trainer(tmp_path, limit_predict_batches=0).predict(predicting) is None
    assert predicting.calls == []
