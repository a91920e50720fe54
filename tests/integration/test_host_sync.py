"""torchbolt synchronizes with the device only when a logger flushes (or a progress bar refreshes)."""

from __future__ import annotations

import sys
from collections import Counter
from typing import Any

import pytest
import torch

from tests.helpers.loggers import RecordingLogger
from tests.helpers.models import ClassifierModule, loader, quiet_trainer

_SYNCING = ("item", "tolist", "__float__", "__int__", "__bool__", "__index__", "numpy", "__format__", "__repr__")


@pytest.fixture
def sync_calls(monkeypatch: pytest.MonkeyPatch) -> Counter[str]:
    """Counts host-syncing tensor calls made from torchbolt's own code, keyed by the calling function."""
    calls: Counter[str] = Counter()
    package_dir = "/torchbolt/"

    def wrap(name: str) -> None:
        original = getattr(torch.Tensor, name)

        def counted(self: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
            caller = sys._getframe(1)
            if package_dir in caller.f_code.co_filename.replace("\\", "/"):
                calls[f"{caller.f_code.co_name}:{name}"] += 1
            return original(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, name, counted)

    for name in _SYNCING:
        wrap(name)
    return calls


class StepLogging(ClassifierModule):
    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        loss = torch.nn.functional.cross_entropy(self(x), y)
        self.log("loss", loss)
        self.log("loss_mean", loss, on_step=False, on_epoch=True)
        return loss


def test_200_steps_sync_only_at_the_four_logger_flushes(sync_calls: Counter[str]) -> None:
    logger = RecordingLogger()
    trainer = quiet_trainer(logger=logger, log_every_n_steps=50, limit_val_batches=0)
    trainer.fit(StepLogging(), loader(n=200 * 4, batch_size=4))
    assert trainer.global_step == 200
    # 4 step flushes of "loss" plus one epoch flush of "loss_mean"; every sync is the flush's conversion
    assert sum(sync_calls.values()) == 5, sync_calls
    assert set(sync_calls) == {"to_numbers:item"}
    assert logger.steps_of("loss") == [49, 99, 149, 199]


def test_no_sync_at_all_without_logger_or_progress_bar(sync_calls: Counter[str]) -> None:
    trainer = quiet_trainer(limit_val_batches=4, max_epochs=2)
    trainer.fit(StepLogging(), loader(n=200, batch_size=4), loader(n=32))
    assert trainer.global_step == 100
    assert sum(sync_calls.values()) == 0, sync_calls
