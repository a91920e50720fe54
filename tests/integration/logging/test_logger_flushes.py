"""What a logger flush costs in a fit, and that buffered log files are complete where they are read.

- a flush of several logged values is one device->host copy, and the numbers are exactly ``.item()``'s;
- loggers are called on flush steps only;
- the built-in file loggers are saved on a clock, yet their files hold every row at the end of the
  training loop, at the end of the fit, and up to a checkpoint even when the process is SIGKILLed
  right after writing it.
"""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import torch

import torchbolt.trainer.flush as flush
from tests.helpers.loggers import RecordingLogger
from tests.helpers.models import ClassifierModule, loader, quiet_trainer
from torchbolt.callbacks import Callback
from torchbolt.loggers import CSVLogger

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from _resume_workload import ResumeModel, make_trainer, seed

KILL_SCRIPT = Path(__file__).with_name("_kill_after_checkpoint.py")


def _csv_rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


# ---------------------------------------------------------------------------- one copy per flush
class SeveralValues(ClassifierModule):
    """Logs four values of three dtypes each step and remembers what ``.item()`` gives for them."""

    def __init__(self) -> None:
        super().__init__()
        self.expected: list[dict[str, Any]] = []

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        loss = torch.nn.functional.cross_entropy(self(x), y)
        # loss64 needs float64's mantissa: rounding it through float32 would change it
        values = {"loss": loss, "loss64": loss.double() * (1 + 2**-40), "loss16": loss.to(torch.bfloat16),
                  "norm": self.net[0].weight.norm()}
        for name, value in values.items():
            self.log(name, value)
        self.expected.append({name: value.item() for name, value in values.items()})
        return loss


@pytest.fixture
def host_reads(monkeypatch: pytest.MonkeyPatch) -> Counter[str]:
    """``Tensor.cpu`` / ``.item`` / ``.tolist`` calls made from torchbolt's code, keyed ``function:method``."""
    calls: Counter[str] = Counter()
    for name in ("cpu", "item", "tolist"):
        original = getattr(torch.Tensor, name)

        def counted(self: torch.Tensor, *args: Any, _name: str = name, _original: Any = original, **kw: Any) -> Any:
            caller = sys._getframe(1).f_code
            if "/torchbolt/" in caller.co_filename.replace("\\", "/"):
                calls[f"{caller.co_name}:{_name}"] += 1
            return _original(self, *args, **kw)

        monkeypatch.setattr(torch.Tensor, name, counted)
    return calls


def test_a_flush_of_several_values_is_one_host_copy_and_the_values_equal_item(
        host_reads: Counter[str], monkeypatch: pytest.MonkeyPatch) -> None:
    # host tensors are normally read with `.item()` (there is nothing to copy); without a CUDA device
    # here, treat them as an accelerator's so the fit takes the path a GPU run takes
    monkeypatch.setattr(flush, "_HOST_DEVICE_TYPES", frozenset())
    logger = RecordingLogger()
    model = SeveralValues()
    trainer = quiet_trainer(logger=logger, log_every_n_steps=3, limit_val_batches=0)
    trainer.fit(model, loader(n=9 * 8, batch_size=8))
    assert logger.steps_of("loss") == [2, 5, 8]
    # one copy per flush; the other reads are of the copied host buffer (one per dtype)
    assert host_reads["copy_to_host:cpu"] == 3
    assert sum(n for key, n in host_reads.items() if key.endswith((":cpu", ":item"))) == 3, host_reads
    for step, sent in logger.metrics:
        expected = model.expected[step]
        assert {k: sent[k] for k in expected} == expected
        assert all(type(sent[k]) is float for k in expected)
    assert all(e["loss64"] != torch.tensor(e["loss64"], dtype=torch.float32).item() for e in model.expected)


# ---------------------------------------------------------------------------- no calls between flushes
class CallLog(RecordingLogger):
    """Records the Trainer's ``global_step`` at every logger call."""

    def __init__(self) -> None:
        super().__init__()
        self.trainer: Any = None
        self.calls: list[tuple[str, int]] = []

    def _note(self, method: str) -> None:
        self.calls.append((method, self.trainer.global_step if self.trainer is not None else -1))

    def log_metrics(self, metrics: dict[str, Any], step: int | None = None) -> None:
        self._note("log_metrics")
        super().log_metrics(metrics, step)

    def log_hyperparams(self, params: Any, *args: Any, **kwargs: Any) -> None:
        self._note("log_hyperparams")

    def log_graph(self, model: Any, input_array: Any = None) -> None:
        self._note("log_graph")

    def save(self) -> None:
        self._note("save")
        super().save()

    def finalize(self, status: str) -> None:
        self._note("finalize")


