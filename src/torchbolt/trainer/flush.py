"""What a logger flush costs: one device->host copy for the values, and logger saves on a clock.

Two pieces behind :class:`torchbolt.trainer.logging.MetricSink`:

- :func:`to_numbers` turns logged tensors into Python numbers with one device->host copy per
  accelerator that holds them (instead of one ``.item()``, each a copy and a host sync, per value).
- :class:`LoggerSaves` decides when the Trainer calls ``logger.save()``. Lightning calls it after
  every logging call; for the built-in file loggers a save is a file flush, so they are saved at
  most every :data:`SAVE_INTERVAL_S` seconds of logging, and always at the points where a user or
  a resumed run reads the files (epoch ends, checkpoints, stop, the end of the run).
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Mapping
from typing import Any

import torch
from torch import Tensor

from torchbolt.loggers.csv_logs import CSVLogger
from torchbolt.loggers.logger import Logger
from torchbolt.loggers.tensorboard import TensorBoardLogger

#: the longest a logging call leaves a built-in file logger unsaved (seconds)
SAVE_INTERVAL_S = 5.0

# loggers whose `save()` is a file flush that can wait: values they received stay in their own
# buffers (CSV rows, the SummaryWriter's queue) and nothing is lost by saving them later
_DEFERRED_SAVE_TYPES = (CSVLogger, TensorBoardLogger)


#: device types whose tensors are already in host memory: `.item()` reads them without a copy, and
#: stacking them first would only add work
_HOST_DEVICE_TYPES = frozenset({"cpu"})


def to_numbers(metrics: Mapping[str, Any]) -> dict[str, Any]:
    """``metrics`` with every one-element tensor replaced by its Python number (exactly what ``.item()`` gives).

    The tensors of one accelerator are copied to the host together (:func:`copy_to_host`): one
    device->host copy, and one host sync, per device, whatever the number of values. Tensors in host
    memory are read with ``.item()`` (no copy). Other values (numbers, strings, tensors of several
    elements, tensor subclasses) are converted as ``.item()`` does, or kept as they are.
    """
    out = dict(metrics)
    by_device: dict[torch.device, list[str]] = {}
    for key, value in metrics.items():
        if not isinstance(value, Tensor):
            continue
        if (type(value) is Tensor and value.device.type not in _HOST_DEVICE_TYPES and value.numel() == 1
                and value.layout is torch.strided):
            by_device.setdefault(value.device, []).append(key)
        else:
            out[key] = value.item()  # raises as `.item()` does for a tensor of several elements
    for keys in by_device.values():
        out.update(zip(keys, copy_to_host([metrics[k] for k in keys])))
    return out


def copy_to_host(tensors: list[Tensor]) -> list[Any]:
    """The Python numbers of one-element tensors on one device, with a single device->host copy.

    Values of different dtypes are not cast to a common one (a float64 value is not rounded through
    float32, an integer stays an ``int``): each dtype is stacked on its own and the stacks travel as
    raw bytes in one buffer. The numbers equal ``[t.item() for t in tensors]``, types included.
    """
    if len(tensors) == 1:
        return [tensors[0].item()]  # one value is one copy either way
    by_dtype: dict[torch.dtype, list[int]] = {}
    for index, tensor in enumerate(tensors):
        by_dtype.setdefault(tensor.dtype, []).append(index)
    with torch.no_grad():  # values logged with `enable_graph=True` must not grow the graph
        stacks = {dtype: torch.stack([tensors[i].reshape(()) for i in indices]) for dtype, indices in by_dtype.items()}
        if len(stacks) == 1:
            (stack,) = stacks.values()
            return stack.cpu().tolist()
        # widest element first: every stack then starts at a byte offset its element size divides,
        # which viewing the bytes back as that dtype requires
        order = sorted(stacks, key=lambda dtype: dtype.itemsize, reverse=True)
        host = torch.cat([stacks[dtype].view(torch.uint8) for dtype in order]).cpu()
    values: list[Any] = []
    offset = 0
    for dtype in order:
        size = stacks[dtype].numel() * dtype.itemsize
        values.extend(host[offset:offset + size].view(dtype).tolist())
        offset += size
    return _reorder(values, [by_dtype[dtype] for dtype in order], len(tensors))


def _reorder(flat: list[Any], groups: list[list[int]], count: int) -> list[Any]:
    """Put ``flat`` (the values of ``groups``, group after group) back in the original order."""
    out: list[Any] = [None] * count
    for position, index in enumerate(i for group in groups for i in group):
        out[index] = flat[position]
    return out


class LoggerSaves:
    """When the Trainer calls ``logger.save()`` (one per run, owned by the run's ``MetricSink``).

    A ``TensorBoardLogger`` or ``CSVLogger`` (and subclasses) is saved after a logging call only when
    ``interval_s`` seconds have passed since its last save (its first logging call saves at once, so
    the files appear early); :meth:`flush` saves every logger with unsaved values and runs at the end
    of each training epoch and evaluation run, before each checkpoint is written and when a fit
    stops. Every other logger is saved after every logging call, as Lightning does.

    Args:
        interval_s: the longest a logging call leaves a deferring logger unsaved; ``0`` saves after
            every call; ``None``: :data:`SAVE_INTERVAL_S` (read when the run starts).

    Raises:
        ValueError: ``interval_s`` is negative or not a number.
    """

    def __init__(self, interval_s: float | None = None) -> None:
        if interval_s is None:
            interval_s = SAVE_INTERVAL_S
        if isinstance(interval_s, bool) or not isinstance(interval_s, (int, float)) or math.isnan(interval_s) or (
                interval_s < 0):
            raise ValueError(f"`LoggerSaves(interval_s={interval_s!r})`: pass a number of seconds >= 0.")
        self.interval_s = float(interval_s)
        self._pending: dict[int, Logger] = {}  # id -> logger with values it has not been asked to save
        self._last_save: dict[int, float] = {}  # id -> time.monotonic() of its last save

    def logged(self, logger: Logger) -> None:
        """``logger.log_metrics`` just ran: save it now, or once its interval has passed."""
        if not isinstance(logger, _DEFERRED_SAVE_TYPES):
            logger.save()
            return
        key = id(logger)
        now = time.monotonic()
        last = self._last_save.get(key)
        if last is None or now - last >= self.interval_s:
            self._pending.pop(key, None)
            self._save(logger, now)
        else:
            self._pending[key] = logger

    def flush(self) -> None:
        """Save every logger with values it has not saved yet (nothing happens when there is none)."""
        if not self._pending:
            return
        pending = list(self._pending.values())
        self._pending = {}
        now = time.monotonic()
        for logger in pending:
            self._save(logger, now)

    def saved(self, loggers: Iterable[Logger]) -> None:
        """``loggers`` were just saved by someone else (nothing of theirs is pending any more)."""
        now = time.monotonic()
        for logger in loggers:
            self._pending.pop(id(logger), None)
            if isinstance(logger, _DEFERRED_SAVE_TYPES):
                self._last_save[id(logger)] = now

    def _save(self, logger: Logger, now: float) -> None:
        logger.save()
        self._last_save[id(logger)] = now
