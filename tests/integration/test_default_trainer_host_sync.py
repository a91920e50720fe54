"""A default Trainer (progress bar, default logger, checkpointing, summary) reads logged tensors on the host
only on the steps where the bar redraws or the logger flushes: every other step runs without a host sync."""

from __future__ import annotations

import csv
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import torchbolt as pl
from torchbolt.callbacks import Callback, TQDMProgressBar
from torchbolt.loggers import CSVLogger, TensorBoardLogger

BATCHES = 40
LOG_EVERY = 10
# every way a tensor's value reaches Python (on an accelerator each one waits for the device)
_CONVERSIONS = ("item", "tolist", "cpu", "numpy", "__float__", "__int__", "__bool__", "__index__", "__format__",
                "__repr__")
_DATALOADER_DIR = "/torch/utils/data/"


class CurrentBatch(Callback):
    """Makes the running training batch index visible to the counter (-1 before the first batch)."""

    index = -1

    def on_train_batch_start(self, trainer: Any, pl_module: Any, batch: Any, batch_idx: int) -> None:
        CurrentBatch.index = batch_idx


class LossToBar(pl.LightningModule):
    """Logs its loss tensor to the bar and the logger every step, as most users' modules do."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 2))

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        loss = F.cross_entropy(self.net(x), y)
        self.log("train_loss", loss, prog_bar=True)
        return loss

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1)


def _data() -> DataLoader:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(BATCHES * 4, 8, generator=g)
    return DataLoader(TensorDataset(x, (x.sum(dim=1) > 0).long()), batch_size=4)


@pytest.fixture
def conversions(monkeypatch: pytest.MonkeyPatch) -> Counter[int]:
    """Counts every tensor-to-Python conversion during the test, whoever makes it (torchbolt, the logger and
    its writer, tqdm, the user's module), keyed by the training batch running at the time.

    Only the DataLoader's own conversion is left out: starting an epoch's iterator draws its base seed
    with ``.item()`` on a CPU generator, in any training loop, framework or not.
    """
    calls: Counter[int] = Counter()
    CurrentBatch.index = -1

    def wrap(name: str) -> None:
        original = getattr(torch.Tensor, name)

        def counted(self: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
            if _DATALOADER_DIR not in sys._getframe(1).f_code.co_filename.replace("\\", "/"):
                calls[CurrentBatch.index] += 1
            return original(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, name, counted)

    for name in _CONVERSIONS:
        wrap(name)
    return calls


def _logged_steps(logger: Any) -> list[int]:
    """The steps at which the default logger recorded ``train_loss``, read back from its files."""
    if isinstance(logger, TensorBoardLogger):
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

        events = EventAccumulator(logger.log_dir)
        events.Reload()
        return [event.step for event in events.Scalars("train_loss")]
    assert isinstance(logger, CSVLogger), type(logger)
    with open(Path(logger.log_dir) / "metrics.csv", newline="") as f:
        return [int(row["step"]) for row in csv.DictReader(f) if row.get("train_loss")]


@pytest.mark.parametrize("mode", ["bar", "plain"])
def test_a_default_trainer_converts_logged_tensors_only_when_the_bar_redraws_or_the_logger_flushes(
        mode: str, tmp_path: Path, conversions: Counter[int], capsys: pytest.CaptureFixture[str]) -> None:
    # the default bar's class with intervals far longer than the fit: only the redraws that always happen
    # remain (bar: the first and the last batch, then the epoch's end; plain: the epoch's line)
    bar = TQDMProgressBar(mode=mode, refresh_interval=3600, plain_interval=3600)
    trainer = pl.Trainer(max_epochs=1, default_root_dir=tmp_path, log_every_n_steps=LOG_EVERY,
                         callbacks=[CurrentBatch(), bar])
    assert isinstance(trainer.logger, (TensorBoardLogger, CSVLogger))  # whichever default this install picks
    trainer.fit(LossToBar(), _data())
    assert trainer.global_step == BATCHES

    redraws = {0, BATCHES - 1} if mode == "bar" else {BATCHES - 1}
    flushes = set(range(LOG_EVERY - 1, BATCHES, LOG_EVERY))  # batches 9, 19, 29, 39
    # no step outside the redraws and flushes converts anything (those steps never wait for the device),
    # and neither does the setup before the first batch (the model summary, the logger's directory)
    assert set(conversions) <= redraws | flushes, sorted(conversions.items())

    # what the skipped conversions would have fed still arrives: the bar shows the loss, the logger has it
    out = capsys.readouterr()
    assert "train_loss=" in out.out + out.err
    assert conversions[BATCHES - 1] > 0  # the final redraw (or line) reads the loss
    assert _logged_steps(trainer.logger) == sorted(flushes)


def test_every_step_converts_when_the_bar_redraws_every_batch(tmp_path: Path, conversions: Counter[int],
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    # the counter sees what it should: an explicit refresh_rate=1 bar reads the loss on every step
    bar = TQDMProgressBar(refresh_rate=1, mode="bar")
    trainer = pl.Trainer(max_epochs=1, default_root_dir=tmp_path, log_every_n_steps=LOG_EVERY,
                         callbacks=[CurrentBatch(), bar])
    trainer.fit(LossToBar(), _data())
    assert all(conversions[i] > 0 for i in range(BATCHES)), sorted(conversions.items())
