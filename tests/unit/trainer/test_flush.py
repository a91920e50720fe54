"""A logger flush: logged tensors become numbers with one host copy; file loggers are saved on a clock."""

from __future__ import annotations

import csv
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import torch

from tests.helpers.loggers import RecordingLogger
from torchbolt.loggers import CSVLogger
from torchbolt.trainer.flush import LoggerSaves, copy_to_host, to_numbers


@pytest.fixture
def tensor_reads(monkeypatch: pytest.MonkeyPatch) -> Counter[str]:
    """Counts ``Tensor.cpu`` / ``.item`` / ``.tolist`` calls (the ways a value leaves the device)."""
    calls: Counter[str] = Counter()
    for name in ("cpu", "item", "tolist"):
        original = getattr(torch.Tensor, name)

        def counted(self: torch.Tensor, *args: Any, _name: str = name, _original: Any = original, **kw: Any) -> Any:
            calls[_name] += 1
            return _original(self, *args, **kw)

        monkeypatch.setattr(torch.Tensor, name, counted)
    return calls


def _mixed_values() -> list[torch.Tensor]:
    return [
        torch.tensor(0.1),                          # float32
        torch.tensor(0.1, dtype=torch.float64),     # not representable in float32: must not be rounded
        torch.tensor(2**60 + 1),                    # int64 beyond float64's integers
        torch.tensor(1.7, dtype=torch.bfloat16),
        torch.tensor(1.1, dtype=torch.float16),
        torch.tensor(True),
        torch.tensor([[2.5]]),                      # one element, two dimensions
        torch.tensor(0.3, requires_grad=True) * 2,  # logged with enable_graph=True
        torch.tensor(0.7),
    ]


def test_copy_to_host_is_one_copy_and_equals_item_with_every_dtype(tensor_reads: Counter[str]) -> None:
    values = _mixed_values()
    expected = [v.item() for v in values]
    tensor_reads.clear()
    got = copy_to_host(values)
    assert got == expected
    assert [type(v) for v in got] == [type(v) for v in expected]
    assert got[1] == 0.1 and got[2] == 2**60 + 1  # the float64 and the large int are exact
    assert tensor_reads["cpu"] == 1 and tensor_reads["item"] == 0


def test_copy_to_host_of_one_dtype_is_one_copy(tensor_reads: Counter[str]) -> None:
    values = [torch.tensor(float(i) / 3) for i in range(6)]
    expected = [v.item() for v in values]
    tensor_reads.clear()
    assert copy_to_host(values) == expected
    assert tensor_reads == Counter({"cpu": 1, "tolist": 1})


def test_to_numbers_keeps_non_tensors_and_rejects_tensors_of_several_elements() -> None:
    got = to_numbers({"loss": torch.tensor(0.25), "epoch": 3, "name": "x"})
    assert got == {"loss": 0.25, "epoch": 3, "name": "x"}
    with pytest.raises(RuntimeError, match="2 elements"):
        to_numbers({"pair": torch.tensor([1.0, 2.0])})


def _csv_rows(logger: CSVLogger) -> list[dict[str, str]]:
    path = Path(logger.log_dir) / "metrics.csv"
    if not path.exists():
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_file_logger_is_saved_on_the_first_call_then_at_flush(tmp_path: Path) -> None:
    logger = CSVLogger(tmp_path, name="", version=0)
    saves = LoggerSaves(interval_s=3600)
    for step in range(3):
        logger.log_metrics({"loss": float(step)}, step=step)
        saves.logged(logger)
    assert [r["step"] for r in _csv_rows(logger)] == ["0"]  # the first call saved; the others wait
    saves.flush()
    assert [r["step"] for r in _csv_rows(logger)] == ["0", "1", "2"]


def test_interval_zero_saves_a_file_logger_after_every_call(tmp_path: Path) -> None:
    logger = CSVLogger(tmp_path, name="", version=0)
    saves = LoggerSaves(interval_s=0)
    for step in range(3):
        logger.log_metrics({"loss": float(step)}, step=step)
        saves.logged(logger)
        assert len(_csv_rows(logger)) == step + 1


def test_other_loggers_are_saved_after_every_call_and_flush_does_not_save_them_again() -> None:
    logger = RecordingLogger()
    saves = LoggerSaves(interval_s=3600)
    for _ in range(3):
        saves.logged(logger)
    assert logger.saves == 3
    saves.flush()
    assert logger.saves == 3


def test_a_logger_saved_elsewhere_is_no_longer_pending(tmp_path: Path) -> None:
    logger = CSVLogger(tmp_path, name="", version=0)
    saves = LoggerSaves(interval_s=3600)
    logger.log_metrics({"loss": 0.0}, step=0)
    saves.logged(logger)
    logger.log_metrics({"loss": 1.0}, step=1)
    saves.logged(logger)
    logger.save()
    saves.saved([logger])
    logger.log_metrics({"loss": 2.0}, step=2)
    saves.logged(logger)  # within the interval of the save above: waits
    assert len(_csv_rows(logger)) == 2


@pytest.mark.parametrize("bad", [-1.0, float("nan"), "5", True])
def test_bad_interval_is_rejected(bad: Any) -> None:
    with pytest.raises(ValueError, match="interval_s"):
        LoggerSaves(interval_s=bad)
