"""Asynchronous checkpoints during real fits: what ``fit`` guarantees when it returns or raises, how
``ModelCheckpoint`` keeps its files right while writes are in flight, what a process exit does
with a write in flight, and exact resume from checkpoints written in the background.

The slow writer used here is ``TorchCheckpointIO`` with a pause before each write, so that saves
really overlap with training steps on any machine.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest
import torch
from _resume_workload import first_difference, fit

import torchbolt as pl
from torchbolt.callbacks import Callback, ModelCheckpoint
from torchbolt.demos.boring_classes import BoringModel
from torchbolt.plugins import AsyncCheckpointIO
from torchbolt.plugins.io import TorchCheckpointIO
from torchbolt.utilities.cloud_io import TEMP_FILE_PATTERN, _load
from torchbolt.utilities.exceptions import MisconfigurationException


class SlowIO(TorchCheckpointIO):
    """``TorchCheckpointIO`` that pauses before every write; optionally refuses some paths."""

    def __init__(self, delay: float = 0.05, refuse: str | None = None) -> None:
        self.delay = delay
        self.refuse = refuse
        self.checks: list[str] = []  # what `check` found wrong, one entry per problem

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        self.check(Path(path).parent)
        time.sleep(self.delay)
        if self.refuse is not None and self.refuse in os.fspath(path):
            raise RuntimeError("the storage backend rejected the upload")
        super().save_checkpoint(checkpoint, path, storage_options)

    def check(self, directory: Path) -> None:
        """Called as each write starts: every checkpoint visible in ``directory`` must load."""
        if not directory.is_dir():
            return
        for entry in directory.iterdir():
            if TEMP_FILE_PATTERN.match(entry.name) or entry.suffix != ".ckpt":
                continue
            if entry.is_symlink() and not entry.exists():
                self.checks.append(f"{entry.name} is a dangling link to {os.readlink(entry)}")
                continue
            try:
                _load(entry)
            except Exception as e:  # anything that does not load is what the test reports
                self.checks.append(f"{entry.name}: {type(e).__name__}: {e}")


class FailAtStep(BoringModel):
    def __init__(self, step: int) -> None:
        super().__init__()
        self.fail_step = step

    def training_step(self, batch: Any, batch_idx: int) -> Any:
        if self.global_step == self.fail_step:
            raise ValueError("the training step failed")
        return super().training_step(batch, batch_idx)


def _trainer(io: Any, callbacks: list[Any], **kwargs: Any) -> pl.Trainer:
    options: dict[str, Any] = {"max_steps": 6, "logger": False, "enable_progress_bar": False,
                               "enable_model_summary": False, "limit_val_batches": 0}
    options.update(kwargs)
    return pl.Trainer(plugins=[io] if io is not None else None, callbacks=callbacks, **options)


def _names(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


def test_fit_returns_with_its_last_checkpoint_complete(tmp_path: Path) -> None:
    checkpoint = ModelCheckpoint(dirpath=tmp_path, every_n_train_steps=2, save_last=True)
    trainer = _trainer(AsyncCheckpointIO(SlowIO(delay=0.3)), [checkpoint])
    trainer.fit(BoringModel())
    assert _names(tmp_path) == ["epoch=0-step=6.ckpt", "last.ckpt"]
    assert _load(checkpoint.best_model_path)["global_step"] == 6
    assert _load(tmp_path / "last.ckpt")["global_step"] == 6


def test_a_failed_last_write_makes_fit_raise_naming_the_file(tmp_path: Path) -> None:
    checkpoint = ModelCheckpoint(dirpath=tmp_path, every_n_train_steps=2, save_top_k=-1)
    trainer = _trainer(AsyncCheckpointIO(SlowIO(refuse="step=6")), [checkpoint])
    with pytest.raises(RuntimeError, match=r"Writing the checkpoint .*epoch=0-step=6\.ckpt in the background failed"):
        trainer.fit(BoringModel())
    assert _names(tmp_path) == ["epoch=0-step=2.ckpt", "epoch=0-step=4.ckpt"]  # the files before it are complete
    assert _load(tmp_path / "epoch=0-step=4.ckpt")["global_step"] == 4


def test_a_failed_write_surfaces_at_the_next_save_during_fit(tmp_path: Path) -> None:
    checkpoint = ModelCheckpoint(dirpath=tmp_path, every_n_train_steps=2, save_top_k=-1)
    trainer = _trainer(AsyncCheckpointIO(SlowIO(refuse="step=2")), [checkpoint], max_steps=20)
    with pytest.raises(RuntimeError, match=r"epoch=0-step=2\.ckpt in the background failed"):
        trainer.fit(BoringModel())
    assert trainer.global_step == 4  # raised by the save at step 4, not at the end
    assert _names(tmp_path) == []


def _make_read_only(directory: Path) -> None:
    if os.geteuid() != 0:
        directory.chmod(0o555)
        return
    # root ignores file modes; the immutable attribute stops root too
    if shutil.which("chattr") is None or subprocess.run(["chattr", "+i", str(directory)],
                                                         capture_output=True).returncode != 0:
        pytest.skip("running as root on a filesystem without `chattr +i`: cannot make a directory unwritable")


def _make_writable(directory: Path) -> None:
    if os.geteuid() == 0:
        subprocess.run(["chattr", "-i", str(directory)], capture_output=True)
    directory.chmod(0o755)


def test_a_read_only_directory_makes_the_next_save_raise_naming_the_file(tmp_path: Path) -> None:
    directory = tmp_path / "read-only"
    directory.mkdir()
    _make_read_only(directory)
    try:
        checkpoint = ModelCheckpoint(dirpath=directory, every_n_train_steps=2, save_top_k=-1, async_save=True)
        trainer = _trainer(None, [checkpoint], max_steps=20)
        with pytest.raises(PermissionError, match=r"Could not write the checkpoint .*read-only/epoch=0-step=2\.ckpt:"
                                                  r" (permission denied|operation not permitted)"):
            trainer.fit(BoringModel())
        assert trainer.global_step == 4  # the save after the failed one raised
    finally:
        _make_writable(directory)
    assert _names(directory) == []


def test_a_failing_run_raises_its_own_error_and_logs_the_write_error(tmp_path: Path,
                                                                    caplog: pytest.LogCaptureFixture) -> None:
    checkpoint = ModelCheckpoint(dirpath=tmp_path, every_n_train_steps=2, save_top_k=-1)
    trainer = _trainer(AsyncCheckpointIO(SlowIO(refuse="step=2")), [checkpoint])
    with caplog.at_level(logging.ERROR), pytest.raises(ValueError, match="the training step failed"):
        trainer.fit(FailAtStep(3))
    assert any("epoch=0-step=2.ckpt" in record.getMessage() for record in caplog.records)


def test_save_checkpoint_after_fit_returns_with_the_file_complete(tmp_path: Path) -> None:
    trainer = _trainer(AsyncCheckpointIO(SlowIO(delay=0.3)), [], max_steps=2, enable_checkpointing=False)
    trainer.fit(BoringModel())
    trainer.save_checkpoint(tmp_path / "after.ckpt")
    assert _load(tmp_path / "after.ckpt")["global_step"] == 2


def test_save_checkpoint_in_a_callback_is_written_in_the_background(tmp_path: Path) -> None:
    seen: list[bool] = []

    class SaveAtStep2(Callback):
        def on_train_batch_end(self, trainer: Any, *args: Any) -> None:
            if trainer.global_step == 2:
                trainer.save_checkpoint(tmp_path / "mid.ckpt")
                seen.append((tmp_path / "mid.ckpt").exists())

    trainer = _trainer(AsyncCheckpointIO(SlowIO(delay=0.3)), [SaveAtStep2()], max_steps=4,
                       enable_checkpointing=False)
    trainer.fit(BoringModel())
    assert seen == [False]
    assert _load(tmp_path / "mid.ckpt")["global_step"] == 2


@pytest.mark.parametrize("save_last", [True, "link"])
def test_top_k_and_last_stay_loadable_while_writes_are_in_flight(tmp_path: Path, save_last: Any) -> None:
    slow = SlowIO(delay=0.05)
    checkpoint = ModelCheckpoint(dirpath=tmp_path / "ckpts", monitor="step", mode="max", save_top_k=2,
                                 every_n_train_steps=1, save_last=save_last, async_save=True)
    trainer = _trainer(slow, [checkpoint], max_steps=8)
    trainer.fit(BoringModel())
    assert isinstance(trainer.strategy.checkpoint_io, AsyncCheckpointIO)
    assert trainer.strategy.checkpoint_io.checkpoint_io is slow
    assert slow.checks == []
    directory = tmp_path / "ckpts"
    assert _names(directory) == ["epoch=0-step=7.ckpt", "epoch=0-step=8.ckpt", "last.ckpt"]
    assert checkpoint.best_model_path == str(directory / "epoch=0-step=8.ckpt")
    assert _load(checkpoint.best_model_path)["global_step"] == 8
    assert _load(directory / "last.ckpt")["global_step"] == 8
    if save_last == "link":
        assert os.readlink(directory / "last.ckpt") == "epoch=0-step=8.ckpt"


def test_version_counter_names_match_a_synchronous_run(tmp_path: Path) -> None:
    def names(directory: Path, **kwargs: Any) -> list[str]:
        checkpoint = ModelCheckpoint(dirpath=directory, filename="{epoch}", monitor="step", mode="max", save_top_k=-1,
                                     every_n_train_steps=1, **kwargs)
        _trainer(SlowIO(), [checkpoint], max_steps=4).fit(BoringModel())
        return _names(directory)

    expected = names(tmp_path / "sync")
    assert expected == ["epoch=0-v1.ckpt", "epoch=0-v2.ckpt", "epoch=0-v3.ckpt", "epoch=0.ckpt"]
    assert names(tmp_path / "async", async_save=True) == expected


def test_async_save_must_be_a_flag() -> None:
    with pytest.raises(MisconfigurationException, match="async_save"):
        ModelCheckpoint(async_save="yes")  # type: ignore[arg-type]


_EXIT_SCRIPT = """
import sys, time, torch
from torchbolt.plugins import AsyncCheckpointIO
from torchbolt.plugins.io import TorchCheckpointIO

