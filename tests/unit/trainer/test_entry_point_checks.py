"""What the Trainer accepts at construction and at its entry points, and how it refuses the rest."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from torchbolt import Trainer
from torchbolt.demos.boring_classes import BoringModel
from torchbolt.utilities.exceptions import MisconfigurationException


@pytest.mark.parametrize("entry", ["validate", "test", "predict"])
def test_an_entry_point_without_any_model_is_a_type_error(entry: str) -> None:
    trainer = Trainer(logger=False, enable_progress_bar=False, max_epochs=1)
    with pytest.raises(TypeError, match=rf"`trainer.{entry}\(\)` requires a `LightningModule`.*{entry}\(model"):
        getattr(trainer, entry)()
    # code written against the earlier exception type keeps working
    with pytest.raises(MisconfigurationException):
        getattr(trainer, entry)()


@pytest.mark.parametrize("given", ["~/runs", Path("~/runs")])
def test_default_root_dir_expands_the_home_directory(given: str | Path) -> None:
    trainer = Trainer(default_root_dir=given, logger=False, max_epochs=1)
    assert trainer.default_root_dir == os.path.join(str(Path.home()), "runs")


def test_default_root_dir_url_is_kept_as_given() -> None:
    assert Trainer(default_root_dir="memory://~/runs", logger=False, max_epochs=1).default_root_dir == "memory://~/runs"


def test_gradient_clip_val_of_the_wrong_type_is_a_type_error() -> None:
    with pytest.raises(TypeError, match=r"gradient_clip_val=\(1, 2\).*should be an int or a float"):
        Trainer(gradient_clip_val=(1, 2), max_epochs=1)  # type: ignore[arg-type]
    with pytest.raises(MisconfigurationException, match="non-negative"):
        Trainer(gradient_clip_val=-1.0, max_epochs=1)


def test_freeze_and_unfreeze_return_the_module() -> None:
    model = BoringModel()
    assert model.freeze() is model
    assert not model.training and not any(p.requires_grad for p in model.parameters())
    assert model.unfreeze() is model
    assert model.training and all(p.requires_grad for p in model.parameters())


def test_environment_variables_fill_logger_and_profiler(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PL_TRAINER_LOGGER", "False")
    monkeypatch.setenv("PL_TRAINER_PROFILER", "simple")
    monkeypatch.setenv("PL_TRAINER_MAX_STEPS", "7")
    trainer = Trainer(max_epochs=1)
    assert trainer.logger is None and trainer.max_steps == 7
    assert type(trainer.profiler).__name__ == "SimpleProfiler"
    # an argument passed explicitly wins over the environment
    assert Trainer(max_epochs=1, logger=True, profiler=None).logger is not None


def test_self_log_under_barebones_warns_and_logs_nothing() -> None:
    model = BoringModel()
    model.trainer = Trainer(barebones=True, max_epochs=1)
    with pytest.warns(UserWarning, match=r"barebones=True\)` is configured, so nothing is logged"):
        model.log("loss", 1.0)
    with pytest.warns(UserWarning, match=r"barebones=True\)` is configured"):
        model.log_dict({"loss": 1.0})
