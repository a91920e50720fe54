"""Drills: a checkpoint's loop counters are checked before a resume uses them; a fit without an optimizer
still counts its steps, so ``max_steps`` ends it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

import torchbolt as pl
from tests.helpers.models import ClassifierModule, quiet_trainer

pytestmark = pytest.mark.filterwarnings("ignore:.*does not have many workers:UserWarning")


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    path = tmp_path_factory.mktemp("source") / "good.ckpt"
    trainer = quiet_trainer(limit_train_batches=2, limit_val_batches=1, max_epochs=1)
    trainer.fit(ClassifierModule())
    trainer.save_checkpoint(path)
    return torch.load(path, weights_only=True)


def _edited(tmp_path: Path, checkpoint: dict[str, Any], edit: Any) -> Path:
    import copy

    checkpoint = copy.deepcopy(checkpoint)
    edit(checkpoint)
    path = tmp_path / "edited.ckpt"
    torch.save(checkpoint, path)
    return path


def _progress(checkpoint: dict[str, Any]) -> dict[str, Any]:
    return checkpoint["loops"]["fit_loop"]["torchbolt"]["progress"]


@pytest.mark.parametrize(("key", "value"), [("current_epoch", -5), ("global_step", -5), ("batch_idx", "3"),
                                            ("epoch_started", 2)])
def test_a_tampered_counter_is_refused_naming_the_key_and_the_file(tmp_path: Path, saved: dict[str, Any], key: str,
                                                                   value: Any) -> None:
    path = _edited(tmp_path, saved, lambda c: _progress(c).__setitem__(key, value))
    model = ClassifierModule()
    trainer = quiet_trainer(limit_train_batches=2, limit_val_batches=0, max_epochs=3)
    with pytest.raises(ValueError, match=rf"'{key}' in '.*edited\.ckpt'"):
        trainer.fit(model, ckpt_path=path)
    assert trainer.global_step == 0


def test_a_loop_state_key_named_like_a_method_cannot_replace_it(tmp_path: Path, saved: dict[str, Any]) -> None:
    path = _edited(tmp_path, saved, lambda c: _progress(c).update(restore=1, state_dict="x", advance_epoch=None))
    trainer = quiet_trainer(limit_train_batches=2, limit_val_batches=0, max_epochs=2)
    trainer.fit(ClassifierModule(), ckpt_path=path)
    assert trainer.current_epoch == 2 and trainer.global_step == 4  # resumed after epoch 0, trained epoch 1


def test_a_tampered_counter_of_a_lightning_style_checkpoint_is_refused(tmp_path: Path, saved: dict[str, Any]) -> None:
    def as_other_tool(c: dict[str, Any]) -> None:
        del c["loops"]["fit_loop"]["torchbolt"]
        c["global_step"] = -5

    path = _edited(tmp_path, saved, as_other_tool)
    with pytest.raises(ValueError, match=r"global_step=-5"):
        quiet_trainer(limit_train_batches=2, max_epochs=3).fit(ClassifierModule(), ckpt_path=path)


class _NoOptimizer(pl.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(4, 1)
        self.batches = 0

    def training_step(self, batch, batch_idx):
        self.batches += 1
        return self.layer(batch[0]).sum()

    def configure_optimizers(self):
        return None


@pytest.mark.filterwarnings("ignore:`configure_optimizers` returned `None`")
@pytest.mark.parametrize("accumulate", [1, 2])
def test_no_optimizer_with_max_steps_stops_at_that_step(accumulate: int) -> None:
    model = _NoOptimizer()
    trainer = pl.Trainer(max_steps=3, max_epochs=-1, accumulate_grad_batches=accumulate, logger=False,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(model, DataLoader(TensorDataset(torch.randn(8, 4)), batch_size=2))
    assert trainer.global_step == 3
    assert model.batches == 3 * accumulate
