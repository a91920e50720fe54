"""What ``Trainer.save_checkpoint`` writes and how ``ckpt_path=`` restores it."""

from __future__ import annotations

import os
import pickle
import shutil
import time
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest
import torch

import torchbolt as pl
from torchbolt.callbacks import Callback, EarlyStopping, ModelCheckpoint, OnExceptionCheckpoint
from torchbolt.demos.boring_classes import BoringModel
from torchbolt.utilities.exceptions import MisconfigurationException

LIGHTNING_KEYS = {"epoch", "global_step", "pytorch-lightning_version", "state_dict", "loops", "callbacks",
                  "optimizer_states", "lr_schedulers"}


class LoggingModel(BoringModel):
    def training_step(self, batch: Any, batch_idx: int) -> Any:
        out = super().training_step(batch, batch_idx)
        self.log("train_loss", out["loss"])
        return out

    def validation_step(self, batch: Any, batch_idx: int) -> Any:
        out = super().validation_step(batch, batch_idx)
        self.log("val_loss", out["x"])
        return out


def trainer(root: Path, **kwargs: Any) -> pl.Trainer:
    options: dict[str, Any] = {"max_epochs": 1, "limit_train_batches": 2, "limit_val_batches": 2, "logger": False,
                               "enable_progress_bar": False, "enable_model_summary": False,
                               "default_root_dir": str(root)}
    options.update(kwargs)
    return pl.Trainer(**options)


def test_checkpoint_has_lightnings_layout_and_loads_with_a_weights_only_torch_load(tmp_path: Path) -> None:
    t = trainer(tmp_path)
    t.fit(LoggingModel())
    t.save_checkpoint(tmp_path / "a.ckpt")
    checkpoint = torch.load(tmp_path / "a.ckpt", weights_only=True)
    assert set(checkpoint) >= LIGHTNING_KEYS
    assert (checkpoint["epoch"], checkpoint["global_step"]) == (1, 2)
    fit_loop = checkpoint["loops"]["fit_loop"]
    assert fit_loop["epoch_loop.state_dict"] == {"_batches_that_stepped": 2}
    assert fit_loop["epoch_progress"]["current"]["completed"] == 1
    assert {"validate_loop", "test_loop", "predict_loop"} <= set(checkpoint["loops"])
    assert checkpoint["lr_schedulers"][0]["last_epoch"] == 1


def test_weights_only_checkpoint_holds_no_training_state_and_cannot_resume_fit(tmp_path: Path) -> None:
    t = trainer(tmp_path)
    t.fit(BoringModel())
    t.save_checkpoint(tmp_path / "w.ckpt", weights_only=True)
    checkpoint = torch.load(tmp_path / "w.ckpt", weights_only=True)
    assert "optimizer_states" not in checkpoint and "callbacks" not in checkpoint
    with pytest.raises(MisconfigurationException, match="holds only weights"):
        trainer(tmp_path, max_epochs=2).fit(BoringModel(), ckpt_path=tmp_path / "w.ckpt")


def test_checkpoint_written_to_an_fsspec_url_resumes_a_fit(tmp_path: Path) -> None:
    first = trainer(tmp_path)
    first.fit(BoringModel())
    first.save_checkpoint("memory://resume/run.ckpt")
    second = trainer(tmp_path, max_epochs=2)
    second.fit(BoringModel(), ckpt_path="memory://resume/run.ckpt")
    assert (second.current_epoch, second.global_step) == (2, 4)


def test_ckpt_path_last_resumes_from_the_newest_last_checkpoint(tmp_path: Path) -> None:
    first = trainer(tmp_path, callbacks=[ModelCheckpoint(dirpath=tmp_path / "ck", save_last=True)])
    first.fit(BoringModel())
    second = trainer(tmp_path, max_epochs=2, callbacks=[ModelCheckpoint(dirpath=tmp_path / "ck", save_last=True)])
    second.fit(BoringModel(), ckpt_path="last")
    assert second.ckpt_path == str(tmp_path / "ck" / "last.ckpt")
    assert second.global_step == 4


