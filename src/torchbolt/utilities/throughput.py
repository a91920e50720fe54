"""Throughput arithmetic: batches/s, samples/s, items/s, FLOP/s and MFU over a rolling window; FLOP counting.

Only Python numbers are handled here (no tensors), so updating costs no device synchronization.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Any

import torch

# Dense peak FLOP/s of common accelerators per compute dtype (vendor datasheets, without sparsity).
_CUDA_FLOPS: dict[str, dict[torch.dtype, float]] = {
    "h200": {torch.float64: 67e12, torch.float32: 67e12, torch.bfloat16: 989.5e12, torch.float16: 989.5e12},
    "h100-sxm": {torch.float64: 67e12, torch.float32: 67e12, torch.bfloat16: 989.5e12, torch.float16: 989.5e12},
    "h100-pcie": {torch.float64: 51e12, torch.float32: 51e12, torch.bfloat16: 756.5e12, torch.float16: 756.5e12},
    "a100": {torch.float64: 19.5e12, torch.float32: 19.5e12, torch.bfloat16: 312e12, torch.float16: 312e12},
    "a10g": {torch.float32: 31.2e12, torch.bfloat16: 125e12, torch.float16: 125e12},
    "l40s": {torch.float32: 91.6e12, torch.bfloat16: 362e12, torch.float16: 362e12},
    "l4": {torch.float32: 30.3e12, torch.bfloat16: 121e12, torch.float16: 121e12},
    "v100-sxm": {torch.float64: 7.8e12, torch.float32: 15.7e12, torch.float16: 125e12},
    "v100-pcie": {torch.float64: 7e12, torch.float32: 14e12, torch.float16: 112e12},
    "t4": {torch.float32: 8.1e12, torch.float16: 65e12},
}


class _MonotonicWindow(deque):
    """A bounded window of values that must never decrease (a reset timer or counter is a bug)."""

    def append(self, value: Any) -> None:
        if self and value < self[-1]:
            raise ValueError(f"Expected the value to increase, last: {self[-1]}, current: {value}")
        super().append(value)


class Throughput:
    """Rolling throughput of a loop: feed it running totals, read rates back.

    ``compute()`` returns ``time``, ``batches``, ``samples`` (and ``lengths``) totals always, and, once
    ``window_size`` updates were seen, ``device/batches_per_sec``, ``device/samples_per_sec``,
    ``device/items_per_sec``, ``device/flops_per_sec`` and ``device/mfu`` (with ``available_flops``);
    with ``world_size > 1`` also the global ``batches_per_sec``, ``samples_per_sec``, ``items_per_sec``
    and ``flops_per_sec``.

    Args:
        available_flops: peak FLOP/s of one device (for MFU); ``None``: no MFU.
        world_size: number of devices (global rates are per-device rates times this).
        window_size: number of updates the rates are averaged over (at least 2).
        separator: between ``device`` and the metric name.

    Example::

        throughput = Throughput(window_size=10)
        t0 = time.perf_counter()
        for i, batch in enumerate(loader, 1):
            train(batch)
            throughput.update(time=time.perf_counter() - t0, batches=i, samples=i * len(batch))
        print(throughput.compute()["device/samples_per_sec"])
    """

    def __init__(self, available_flops: float | None = None, world_size: int = 1, window_size: int = 100,
                 separator: str = "/") -> None:
        if world_size < 1:
            raise ValueError(f"`Throughput(world_size={world_size})` must be >= 1.")
        if window_size < 2:
            raise ValueError(f"`Throughput(window_size={window_size})` must be >= 2 (rates need two points).")
        self.available_flops = available_flops
        self.world_size = world_size
        self.separator = separator
        self._time: _MonotonicWindow = _MonotonicWindow(maxlen=window_size)
        self._batches: _MonotonicWindow = _MonotonicWindow(maxlen=window_size)
        self._samples: _MonotonicWindow = _MonotonicWindow(maxlen=window_size)
        self._lengths: _MonotonicWindow = _MonotonicWindow(maxlen=window_size)
        self._flops: deque = deque(maxlen=window_size)

    def update(self, *, time: float, batches: int, samples: int, lengths: int | None = None,
               flops: float | None = None) -> None:
        """Record running totals: elapsed ``time`` (s), ``batches`` and ``samples`` (and ``lengths``, e.g.
        tokens) seen by this device, and the ``flops`` of the latest batch on this device.

        Raises:
            ValueError: when a total decreases.
            RuntimeError: when ``lengths`` is given for some updates but not others.
        """
        self._time.append(time)
        self._batches.append(batches)
        self._samples.append(samples)
        if lengths is not None:
            self._lengths.append(lengths)
            if len(self._samples) != len(self._lengths):
                raise RuntimeError(
                    f"If lengths are passed ({len(self._lengths)}), there needs to be the same number of samples"
                    f" ({len(self._samples)})"
                )
        if flops is not None:
            self._flops.append(flops * self.world_size)

    def compute(self) -> dict[str, int | float]:
        sep = self.separator
        metrics: dict[str, int | float] = {"time": self._time[-1], "batches": self._batches[-1],
                                           "samples": self._samples[-1]}
        if self._lengths:
            metrics["lengths"] = self._lengths[-1]
        world = self.world_size
        if len(self._time) == self._time.maxlen:
            elapsed = self._time[-1] - self._time[0]
            if elapsed > 0:
                dev_batches = (self._batches[-1] - self._batches[0]) / elapsed
                dev_samples = (self._samples[-1] - self._samples[0]) / elapsed
                metrics[f"device{sep}batches_per_sec"] = dev_batches
                metrics[f"device{sep}samples_per_sec"] = dev_samples
                if world > 1:
                    metrics["batches_per_sec"] = dev_batches * world
                    metrics["samples_per_sec"] = dev_samples * world
                if len(self._lengths) == self._lengths.maxlen:
                    dev_items = (self._lengths[-1] - self._lengths[0]) / elapsed
                    metrics[f"device{sep}items_per_sec"] = dev_items
                    if world > 1:
                        metrics["items_per_sec"] = dev_items * world
        if len(self._flops) == self._flops.maxlen and len(self._time) >= 2:
            elapsed = self._time[-1] - self._time[0]
            if elapsed > 0:
                # the first entry's FLOPs were spent before the window's first timestamp
                flops_per_sec = (sum(self._flops) - self._flops[0]) / elapsed
                if world > 1:
                    metrics["flops_per_sec"] = flops_per_sec
                dev_flops = flops_per_sec / world
                metrics[f"device{sep}flops_per_sec"] = dev_flops
                if self.available_flops:
                    metrics[f"device{sep}mfu"] = dev_flops / self.available_flops
        return metrics

    def reset(self) -> None:
        for window in (self._time, self._batches, self._samples, self._lengths, self._flops):
            window.clear()


def measure_flops(model: torch.nn.Module, forward_fn: Callable[[], Any],
                  loss_fn: Callable[[Any], torch.Tensor] | None = None) -> int:
    """FLOPs of one call of ``forward_fn`` (plus the backward of ``loss_fn(output)`` when given), counted by
    ``torch.utils.flop_counter``. Build the model on the ``"meta"`` device to count without computing.

    Example::

        with torch.device("meta"):
            model = MyModel()
            x = torch.randn(8, 32)
        flops_per_batch = measure_flops(model, lambda: model(x), lambda y: y.sum())  # forward + backward
    """
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        if loss_fn is None:
            forward_fn()
        else:
            loss_fn(forward_fn()).backward()
    return int(counter.get_total_flops())


def get_available_flops(device: torch.device, dtype: torch.dtype | str) -> float | None:
    """Peak dense FLOP/s of ``device`` for ``dtype`` (known CUDA GPUs only; ``None`` otherwise)."""
    if device.type != "cuda":
        return None
    if isinstance(dtype, str):
        dtype = _precision_to_dtype(dtype)
    name = torch.cuda.get_device_name(device).lower()
    for key, table in _CUDA_FLOPS.items():  # ordered so that "l40s" is tried before "l4"
        chip, _, form = key.partition("-")
        if chip not in name or (form == "pcie" and "pcie" not in name) or (form == "sxm" and "pcie" in name):
            continue
        return table.get(dtype)
    return None


def _precision_to_dtype(precision: str) -> torch.dtype:
    """The dtype matmuls run in under a Trainer ``precision`` string."""
    if precision.startswith("bf16"):
        return torch.bfloat16
    if precision.startswith("16"):
        return torch.float16
    if precision.startswith("64"):
        return torch.float64
    return torch.float32
