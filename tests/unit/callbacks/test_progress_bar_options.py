"""Progress bar options: one bar only, ``TQDM_MINITERS``, the version shown, the rich metrics format."""

from __future__ import annotations

import pytest
import torch

import torchbolt as pl
from torchbolt.callbacks.progress import RichProgressBar, TQDMProgressBar
from torchbolt.callbacks.progress.rich_progress import RichProgressBarTheme
from torchbolt.demos.boring_classes import BoringModel
from torchbolt.loggers import CSVLogger
from torchbolt.utilities.exceptions import MisconfigurationException


def test_two_progress_bars_are_refused() -> None:
    with pytest.raises(MisconfigurationException, match="^You added multiple progress bar callbacks"):
        pl.Trainer(callbacks=[TQDMProgressBar(), TQDMProgressBar()], max_epochs=1)


def test_a_bar_with_the_bar_disabled_is_refused() -> None:
    with pytest.raises(MisconfigurationException, match="enable_progress_bar=False` but found `TQDMProgressBar`"):
        pl.Trainer(callbacks=[TQDMProgressBar()], enable_progress_bar=False, max_epochs=1)


@pytest.mark.parametrize(("rate", "env", "expected"), [(0, "1", 1), (1, "2", 2), (5, "2", 5), (None, "3", 3)])
def test_tqdm_miniters_raises_the_refresh_rate(monkeypatch: pytest.MonkeyPatch, rate: int | None, env: str,
                                               expected: int) -> None:
    monkeypatch.setenv("TQDM_MINITERS", env)
    assert TQDMProgressBar(refresh_rate=rate).refresh_rate == expected


def test_no_version_is_shown_for_fast_dev_run(tmp_path) -> None:
    trainer = pl.Trainer(default_root_dir=tmp_path, fast_dev_run=True, enable_progress_bar=True)
    model = BoringModel()
    trainer.fit(model)
    assert "v_num" not in trainer.progress_bar_callback.get_metrics(trainer, model)


def test_versions_of_several_loggers_are_joined(tmp_path) -> None:
    loggers = [CSVLogger(tmp_path, version=3), CSVLogger(tmp_path, name="b", version=3), CSVLogger(tmp_path, version=7)]
    trainer = pl.Trainer(logger=loggers, max_steps=1, limit_val_batches=0, enable_checkpointing=False,
                         enable_model_summary=False)
    model = BoringModel()
    trainer.fit(model)
    assert trainer.progress_bar_callback.get_metrics(trainer, model)["v_num"] == "3_7"


def test_rich_theme_sets_the_metrics_format() -> None:
    theme = RichProgressBarTheme(metrics_format=".2e", metrics_text_delimiter=" | ")
    bar = RichProgressBar(theme=theme)
    assert bar.theme.metrics_format == ".2e" and bar.theme.metrics_text_delimiter == " | "
    assert RichProgressBarTheme().metrics_format == ".3f"


def test_rich_bar_without_rich_names_the_package(monkeypatch: pytest.MonkeyPatch) -> None:
    from torchbolt.callbacks.progress import rich_progress

    monkeypatch.setattr(rich_progress, "_RICH_AVAILABLE", False)
    with pytest.raises(ModuleNotFoundError, match="`RichProgressBar` requires `rich` >= 10.2.2"):
        RichProgressBar()


def test_each_stage_bar_is_readable_after_its_run_and_pickles_with_the_trainer() -> None:
    import pickle

    bar = TQDMProgressBar(refresh_rate=1)
    with pytest.raises(TypeError, match="_test_progress_bar` reference has not been set"):
        _ = bar.test_progress_bar
    trainer = pl.Trainer(max_epochs=1, limit_train_batches=3, limit_val_batches=2, limit_test_batches=2,
                         limit_predict_batches=2, callbacks=[bar], logger=False, enable_checkpointing=False,
                         enable_model_summary=False)
    model = BoringModel()
    trainer.fit(model)
    # the bars of a finished run stay readable (closed), as Lightning code expects after `fit`
    assert bar.train_progress_bar.n == 3 and bar.val_progress_bar.n == 2
    trainer.test(model, verbose=False)
    trainer.predict(model)
    assert bar.test_progress_bar.n == 2 and bar.predict_progress_bar.n == 2
    # the optimizers' wrappers are rebuilt around the optimizers in a pickle (their classes have no import path)
    restored = pickle.loads(pickle.dumps(bar))
    optimizer = restored.trainer.strategy.lightning_optimizers[0]
    assert isinstance(optimizer, torch.optim.SGD) and optimizer.optimizer is restored.trainer.strategy.optimizers[0]
    assert optimizer.param_groups[0]["lr"] == trainer.optimizers[0].param_groups[0]["lr"]


def test_val_check_batch_says_when_validation_falls_due() -> None:
    trainer = pl.Trainer(max_epochs=1, limit_train_batches=8, limit_val_batches=1, val_check_interval=0.25,
                         logger=False, enable_checkpointing=False, enable_model_summary=False,
                         enable_progress_bar=False)
    assert trainer.val_check_batch is None  # before fit has its training data
    trainer.fit(BoringModel())
    assert trainer.val_check_batch == 2
    trainer = pl.Trainer(max_epochs=1, limit_train_batches=8, limit_val_batches=1, logger=False,
                         enable_checkpointing=False, enable_model_summary=False, enable_progress_bar=False)
    trainer.fit(BoringModel())
    assert trainer.val_check_batch == 8
