"""The run context: everything one ``fit``/``validate``/``test``/``predict`` works with, in one object.

The :class:`~torchbolt.Trainer` builds a :class:`RunContext` at the start of each run and hands it to
the loops and helpers (``fit_loop``, ``eval_loop``, ``optimization``, ``checkpointing``, ``data``,
the tuner's trials). They read and advance the run's state through it and never reach back into the
Trainer's private attributes: the Trainer owns the objects, the context lends them for one run.

Who owns what:

* ``progress`` (:class:`~torchbolt.trainer.states.Progress`): every counter; advanced only through its methods.
* ``metrics`` (:class:`~torchbolt.trainer.logging.MetricSink`): where ``self.log`` writes, and the one
  place logged values become logger calls, progress-bar values and ``callback_metrics``.
* ``sizes`` (:class:`LoaderSizes`): how many batches each loop runs (``trainer.num_*_batches``).
* ``eval_counts`` (:class:`~torchbolt.loops.progress.EvalBatchCounts`): the batches the validation, test and
  prediction loops finished (``trainer.validate_loop.batch_progress``...).
* ``hooks`` (:class:`~torchbolt.trainer.hooks.HookDispatcher`): which hooks run, decided once per run;
  the only writer of the module's current hook name.

A tuner trial runs in a *nested* context (:meth:`RunContext.nested`): its own progress, metrics,
loader sizes, hooks and settings, visible through the Trainer's properties while the trial runs, and
gone afterwards.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from torchbolt.loops.progress import EvalBatchCounts
from torchbolt.trainer.states import Progress, RunningStage, TrainerFn, TrainerState

if TYPE_CHECKING:
    from torchbolt.callbacks.callback import Callback
    from torchbolt.core.datamodule import LightningDataModule
    from torchbolt.core.module import LightningModule
    from torchbolt.loggers.logger import Logger
    from torchbolt.profilers.profiler import Profiler
    from torchbolt.strategies.strategy import Strategy
    from torchbolt.trainer.config import TrainerConfig
    from torchbolt.trainer.data import DataPreparer, DataSource
    from torchbolt.trainer.eval_loop import EvaluationLoop, PredictionLoop
    from torchbolt.trainer.fit_loop import FitLoop
    from torchbolt.trainer.hooks import HookDispatcher
    from torchbolt.trainer.logging import MetricSink
    from torchbolt.trainer.signals import SignalHandler
    from torchbolt.trainer.trainer import Trainer


@dataclass
class LoaderSizes:
    """How many batches each loop runs in the current (or last) run: ``trainer.num_*_batches``."""

    train: int | float = math.inf
    val: list[int | float] = field(default_factory=list)
    sanity_val: list[int | float] = field(default_factory=list)
    test: list[int | float] = field(default_factory=list)
    predict: list[int | float] = field(default_factory=list)


@dataclass(eq=False)
class RunContext:
    """What one run works with. Built by the Trainer per run (and by the tuner per trial).

    Attributes:
        trainer: the public face of the run, passed to callback hooks; loops use only its public API.
        fn: the entry point being run.
        config: the validated Trainer arguments (a trial may override some).
        state: ``trainer.state`` (status, entry point, running stage).
        progress: the counters.
        metrics: the sink behind ``self.log`` and the logger/progress-bar/callback metrics.
        sizes: the loaders' batch counts.
        hooks: the hook dispatcher of this run.
        strategy: the strategy (devices, precision, collectives, checkpoint I/O).
        module: the LightningModule being run.
        datamodule: the LightningDataModule, if any.
        callbacks: the callbacks receiving hooks in this run.
        loggers: the loggers receiving metrics in this run.
        data: prepares the loaders (samplers, worker seeding, batch counts).
        signals: turns SIGTERM / requeue signals into a stop at a step boundary.
        profiler: the profiler timing this run, or ``None`` when not profiling (decided once).
        fit_loop: the fit loop (``fit`` only; also read when a checkpoint is written).
        eval_loop: the loop of a ``validate``/``test``/``predict`` run (``None`` in ``fit``).
        source: where the run's loaders come from (the loaders passed in, the datamodule, the module).
        eval_counts: the batch counters of the evaluation and prediction loops (the Trainer's; a tuner
            trial's own).
        active: the stack of live contexts shared with the Trainer: its properties read the top one.
    """

    trainer: Trainer
    fn: TrainerFn
    config: TrainerConfig
    state: TrainerState
    progress: Progress
    metrics: MetricSink
    sizes: LoaderSizes
    hooks: HookDispatcher
    strategy: Strategy
    module: LightningModule
    datamodule: LightningDataModule | None
    callbacks: list[Callback]
    loggers: list[Logger]
    data: DataPreparer
    signals: SignalHandler
    profiler: Profiler | None
    active: list[RunContext]
    fit_loop: FitLoop | None = None
    eval_loop: EvaluationLoop | PredictionLoop | None = None
    source: DataSource | None = None
    eval_counts: EvalBatchCounts = field(default_factory=EvalBatchCounts)

    @property
    def stage(self) -> RunningStage | None:
        return self.state.stage

    @contextmanager
    def nested(self, **changes: Any) -> Iterator[RunContext]:
        """A child context for a short run inside this one (a tuner trial), active while the block runs.

        ``changes`` replace fields (``config``, ``hooks``, ``callbacks``, ``loggers``, ``metrics``,
        ``progress``, ``sizes``...). ``self.log`` and the Trainer's properties follow the active context, so
        a trial's metrics and counters stay in the trial.
        """
        child = dataclasses.replace(self, **changes)
        self.active.append(child)
        try:
            yield child
        finally:
            self.active.pop()

    def manual_backward(self, loss: Any, *args: Any, **kwargs: Any) -> None:
        """``LightningModule.manual_backward``: the backward hooks around the strategy's backward."""
        hooks = self.hooks
        hooks.callbacks("on_before_backward", loss)
        hooks.module("on_before_backward", loss)
        hooks.run_as("backward", self.strategy.backward, loss, None, *args, **kwargs)
        hooks.callbacks("on_after_backward")
        hooks.module("on_after_backward")
