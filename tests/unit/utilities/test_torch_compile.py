"""``torch.compile``: a compiled LightningModule or compiled submodules train, validate and checkpoint
with plain state-dict keys, and logging every step neither breaks nor re-specializes the graph."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
import torch._dynamo
from torch import Tensor, nn
from torch._dynamo.utils import counters

import torchbolt as pl
from torchbolt.demos.boring_classes import BoringModel
from torchbolt.utilities.compile import to_uncompiled


class LoggingModel(BoringModel):
    def __init__(self, compile_submodule: str | None = None) -> None:
        super().__init__()
        if compile_submodule is not None:
            self.layer = torch.compile(self.layer, backend=compile_submodule)

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        loss = self.loss(self(batch))
        self.log("train_loss", loss, prog_bar=True)  # every step
        self.log("step_number", float(batch_idx))
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self.log("val_loss", self.loss(self(batch)))


@pytest.fixture(autouse=True)
def _fresh_dynamo() -> None:
    torch._dynamo.reset()
    counters.clear()


def _fit(model: Any, root: Path, **kwargs: Any) -> pl.Trainer:
    kwargs.setdefault("limit_val_batches", 2)
    trainer = pl.Trainer(accelerator="cpu", max_epochs=1, limit_train_batches=6, num_sanity_val_steps=0,
                         logger=False, enable_progress_bar=False, enable_model_summary=False,
                         default_root_dir=root, **kwargs)
    trainer.fit(model)
    return trainer


@pytest.mark.parametrize("backend", ["eager", "aot_eager"])
def test_compiled_lightning_module_trains_validates_and_checkpoints(backend: str, tmp_path: Path) -> None:
    model = LoggingModel()
    before = model.layer.weight.detach().clone()
    trainer = _fit(torch.compile(model, backend=backend), tmp_path)
    assert trainer.lightning_module is model
    assert not torch.equal(model.layer.weight, before)
    assert {"train_loss", "val_loss"} <= set(trainer.callback_metrics)
    assert counters["stats"]["unique_graphs"] >= 1  # forward really ran compiled
    trainer.save_checkpoint(tmp_path / "compiled.ckpt")
    state = torch.load(tmp_path / "compiled.ckpt", weights_only=True)["state_dict"]
    assert list(state) == ["layer.weight", "layer.bias"]


def test_logging_every_step_causes_no_graph_break_or_recompile(tmp_path: Path) -> None:
    _fit(torch.compile(LoggingModel(), backend="eager"), tmp_path, limit_val_batches=0)
    assert dict(counters["graph_break"]) == {}
    assert counters["stats"]["unique_graphs"] == 1  # one graph for six steps, each logging two values


def test_compiled_submodule_trains_and_saves_keys_without_orig_mod(tmp_path: Path) -> None:
    model = LoggingModel(compile_submodule="eager")
    trainer = _fit(model, tmp_path)
    assert dict(counters["graph_break"]) == {}
    assert list(model.state_dict()) == ["layer.weight", "layer.bias"]
    trainer.save_checkpoint(tmp_path / "sub.ckpt")
    restored = LoggingModel.load_from_checkpoint(tmp_path / "sub.ckpt")
    assert torch.equal(restored.layer.weight, model.layer._orig_mod.weight)


def test_plain_and_compiled_checkpoints_load_into_each_other() -> None:
    plain = LoggingModel()
    compiled = LoggingModel(compile_submodule="eager")
    compiled.load_state_dict(plain.state_dict())
    assert torch.equal(compiled.layer._orig_mod.weight, plain.layer.weight)
    legacy_keys = {"layer._orig_mod.weight": torch.zeros(2, 32), "layer._orig_mod.bias": torch.zeros(2)}
    compiled.load_state_dict(legacy_keys)  # keys written by torch before the prefix was dropped
    assert torch.count_nonzero(compiled.layer._orig_mod.weight) == 0
    plain.load_state_dict(compiled.state_dict())
    assert torch.count_nonzero(plain.layer.weight) == 0


def test_resume_from_checkpoint_into_a_compiled_module(tmp_path: Path) -> None:
    first = _fit(LoggingModel(), tmp_path, limit_val_batches=0)
    first.save_checkpoint(tmp_path / "plain.ckpt")
    model = LoggingModel(compile_submodule="eager")
    trainer = pl.Trainer(accelerator="cpu", max_epochs=2, limit_train_batches=6, limit_val_batches=0,
                         logger=False, enable_progress_bar=False, enable_model_summary=False,
                         default_root_dir=tmp_path)
    trainer.fit(model, ckpt_path=str(tmp_path / "plain.ckpt"))
    assert trainer.global_step == 12


def test_to_uncompiled_restores_the_eager_forward(tmp_path: Path) -> None:
    model = LoggingModel()
    _fit(torch.compile(model, backend="eager"), tmp_path, limit_val_batches=0)
    assert "forward" in model.__dict__
    assert to_uncompiled(model) is model
    assert "forward" not in model.__dict__
    nn.Module.__call__(model, torch.randn(1, 32))  # the eager forward runs
