"""SIGTERM and SIGUSR1 during a single-process fit: handled at the next step boundary, handlers restored."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

import torchbolt as pl
from torchbolt.demos.boring_classes import BoringModel
from torchbolt.utilities.exceptions import SIGTERMException


@pytest.fixture(autouse=True)
def _default_signal_actions() -> Iterator[None]:
    # an ignored SIGUSR1 inherited from whatever started the test run would count as the user's own choice
    previous = {signum: signal.signal(signum, signal.SIG_DFL) for signum in (signal.SIGTERM, signal.SIGUSR1)}
    yield
    for signum, handler in previous.items():
        signal.signal(signum, handler)


class _SignalAt(BoringModel):
    def __init__(self, signum: int, batch: int) -> None:
        super().__init__()
        self.signum, self.batch = signum, batch

    def training_step(self, batch, batch_idx):  # type: ignore[no-untyped-def]
        if self.global_step == self.batch:
            os.kill(os.getpid(), self.signum)
        return super().training_step(batch, batch_idx)


def _trainer(root: Path, **kwargs: object) -> pl.Trainer:
    return pl.Trainer(accelerator="cpu", max_epochs=1, limit_train_batches=10, limit_val_batches=0, logger=False,
                      enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False,
                      default_root_dir=root, **kwargs)


def test_sigterm_stops_fit_at_the_next_step_boundary_and_restores_handlers(tmp_path: Path) -> None:
    before = signal.getsignal(signal.SIGTERM)
    trainer = _trainer(tmp_path)
    with pytest.raises(SIGTERMException):
        trainer.fit(_SignalAt(signal.SIGTERM, batch=2))
    assert trainer.global_step == 3  # the batch in flight finished, then fit stopped
    assert trainer.received_sigterm and trainer.interrupted
    assert signal.getsignal(signal.SIGTERM) == before
    assert not list(tmp_path.glob("hpc_ckpt_*"))  # outside SLURM, SIGTERM does not write a checkpoint


def test_sigusr1_saves_a_checkpoint_that_ckpt_path_hpc_resumes(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = _SignalAt(signal.SIGUSR1, batch=4)
    trainer = _trainer(tmp_path)
    with pytest.raises(SIGTERMException):
        trainer.fit(model)
    checkpoint = tmp_path / "hpc_ckpt_1.ckpt"
    assert checkpoint.is_file()
    assert torch.load(checkpoint, weights_only=True)["global_step"] == 5
    resumed = _trainer(tmp_path)
    resumed.fit(BoringModel(), ckpt_path="hpc")
    assert resumed.ckpt_path == str(checkpoint) and resumed.global_step == 10


def test_ckpt_path_hpc_without_a_checkpoint_explains(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="hpc_ckpt"):
        _trainer(tmp_path).fit(BoringModel(), ckpt_path="hpc")


def test_a_user_sigusr1_handler_is_kept(tmp_path: Path) -> None:
    calls: list[int] = []
    previous = signal.signal(signal.SIGUSR1, lambda signum, frame: calls.append(signum))
    try:
        trainer = _trainer(tmp_path)
        trainer.fit(_SignalAt(signal.SIGUSR1, batch=2))  # the user's handler runs; training is not stopped
        assert calls == [signal.SIGUSR1] and trainer.global_step == 10
    finally:
        signal.signal(signal.SIGUSR1, previous)


def test_hpc_checkpoint_paths_count_up(tmp_path: Path) -> None:
    from torchbolt.trainer.signals import hpc_resume_path, hpc_save_path

    assert hpc_resume_path(str(tmp_path)) is None
    assert hpc_save_path(str(tmp_path)).endswith("hpc_ckpt_1.ckpt")
    (tmp_path / "hpc_ckpt_1.ckpt").write_bytes(b"")
    (tmp_path / "hpc_ckpt_12.ckpt").write_bytes(b"")
    assert hpc_resume_path(str(tmp_path)).endswith("hpc_ckpt_12.ckpt")  # type: ignore[union-attr]
    assert hpc_save_path(str(tmp_path)).endswith("hpc_ckpt_13.ckpt")