class Slow(TorchCheckpointIO):
    def save_checkpoint(self, checkpoint, path, storage_options=None):
        time.sleep(0.5)
        if "refused" in str(path):
            raise RuntimeError("the storage backend rejected the upload")
        super().save_checkpoint(checkpoint, path, storage_options)

io = AsyncCheckpointIO(Slow())
io.save_checkpoint({"w": torch.full((2_000_000,), 7.0)}, sys.argv[1])
print("returned", flush=True)
# the script ends here, with the write in flight
"""


@pytest.mark.parametrize("name", ["model.ckpt", "refused.ckpt"])
def test_a_normal_process_exit_completes_the_write_in_flight(tmp_path: Path, subprocess_env: dict[str, str],
                                                              name: str) -> None:
    script = tmp_path / "save_and_exit.py"
    script.write_text(textwrap.dedent(_EXIT_SCRIPT))
    target = tmp_path / name
    proc = subprocess.run([sys.executable, str(script), str(target)], env=subprocess_env, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "returned" in proc.stdout
    if name == "model.ckpt":
        assert torch.equal(_load(target)["w"], torch.full((2_000_000,), 7.0))
    else:
        assert not target.exists()
        assert f"Writing the checkpoint {target} in the background failed" in proc.stderr


def _tensors_equal(a: Any, b: Any, where: str = "") -> str | None:
    """The first place where two loaded checkpoints differ, or ``None``."""
    if isinstance(a, torch.Tensor):
        return None if isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b) else where
    if isinstance(a, dict):
        if not isinstance(b, dict) or a.keys() != b.keys():
            return where
        return next((d for k in a if (d := _tensors_equal(a[k], b[k], f"{where}/{k}")) is not None), None)
    if isinstance(a, (list, tuple)):
        if type(a) is not type(b) or len(a) != len(b):
            return where
        return next((d for i, (x, y) in enumerate(zip(a, b)) if (d := _tensors_equal(x, y, f"{where}[{i}]"))
                     is not None), None)
    return None if a == b else where


class SaveEveryBatch(Callback):
    def __init__(self, dirpath: Path) -> None:
        self.dirpath = dirpath
        self.paths: list[str] = []

    def on_train_batch_end(self, trainer: Any, *args: Any) -> None:
        self.paths.append(str(self.dirpath / f"batch-{len(self.paths)}.ckpt"))
        trainer.save_checkpoint(self.paths[-1])


def test_async_checkpoints_hold_what_synchronous_ones_hold_and_resume_bit_exact(tmp_path: Path) -> None:
    options = {"max_epochs": 2, "accumulate_grad_batches": 3, "val_check_interval": 0.5}
    sync_saver = SaveEveryBatch(tmp_path / "sync")
    expected, _ = fit({}, options, [sync_saver])
    async_saver = SaveEveryBatch(tmp_path / "async")
    got, trainer = fit({}, {**options, "plugins": [AsyncCheckpointIO()]}, [async_saver])
    assert isinstance(trainer.strategy.checkpoint_io, AsyncCheckpointIO)
    assert first_difference(expected, got) is None
    assert len(async_saver.paths) == 16
    for sync_path, async_path in zip(sync_saver.paths, async_saver.paths):
        assert _tensors_equal(_load(sync_path), _load(async_path)) is None, async_path
    for index in (4, 7, 13):  # mid-window in epoch 0, after its mid-epoch validation, in epoch 1
        resumed, _ = fit({}, options, ckpt_path=async_saver.paths[index])
        assert first_difference(expected, resumed) is None, async_saver.paths[index]


def test_background_writes_alongside_forked_dataloader_workers(tmp_path: Path) -> None:
    # workers are forked at every epoch start, while the epoch's last checkpoint may still be written
    options = {"max_epochs": 3}
    expected, _ = fit({"workers": 2}, options)
    checkpoint = ModelCheckpoint(dirpath=tmp_path, every_n_train_steps=1, save_last=True, async_save=True)
    got, trainer = fit({"workers": 2}, options, [checkpoint])
    assert first_difference(expected, got) is None
    assert _load(tmp_path / "last.ckpt")["global_step"] == trainer.global_step == 24