def test_ckpt_path_last_without_a_last_checkpoint_warns_and_starts_fresh(tmp_path: Path) -> None:
    t = trainer(tmp_path, callbacks=[ModelCheckpoint(dirpath=tmp_path / "empty", save_last=True)])
    with pytest.warns(UserWarning, match="there is no last checkpoint available"):
        t.fit(BoringModel(), ckpt_path="last")
    assert t.ckpt_path is None and t.global_step == 2


def _top_k_and_last_run(root: Path, epochs: int = 3) -> Path:
    """A run that keeps every epoch's checkpoint and ``last.ckpt``; returns the directory."""
    directory = root / "ck"
    callback = ModelCheckpoint(dirpath=directory, save_top_k=-1, monitor="step", mode="max", save_last=True)
    trainer(root, max_epochs=epochs, callbacks=[callback]).fit(BoringModel())
    return directory


def _set_mtimes(*paths: Path) -> None:
    """Give ``paths`` increasing modification times, in the order given."""
    base = time.time() - 100
    for i, path in enumerate(paths):
        os.utime(path, (base + i, base + i))


def _resume_last(root: Path, directory: Path) -> pl.Trainer:
    callback = ModelCheckpoint(dirpath=directory, save_top_k=-1, monitor="step", mode="max", save_last=True)
    resumed = trainer(root, max_epochs=4, callbacks=[callback])
    resumed.fit(BoringModel(), ckpt_path="last")
    return resumed


def test_ckpt_path_last_prefers_a_newer_top_k_checkpoint_with_more_progress_than_last(tmp_path: Path) -> None:
    directory = _top_k_and_last_run(tmp_path)
    # as after a crash between two writes of step 6: `last` is still the one of step 4
    shutil.copyfile(directory / "epoch=1-step=4.ckpt", directory / "last.ckpt")
    _set_mtimes(directory / "epoch=0-step=2.ckpt", directory / "epoch=1-step=4.ckpt", directory / "last.ckpt",
                directory / "epoch=2-step=6.ckpt")
    with pytest.warns(UserWarning, match=r"resuming from .*epoch=2-step=6\.ckpt \(global step 6\)"):
        resumed = _resume_last(tmp_path, directory)
    assert resumed.ckpt_path == str(directory / "epoch=2-step=6.ckpt")
    assert resumed.global_step == 8


def test_ckpt_path_last_ignores_top_k_checkpoints_older_than_last_even_with_more_progress(tmp_path: Path) -> None:
    directory = _top_k_and_last_run(tmp_path)
    # a run rolled back to epoch 0 and rewrote `last`: the later files of the abandoned run are older
    shutil.copyfile(directory / "epoch=0-step=2.ckpt", directory / "last.ckpt")
    _set_mtimes(directory / "epoch=1-step=4.ckpt", directory / "epoch=2-step=6.ckpt",
                directory / "epoch=0-step=2.ckpt", directory / "last.ckpt")
    resumed = _resume_last(tmp_path, directory)
    assert resumed.ckpt_path == str(directory / "last.ckpt")


def test_ckpt_path_last_skips_damaged_and_weights_only_files_with_a_warning(tmp_path: Path) -> None:
    directory = _top_k_and_last_run(tmp_path)
    (directory / "epoch=3-step=8.ckpt").write_bytes(b"not a checkpoint")
    weights = torch.load(directory / "epoch=2-step=6.ckpt", weights_only=True)
    torch.save({"state_dict": weights["state_dict"], "global_step": 9, "epoch": 4}, directory / "weights.ckpt")
    _set_mtimes(directory / "epoch=0-step=2.ckpt", directory / "epoch=1-step=4.ckpt", directory / "epoch=2-step=6.ckpt",
                directory / "last.ckpt", directory / "epoch=3-step=8.ckpt", directory / "weights.ckpt")
    with pytest.warns(UserWarning, match="skipped checkpoint files") as caught:
        resumed = _resume_last(tmp_path, directory)
    message = next(str(w.message) for w in caught if "skipped" in str(w.message))
    assert "epoch=3-step=8.ckpt (CorruptCheckpointError" in message
    assert "weights.ckpt (it holds only weights)" in message
    assert resumed.ckpt_path == str(directory / "last.ckpt")
    assert resumed.global_step == 8