def test_loggers_are_called_on_flush_steps_only() -> None:
    logger = CallLog()
    trainer = quiet_trainer(logger=logger, log_every_n_steps=4, limit_val_batches=0)
    logger.trainer = trainer
    trainer.fit(ClassifierModule(), loader(n=12 * 8, batch_size=8))
    assert trainer.global_step == 12
    assert {step for _, step in logger.calls} == {0, 4, 8, 12}  # setup, then the three flush steps
    assert [step for method, step in logger.calls if method == "log_metrics"] == [4, 8, 12]


class SaveCountingCSV(CSVLogger):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.trainer: Any = None
        self.save_steps: list[int] = []

    def save(self) -> None:
        self.save_steps.append(self.trainer.global_step)
        super().save()


class ReadLogsAtTrainEnd(Callback):
    """What a user callback reading ``metrics.csv`` in ``on_train_end`` finds."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.rows: list[dict[str, str]] = []

    def on_train_end(self, trainer: Any, pl_module: Any) -> None:
        self.rows = _csv_rows(self.path)


def test_file_logger_saves_are_deferred_but_its_file_is_complete_at_train_end_and_after_fit(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(flush, "SAVE_INTERVAL_S", 3600.0)  # no save on the clock, whatever the machine's load
    logger = SaveCountingCSV(tmp_path, name="", version=0)
    reader = ReadLogsAtTrainEnd(tmp_path / "version_0" / "metrics.csv")
    trainer = quiet_trainer(logger=logger, log_every_n_steps=2, callbacks=[reader], max_epochs=2,
                            limit_val_batches=2)
    logger.trainer = trainer
    trainer.fit(ClassifierModule(), loader(n=10 * 8, batch_size=8), loader(n=16))
    # 10 step sends and 2 validation sends; saved at fit start, at the first send, at the end of each
    # validation run (here, each epoch's end) and by `finalize`: never per send
    assert logger.save_steps == [0, 2, 10, 20, 20]
    rows = _csv_rows(tmp_path / "version_0" / "metrics.csv")
    assert [int(r["step"]) for r in rows if r["train_loss"]] == [1, 3, 5, 7, 9, 11, 13, 15, 17, 19]
    assert [int(r["step"]) for r in rows if r["val_loss"]] == [9, 19]
    assert reader.rows == rows  # nothing reached the file after on_train_end


# ---------------------------------------------------------------------------- SIGKILL after a checkpoint
def _tensorboard_steps(log_dir: Path, tag: str) -> list[int]:
    event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
    accumulator = event_accumulator.EventAccumulator(str(log_dir))
    accumulator.Reload()
    return [event.step for event in accumulator.Scalars(tag)]


def test_log_rows_up_to_a_checkpoint_survive_a_sigkill_and_resume_exactly(
        tmp_path: Path, subprocess_env: dict[str, str]) -> None:
    pytest.importorskip("tensorboard")
    killed_dir, ckpt = tmp_path / "killed", tmp_path / "mid.ckpt"
    after_batch = 11  # epoch 1, batch 3 (8 batches an epoch)
    proc = subprocess.run([sys.executable, str(KILL_SCRIPT), str(killed_dir), str(ckpt), str(after_batch)],
                          env=subprocess_env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]
    assert ckpt.is_file()

    killed_csv = killed_dir / "csv" / "version_0" / "metrics.csv"
    on_disk = _csv_rows(killed_csv)
    # batches 0..9 sent their step values before the checkpoint after batch 10 (the 11th) was written
    assert [int(r["step"]) for r in on_disk if r["train_loss_step"]] == list(range(10))
    assert [int(r["step"]) for r in on_disk if r["val_loss"]] == [7]
    assert _tensorboard_steps(killed_dir / "tb" / "version_0", "train_loss_step") == list(range(10))

    def fit_with_csv(log_dir: Path, ckpt_path: str | None) -> None:
        seed()
        trainer = make_trainer([], max_epochs=2, log_every_n_steps=1,
                               logger=CSVLogger(log_dir, name="csv", version=0))
        trainer.fit(ResumeModel(), ckpt_path=ckpt_path)

    fit_with_csv(tmp_path / "full", None)
    with pytest.warns(UserWarning, match="exists and is not empty"):
        fit_with_csv(killed_dir, str(ckpt))  # the resumed run appends to the killed run's file
    full = _csv_rows(tmp_path / "full" / "csv" / "version_0" / "metrics.csv")
    assert _csv_rows(killed_csv) == full
    assert os.path.getsize(killed_csv) == os.path.getsize(tmp_path / "full" / "csv" / "version_0" / "metrics.csv")
