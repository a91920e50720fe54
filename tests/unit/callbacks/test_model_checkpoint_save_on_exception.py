"""``ModelCheckpoint(save_on_exception=True)`` keeps the state a failed fit was in."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

import torchbolt as pl
from torchbolt.callbacks import ModelCheckpoint


class _FailsAtStep(pl.LightningModule):
    def __init__(self, fail_at: int) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(3, 1)
        self.fail_at = fail_at

    def training_step(self, batch, batch_idx):
        if self.global_step == self.fail_at:
            raise RuntimeError("disk on fire")
        return self.layer(batch[0]).pow(2).mean()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def _fit(tmp_path: Path, callback: ModelCheckpoint, fail_at: int) -> pl.Trainer:
    trainer = pl.Trainer(default_root_dir=tmp_path, callbacks=[callback], max_epochs=3, logger=False,
                         enable_progress_bar=False, enable_model_summary=False)
    with pytest.raises(RuntimeError, match="disk on fire"):
        trainer.fit(_FailsAtStep(fail_at), DataLoader(TensorDataset(torch.randn(8, 3)), batch_size=2))
    return trainer


def test_a_failed_fit_leaves_a_checkpoint_of_the_moment_it_failed(tmp_path: Path) -> None:
    callback = ModelCheckpoint(dirpath=tmp_path / "ckpts", filename="crash-{step}", save_on_exception=True,
                               every_n_epochs=10, save_last=True)
    _fit(tmp_path, callback, fail_at=6)
    saved = torch.load(tmp_path / "ckpts" / "crash-step=6.ckpt", weights_only=True)
    assert saved["global_step"] == 6 and saved["state_dict"]
    assert (tmp_path / "ckpts" / "last.ckpt").exists()


def test_without_the_flag_nothing_is_written_on_failure(tmp_path: Path) -> None:
    _fit(tmp_path, ModelCheckpoint(dirpath=tmp_path / "ckpts", every_n_epochs=10), fail_at=3)
    assert list((tmp_path / "ckpts").glob("*.ckpt")) == []


def test_a_step_already_saved_is_not_written_twice(tmp_path: Path) -> None:
    # epoch 0 ends at step 4 and is saved; the failure at the first step of epoch 1 is still step 4
    callback = ModelCheckpoint(dirpath=tmp_path / "ckpts", save_on_exception=True)
    _fit(tmp_path, callback, fail_at=4)
    assert sorted(p.name for p in (tmp_path / "ckpts").glob("*.ckpt")) == ["epoch=0-step=4.ckpt"]


def test_format_checkpoint_name_joins_a_prefix() -> None:
    callback = ModelCheckpoint(dirpath="/ckpts", filename="{epoch}")
    assert callback.format_checkpoint_name({"epoch": 3}, prefix="run7") == "/ckpts/run7-epoch=3.ckpt"
    assert callback.format_checkpoint_name({"epoch": 3}, ver=2, prefix="run7") == "/ckpts/run7-epoch=3-v2.ckpt"