def test_ckpt_path_last_without_a_last_file_resumes_the_furthest_top_k_checkpoint(tmp_path: Path) -> None:
    directory = _top_k_and_last_run(tmp_path)
    os.remove(directory / "last.ckpt")
    # modification times do not decide: the file written first holds the most progress
    _set_mtimes(directory / "epoch=2-step=6.ckpt", directory / "epoch=0-step=2.ckpt", directory / "epoch=1-step=4.ckpt")
    with pytest.warns(UserWarning, match="than any last checkpoint"):
        resumed = _resume_last(tmp_path, directory)
    assert resumed.ckpt_path == str(directory / "epoch=2-step=6.ckpt")


def test_ckpt_path_best_without_a_checkpoint_callback_raises(tmp_path: Path) -> None:
    t = trainer(tmp_path, enable_checkpointing=False)
    t.fit(BoringModel())
    with pytest.raises(ValueError, match=r'`.test\(ckpt_path="best"\)` is set but `ModelCheckpoint` is not configured'):
        t.test(ckpt_path="best", verbose=False)


def test_test_without_a_model_after_fit_loads_the_best_checkpoint(tmp_path: Path) -> None:
    t = trainer(tmp_path, max_epochs=2, callbacks=[ModelCheckpoint(monitor="val_loss", mode="max")])
    t.fit(LoggingModel())
    with pytest.warns(UserWarning, match="The best model of the previous `fit` call will be used"):
        t.test(verbose=False)
    assert t.ckpt_path == t.checkpoint_callback.best_model_path  # type: ignore[union-attr]


def test_resuming_with_max_epochs_below_the_checkpoint_epoch_raises(tmp_path: Path) -> None:
    first = trainer(tmp_path, max_epochs=3)
    first.fit(BoringModel())
    first.save_checkpoint(tmp_path / "e3.ckpt")
    with pytest.raises(MisconfigurationException, match=r"current_epoch=3, but you have set Trainer\(max_epochs=2\)"):
        trainer(tmp_path, max_epochs=2).fit(BoringModel(), ckpt_path=tmp_path / "e3.ckpt")


def test_two_instances_of_one_callback_class_keep_separate_state(tmp_path: Path) -> None:
    by_loss = EarlyStopping("val_loss", patience=5)
    by_train = EarlyStopping("train_loss", mode="max", patience=7)
    t = trainer(tmp_path, callbacks=[by_loss, by_train])
    t.fit(LoggingModel())
    t.save_checkpoint(tmp_path / "a.ckpt")
    states = torch.load(tmp_path / "a.ckpt", weights_only=True)["callbacks"]
    assert states["EarlyStopping{'monitor': 'val_loss', 'mode': 'min'}"]["patience"] == 5
    assert states["EarlyStopping{'monitor': 'train_loss', 'mode': 'max'}"]["patience"] == 7
    fresh = [EarlyStopping("val_loss"), EarlyStopping("train_loss", mode="max")]
    trainer(tmp_path, max_epochs=2, callbacks=fresh).fit(LoggingModel(), ckpt_path=tmp_path / "a.ckpt")
    assert [cb.patience for cb in fresh] == [5, 7]


def test_state_of_a_callback_missing_on_resume_is_reported(tmp_path: Path) -> None:
    class Stateful(Callback):
        def state_dict(self) -> dict[str, Any]:
            return {"n": 1}

    t = trainer(tmp_path, callbacks=[Stateful()])
    t.fit(BoringModel())
    t.save_checkpoint(tmp_path / "a.ckpt")
    with pytest.warns(UserWarning, match=r"Please add the following callbacks: \[.*Stateful'\]"):
        trainer(tmp_path, max_epochs=2).fit(BoringModel(), ckpt_path=tmp_path / "a.ckpt")


