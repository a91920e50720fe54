"""``SpikeDetection``: stop training when the loss jumps far above its recent average."""

from __future__ import annotations

import json
import math
import os
from collections import deque
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Literal

import torch

from torchbolt.callbacks.callback import Callback

if TYPE_CHECKING:
    from torchbolt.core.module import LightningModule
    from torchbolt.trainer.trainer import Trainer


class TrainingSpikeException(RuntimeError):
    """Raised by :class:`SpikeDetection` when the loss spiked."""

    def __init__(self, batch_idx: int, *args: Any, **kwargs: Any) -> None:
        super().__init__(f"Training spike detected in batch {batch_idx}", *args, **kwargs)


class SpikeDetection(Callback):
    """Stop training with :class:`TrainingSpikeException` when the loss spikes, recording the batches to skip.

    After ``warmup`` batches, a loss counts as a spike when it is not an improvement over the previous
    loss and differs from the running mean of the last ``window`` losses by at least ``atol`` and by at
    least ``rtol`` times that mean (a ``None`` tolerance is not checked). The current and the previous
    batch index are appended to a JSON list at ``exclude_batches_path`` (default
    ``<default_root_dir>/skip_batches.json``), so a restarted run can skip them. The decision is
    agreed across processes: if any rank sees a spike, all stop.

    Reading the loss each batch synchronizes with the device once per batch.

    Example::

        trainer = Trainer(callbacks=[SpikeDetection(window=20, rtol=2.0)])

    Args:
        mode: ``"min"`` (lower loss is better) or ``"max"``.
        window: how many recent losses the running mean covers.
        warmup: batches (index) before which nothing counts as a spike.
        atol: absolute tolerance.
        rtol: relative tolerance.
        exclude_batches_path: where to write the JSON list (a ``.json`` file or a directory).
        finite_only: a non-finite loss counts as a spike (when ``False``, it is only left out of the mean).
    """

    def __init__(
        self,
        mode: Literal["min", "max"] = "min",
        window: int = 10,
        warmup: int = 1,
        atol: float | None = None,
        rtol: float | None = 2.0,
        exclude_batches_path: str | os.PathLike | None = None,
        finite_only: bool = True,
    ) -> None:
        if mode not in ("min", "max"):
            raise ValueError(f"Invalid mode. Has to be min or max, found {mode}")
        self.mode = mode
        self.window = window
        self.warmup = warmup
        self.atol = atol
        self.rtol = rtol
        self.exclude_batches_path = exclude_batches_path
        self.finite_only = finite_only
        self.last_val: float = 0.0
        self.bad_batches: list[int] = []
        self._recent: deque[float] = deque(maxlen=window)

    @property
    def running_mean(self) -> float:
        """The mean of the last ``window`` finite losses (NaN before the first one)."""
        return sum(self._recent) / len(self._recent) if self._recent else math.nan

    @torch.no_grad()
    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if isinstance(outputs, torch.Tensor):
            loss_tensor = outputs
        elif isinstance(outputs, Mapping):
            if not isinstance(outputs.get("loss"), torch.Tensor):
                return  # `training_step` returned None: no loss to check
            loss_tensor = outputs["loss"]
        else:
            raise TypeError(f"outputs have to be of type torch.Tensor or Mapping, got {type(outputs).__qualname__}")
        loss = float(loss_tensor.detach())  # one host sync per batch
        is_spike = batch_idx >= self.warmup and self._is_spike(loss)
        if trainer.strategy.reduce_boolean_decision(is_spike, all=False):
            self._handle_spike(trainer, batch_idx)
        finite = math.isfinite(loss)
        # a rank whose loss is finite keeps it unless some rank's was not (then all leave it out)
        keep = self.finite_only or trainer.strategy.reduce_boolean_decision(finite, all=True)
        if keep and finite:
            self._recent.append(loss)
            self.last_val = loss

    def _is_spike(self, loss: float) -> bool:
        if self.finite_only and not math.isfinite(loss):
            return True
        if self._is_better(loss - self.last_val):
            return False
        running = self.running_mean
        return self._check_atol(loss, running) and self._check_rtol(loss, running)

    def _check_atol(self, a: float, b: float) -> bool:
        return self.atol is None or abs(a - b) >= abs(self.atol)

    def _check_rtol(self, a: float, b: float) -> bool:
        return self.rtol is None or abs(a - b) >= abs(self.rtol * b)

    def _is_better(self, diff: float) -> bool:
        return diff <= 0.0 if self.mode == "min" else diff >= 0.0

    def _handle_spike(self, trainer: Trainer, batch_idx: int) -> None:
        # the previous batch too: it may have pushed the weights to where this batch spiked
        self.bad_batches.extend([batch_idx - 1, batch_idx])
        path = os.fspath(self.exclude_batches_path or trainer.default_root_dir)
        if not path.endswith(".json"):
            path = os.path.join(path, "skip_batches.json")
        self.exclude_batches_path = path
        if trainer.global_rank == 0:
            os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
            with open(path, "w") as f:
                json.dump(self.bad_batches, f, indent=4)
        raise TrainingSpikeException(batch_idx=batch_idx)

    def state_dict(self) -> dict[str, Any]:
        return {
            "last_val": self.last_val,
            "mode": self.mode,
            "warmup": self.warmup,
            "atol": self.atol,
            "rtol": self.rtol,
            "bad_batches": list(self.bad_batches),
            "bad_batches_path": None if self.exclude_batches_path is None else os.fspath(self.exclude_batches_path),
            "recent": list(self._recent),
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.last_val = state_dict["last_val"]
        self.mode = state_dict["mode"]
        self.warmup = state_dict["warmup"]
        self.atol = state_dict["atol"]
        self.rtol = state_dict["rtol"]
        self.bad_batches = list(state_dict["bad_batches"])
        self.exclude_batches_path = state_dict["bad_batches_path"]
        self._recent = deque(state_dict.get("recent", []), maxlen=self.window)
