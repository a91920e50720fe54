"""The Trainer's private state stays private: loops and plug-ins work through the run context."""

from __future__ import annotations

import re
from pathlib import Path

import torch
from torch.utils.data import DataLoader, TensorDataset

import torchbolt as pl
from torchbolt.trainer.context import RunContext

SRC = Path(__file__).resolve().parents[3] / "src" / "torchbolt"


def test_no_module_outside_trainer_py_reads_trainer_private_attributes() -> None:
    pattern = re.compile(r"\btrainer\._\w+|getattr\(\s*trainer\s*,\s*['\"]_")
    offenders = []
    for path in SRC.rglob("*.py"):
        if path == SRC / "trainer" / "trainer.py":
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if pattern.search(line):
                offenders.append(f"{path.relative_to(SRC)}:{number}: {line.strip()}")
    assert not offenders, "private Trainer attributes used outside trainer.py:\n" + "\n".join(offenders)


class _Counting(pl.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(3, 1)
        self.seen_contexts: list[RunContext | None] = []

    def training_step(self, batch, batch_idx):
        self.seen_contexts.append(self.trainer.run_context)
        loss = self.layer(batch[0]).pow(2).mean()
        self.log("loss", loss)
        return loss

    def validation_step(self, batch, batch_idx):
        self.log("val_loss", self.layer(batch[0]).pow(2).mean())

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_a_run_has_one_context_that_owns_the_trainers_state() -> None:
    model = _Counting()
    trainer = pl.Trainer(max_steps=3, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False)
    assert trainer.run_context is None
    trainer.fit(model, DataLoader(TensorDataset(torch.randn(12, 3)), batch_size=4))
    ctx = trainer.run_context
    assert ctx is not None and set(map(id, model.seen_contexts)) == {id(ctx)}
    # the Trainer's properties read the context's owners
    assert trainer.global_step == ctx.progress.global_step == 3
    assert trainer.callback_metrics is ctx.metrics.store.callback and "loss" in trainer.callback_metrics
    assert trainer.num_training_batches == ctx.sizes.train == 3
    assert trainer.run_context.fit_loop is ctx.fit_loop and trainer.fit_loop.epoch_loop._batches_that_stepped == 3
    # a second run gets a fresh context
    trainer.validate(model, DataLoader(TensorDataset(torch.randn(4, 3)), batch_size=4), verbose=False)
    assert trainer.run_context is not ctx


def test_fit_loop_exposes_lightnings_limits_and_lets_callbacks_extend_training() -> None:
    class OneMoreEpoch(pl.Callback):
        def on_fit_start(self, trainer, pl_module):
            trainer.fit_loop.max_epochs += 1

    trainer = pl.Trainer(max_epochs=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, callbacks=[OneMoreEpoch()])
    trainer.fit(_Counting(), DataLoader(TensorDataset(torch.randn(8, 3)), batch_size=4))
    assert trainer.current_epoch == 2 and trainer.max_epochs == 2
    assert trainer.fit_loop.max_steps == -1 and trainer.fit_loop.min_epochs is None