def test_a_checkpoint_with_other_objects_needs_weights_only_false_to_resume(tmp_path: Path) -> None:
    class ExtraState(BoringModel):
        def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
            checkpoint["ratio"] = Fraction(1, 3)

    t = trainer(tmp_path)
    t.fit(ExtraState())
    t.save_checkpoint(tmp_path / "a.ckpt")
    with pytest.raises(pickle.UnpicklingError, match=r"fractions\.Fraction"):
        trainer(tmp_path, max_epochs=2).fit(ExtraState(), ckpt_path=tmp_path / "a.ckpt")
    resumed = trainer(tmp_path, max_epochs=2)
    resumed.fit(ExtraState(), ckpt_path=tmp_path / "a.ckpt", weights_only=False)
    assert resumed.global_step == 4


def test_on_exception_checkpoint_is_written_on_failure_and_resumed_by_default(tmp_path: Path) -> None:
    class FailOnce(BoringModel):
        fail = True

        def training_step(self, batch: Any, batch_idx: int) -> Any:
            if self.fail and self.global_step == 1:
                raise RuntimeError("boom")
            return super().training_step(batch, batch_idx)

    model = FailOnce()
    callback = OnExceptionCheckpoint(tmp_path)
    with pytest.raises(RuntimeError, match="boom"):
        trainer(tmp_path, callbacks=[callback], limit_train_batches=4).fit(model)
    assert torch.load(callback.ckpt_path, weights_only=True)["global_step"] == 1
    model.fail = False
    time.sleep(0.01)
    resumed = trainer(tmp_path, callbacks=[OnExceptionCheckpoint(tmp_path)], limit_train_batches=4)
    with pytest.warns(UserWarning, match="ckpt_path"):
        resumed.fit(model)  # no ckpt_path: the on-exception checkpoint is "last"
    assert resumed.ckpt_path == callback.ckpt_path and resumed.global_step == 4
    assert not os.path.exists(callback.ckpt_path)  # a run that ends well removes it


def test_ckpt_path_last_without_save_last_finds_no_last_checkpoint(tmp_path: Path) -> None:
    # the top-k files of a callback that never writes `last` are not "last" checkpoints (as in Lightning)
    fitted = trainer(tmp_path, callbacks=[ModelCheckpoint(dirpath=tmp_path / "ck")])
    fitted.fit(BoringModel())
    assert os.listdir(tmp_path / "ck") == ["epoch=0-step=2.ckpt"]
    with pytest.warns(UserWarning, match="No checkpoint will be loaded"):
        fitted.validate(ckpt_path="last")
    assert fitted.ckpt_path is None


def test_resuming_mid_epoch_with_a_plain_dataloader_says_the_done_batches_are_fetched_again(tmp_path: Path) -> None:
    class StopsMidEpoch(BoringModel):
        stop_at: int | None = 2

        def training_step(self, batch: Any, batch_idx: int) -> Any:
            if batch_idx == self.stop_at:
                raise RuntimeError("interrupted")
            return super().training_step(batch, batch_idx)

    model = StopsMidEpoch()
    first = trainer(tmp_path, limit_train_batches=4, limit_val_batches=0)
    with pytest.raises(RuntimeError, match="interrupted"):
        first.fit(model)
    first.save_checkpoint(tmp_path / "mid.ckpt")
    model.stop_at = None
    resumed = trainer(tmp_path, limit_train_batches=4, limit_val_batches=0, max_epochs=2)
    with pytest.warns(UserWarning, match=r"resuming from a checkpoint that ended before the epoch ended.*first 2 b"):
        resumed.fit(model, ckpt_path=tmp_path / "mid.ckpt")
    assert resumed.global_step == 2 + 2 + 4  # the epoch was finished exactly, then one more


def test_lightning_spellings_of_overrides_and_environment_flags_import() -> None:
    from torchbolt.overrides.distributed import UnrepeatedDistributedSampler, _IndexBatchSamplerWrapper
    from torchbolt.utilities import distributed
    from torchbolt.utilities.imports import _TORCH_GREATER_EQUAL_2_8

    assert UnrepeatedDistributedSampler is distributed.UnrepeatedDistributedSampler
    assert callable(_IndexBatchSamplerWrapper)
    assert _TORCH_GREATER_EQUAL_2_8 is (tuple(int(p) for p in torch.__version__.split(".")[:2]) >= (2, 8))
