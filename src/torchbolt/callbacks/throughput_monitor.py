"""``ThroughputMonitor``: batches/s, samples/s, items/s, FLOP/s and MFU of each loop, sent to the loggers."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch

from torchbolt.callbacks.callback import Callback
from torchbolt.callbacks.device_stats_monitor import _should_update_logs
from torchbolt.utilities.rank_zero import WarningCache, rank_zero_only
from torchbolt.utilities.states import RunningStage
from torchbolt.utilities.throughput import Throughput, get_available_flops

if TYPE_CHECKING:
    from torchbolt.core.module import LightningModule
    from torchbolt.trainer.trainer import Trainer

_warning_cache = WarningCache()


class ThroughputMonitor(Callback):
    """Measure each loop's throughput and log it as ``<stage>/<metric>`` (``train/device/samples_per_sec``...).

    Logged metrics (see :class:`~torchbolt.utilities.throughput.Throughput`): ``time``, ``batches``,
    ``samples`` (and ``lengths``) totals, and after ``window_size`` batches the rolling
    ``device/batches_per_sec``, ``device/samples_per_sec``, ``device/items_per_sec`` (with ``length_fn``),
    ``device/flops_per_sec`` and ``device/mfu`` (with a FLOP count and a known peak). Training metrics are
    logged on the Trainer's logging steps (``log_every_n_steps``) after the optimizer step of an
    accumulation window; evaluation metrics every ``log_every_n_steps`` evaluation batches, at that
    batch count. Validation time is not counted as training time.

    The FLOPs of a batch are ``flops_per_batch`` given here, else the module's ``flops_per_batch``
    attribute (measure it with :func:`~torchbolt.utilities.throughput.measure_flops`). The device peak
    comes from a table of known GPUs, or from ``available_flops``.

    Args:
        batch_size_fn: the number of samples in a batch.
        length_fn: the number of items (e.g. tokens) in a batch.
        flops_per_batch: FLOPs of one training batch on one device (forward + backward).
        **kwargs: ``available_flops`` (peak FLOP/s of one device), ``window_size`` (default 100) and
            ``separator`` of :class:`~torchbolt.utilities.throughput.Throughput`.

    Example::

        class Model(LightningModule):
            def setup(self, stage):
                with torch.device("meta"):
                    meta = Net()
                    x = torch.randn(64, 784)
                self.flops_per_batch = measure_flops(meta, lambda: meta(x), lambda y: y.sum())

        monitor = ThroughputMonitor(batch_size_fn=lambda batch: batch[0].size(0))
        Trainer(callbacks=[monitor], log_every_n_steps=10).fit(Model())
    """

    def __init__(self, batch_size_fn: Callable[[Any], int], length_fn: Callable[[Any], int] | None = None,
                 flops_per_batch: int | None = None, **kwargs: Any) -> None:
        super().__init__()
        self.batch_size_fn = batch_size_fn
        self.length_fn = length_fn
        self.flops_per_batch = flops_per_batch
        self.available_flops: float | None = kwargs.pop("available_flops", None)
        self.kwargs = kwargs
        self._throughputs: dict[RunningStage, Throughput] = {}
        self._t0s: dict[RunningStage, float] = {}
        self._lengths: dict[RunningStage, int] = {}
        self._samples: dict[RunningStage, int] = {}
        self._batches: dict[RunningStage, int] = {}
        self._cuda = False

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        device = trainer.strategy.root_device
        self._cuda = device.type == "cuda"
        if self.available_flops is None:
            self.available_flops = get_available_flops(device, trainer.precision)
        for running in (RunningStage.TRAINING, RunningStage.VALIDATING, RunningStage.TESTING,
                        RunningStage.PREDICTING):
            self._throughputs[running] = Throughput(available_flops=self.available_flops,
                                                    world_size=trainer.world_size, **self.kwargs)

    # ------------------------------------------------------------------ measuring
    def _start(self, trainer: Trainer) -> None:
        stage = trainer.state.stage
        assert stage is not None
        if trainer.state.fn == "fit" or stage not in self._samples:
            self._throughputs[stage].reset()
            self._lengths[stage] = 0
            self._samples[stage] = 0
            self._batches[stage] = 0
        self._t0s[stage] = time.perf_counter()

    @torch.inference_mode()  # batch_size_fn/length_fn must not record autograd history
    def _update(self, trainer: Trainer, pl_module: LightningModule, batch: Any) -> None:
        stage = trainer.state.stage
        assert stage is not None
        if self._cuda:
            torch.cuda.synchronize()  # the clock must include the queued kernels of this batch
        elapsed = time.perf_counter() - self._t0s[stage]
        if self.length_fn is not None:
            self._lengths[stage] += self.length_fn(batch)
        flops = self.flops_per_batch
        if flops is None:
            flops = getattr(pl_module, "flops_per_batch", None)
            if flops is None:
                _warning_cache.warn(
                    "When using the `ThroughputMonitor`, you need to define a `flops_per_batch` attribute or property"
                    f" in {type(pl_module).__name__} (or pass `ThroughputMonitor(flops_per_batch=...)`) to compute"
                    " the FLOPs."
                )
        self._samples[stage] += self.batch_size_fn(batch)
        self._batches[stage] += 1
        self._throughputs[stage].update(
            time=elapsed, batches=self._batches[stage], samples=self._samples[stage],
            lengths=None if self.length_fn is None else self._lengths[stage], flops=flops,
        )

    def _compute(self, trainer: Trainer, step: int | None = None) -> None:
        stage = trainer.state.stage
        assert stage is not None
        throughput = self._throughputs[stage]
        metrics = {f"{stage.value}{throughput.separator}{k}": v for k, v in throughput.compute().items()}
        ctx = trainer.run_context
        if ctx is not None:
            ctx.metrics.send(metrics, step=step, add_epoch=step is None)

    # ------------------------------------------------------------------ training
    @rank_zero_only
    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._start(trainer)

    @rank_zero_only
    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        self._update(trainer, pl_module, batch)
        accumulate = trainer.accumulate_grad_batches
        window_done = (batch_idx + 1) % accumulate == 0 or batch_idx + 1 >= trainer.num_training_batches
        # measured once the effective batch, optimizer step included, is done
        if window_done and _should_update_logs(trainer):
            self._compute(trainer)

    # ------------------------------------------------------------------ evaluation
    def _eval_batch_end(self, trainer: Trainer, pl_module: LightningModule, batch: Any) -> None:
        self._update(trainer, pl_module, batch)
        stage = trainer.state.stage
        assert stage is not None
        count = self._batches[stage]
        every = trainer.log_every_n_steps
        if every and count % every == 0:
            self._compute(trainer, step=count)

    @rank_zero_only
    def on_validation_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not trainer.sanity_checking:
            self._start(trainer)

    @rank_zero_only
    def on_validation_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any,
                                batch_idx: int, dataloader_idx: int = 0) -> None:
        if not trainer.sanity_checking:
            self._eval_batch_end(trainer, pl_module, batch)

    @rank_zero_only
    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.sanity_checking or trainer.state.fn != "fit" or RunningStage.TRAINING not in self._t0s:
            return
        # shift the training clock by the validation pause so it does not lower the training rates
        train_times = self._throughputs[RunningStage.TRAINING]._time
        train_elapsed = train_times[-1] if train_times else 0.0
        paused = time.perf_counter() - (self._t0s[RunningStage.TRAINING] + train_elapsed)
        self._t0s[RunningStage.TRAINING] += paused

    @rank_zero_only
    def on_test_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._start(trainer)

    @rank_zero_only
    def on_test_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any,
                          batch_idx: int, dataloader_idx: int = 0) -> None:
        self._eval_batch_end(trainer, pl_module, batch)

    @rank_zero_only
    def on_predict_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._start(trainer)

    @rank_zero_only
    def on_predict_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any,
                             batch_idx: int, dataloader_idx: int = 0) -> None:
        self._eval_batch_end(trainer, pl_module, batch)
