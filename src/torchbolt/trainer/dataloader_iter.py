"""Steps that fetch their own batches: ``training_step(self, dataloader_iter)`` (and ``validation_step``,
``test_step``, ``predict_step`` with a ``dataloader_iter`` parameter).

Such a step receives a :class:`DataLoaderIter` instead of a batch and calls ``next(dataloader_iter)``
itself, once or several times; each call gives ``(batch, batch_idx, dataloader_idx)``. The batch is not
moved to the device (the step does that). The loop calls the step again until the iterator is exhausted:
with a known number of batches the loop stops once that many were fetched; otherwise a ``StopIteration``
(from ``next`` inside the step, or raised by the step itself) ends the epoch.

The loop counts steps (``trainer.fit_loop.epoch_loop.batch_idx``, gradient accumulation, validation
interval); the ``batch``/``batch_idx`` that ``on_*_batch_start`` receives are those of the batch fetched
last *before* the step (``None``/``0`` for the first step), and ``on_*_batch_end`` those of the batch
fetched last *by* the step: the loop cannot know what the step will fetch.

Whether a stage runs this way is decided once per loop run, from the step's signature.
"""

from __future__ import annotations

import inspect
import itertools
import math
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from torchbolt.utilities.exceptions import MisconfigurationException
from torchbolt.utilities.rank_zero import PossibleUserWarning, rank_zero_warn

if TYPE_CHECKING:
    from torchbolt.trainer.eval_loop import EvaluationLoop, PredictionLoop
    from torchbolt.trainer.fit_loop import FitLoop

PARAM = "dataloader_iter"

#: what the training loop's logged results see as "the batch" in this mode: ``self.log`` then needs a
#: ``batch_size`` (the loop does not know which batches the step used)
NO_BATCH: Any = type("_StepFetchesItsOwnBatches", (), {"__repr__": lambda self: "<dataloader_iter step>"})()


def takes_dataloader_iter(step: Any) -> bool:
    """Whether ``step`` declares a parameter named ``dataloader_iter`` (by name: ``*args`` does not count)."""
    fn = getattr(step, "__wrapped__", step)  # a decorated step: its own signature
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False
    param = params.get(PARAM)
    return param is not None and param.kind in (param.POSITIONAL_ONLY, param.POSITIONAL_OR_KEYWORD)


def warn_experimental(step_name: str) -> None:
    rank_zero_warn(
        f"`{step_name}` takes `dataloader_iter`: the step fetches its own batches. If it fetches more than one per"
        " call, the `batch_idx` given to the batch hooks is that of the batch fetched last, the loop counts steps"
        " rather than batches (gradient accumulation and `val_check_interval` count steps), and the hooks' `batch`"
        " is what the loop last saw. This step flavor is experimental, as in Lightning.",
        category=PossibleUserWarning,
    )


class DataLoaderIter(Iterator[tuple[Any, int, int]]):
    """The iterator a ``*_step(dataloader_iter)`` receives: ``next()`` gives ``(batch, batch_idx,
    dataloader_idx)`` and raises ``StopIteration`` once the stage's batches (its limits applied) are used up.

    Attributes:
        done: no batch is left: ``length`` batches were fetched, or the loader raised ``StopIteration``.
        fetched: batches fetched so far in this epoch.
        length: the number of batches, or ``None`` when unknown (an iterable without length).
        batch, batch_idx, dataloader_idx: what the last ``next()`` returned (``None``, 0, 0 before any).
    """

    def __init__(self, triples: Iterator[tuple[Any, int, int]], length: int | None) -> None:
        self._triples = triples
        self.length = length
        self.fetched = 0
        self.done = length == 0
        self.batch: Any = None
        self.batch_idx = 0
        self.dataloader_idx = 0

    def __iter__(self) -> DataLoaderIter:
        return self

    def __next__(self) -> tuple[Any, int, int]:
        if self.done:
            raise StopIteration
        try:
            item = next(self._triples)
        except StopIteration:
            self.done = True
            raise
        self.fetched += 1
        if self.length is not None and self.fetched >= self.length:
            self.done = True
        self.batch, self.batch_idx, self.dataloader_idx = item
        return item


class WithoutBatchIdx:
    """``step(batch)`` callable as the optimization calls a training step, ``(batch, batch_idx)`` or ``(batch,)``:
    for ``training_step(self, dataloader_iter)`` and for a ``training_step(self, batch)`` without ``batch_idx``.

    A class rather than a closure so that a loop holding it pickles (spawned processes receive the Trainer).
    """

    __slots__ = ("step",)

    def __init__(self, step: Any) -> None:
        self.step = step

    def __call__(self, batch: Any, batch_idx: int | None = None) -> Any:
        return self.step(batch)


# ---------------------------------------------------------------------------------------------- training
def run_training_steps(loop: FitLoop, iterator: Iterator[Any]) -> None:
    """The rest of a training epoch with a ``training_step(dataloader_iter)``; ``iterator``: the epoch's batches."""

    ctx, p = loop.ctx, loop.progress
    hooks = ctx.hooks
    total = ctx.sizes.train
    length = None if total == math.inf else int(total)
    it = DataLoaderIter(((batch, i, 0) for i, batch in enumerate(itertools.islice(iterator, length))), length)
    accumulate = ctx.config.accumulate_grad_batches
    optimization = loop.optimization
    step_idx = p.epoch_batches_done
    while not it.done:
        p.begin_batch(step_idx)
        loop.results.batch_start(NO_BATCH)
        active = hooks.active
        if "on_train_batch_start" in active:
            hooks.callbacks("on_train_batch_start", it.batch, it.batch_idx)
            if hooks.module("on_train_batch_start", it.batch, it.batch_idx) == -1:
                return
        # whether this step ends the epoch is known only after it ran: the optimizer steps on accumulation
        # boundaries (as in Lightning, a last partial window is not stepped in this mode)
        is_step = (step_idx + 1) % accumulate == 0
        try:
            outputs = _optimize(optimization, it, step_idx, is_step, accumulate)
        except StopIteration:
            return  # the loader (or the step) ended the epoch
        is_last = it.done
        # `on_train_batch_end` gets the batch and index the step fetched last
        loop._complete_batch(outputs, it.batch, step_idx, is_step, is_last, hook_batch_idx=it.batch_idx)
        if is_last or loop._epoch_done(step_idx):
            return
        step_idx += 1


def _optimize(optimization: Any, it: DataLoaderIter, step_idx: int, is_step: bool, accumulate: int) -> Any:
    from torchbolt.trainer.optimization import AutomaticOptimization

    if isinstance(optimization, AutomaticOptimization):
        return optimization.run(it, step_idx, is_step, window_start=step_idx % accumulate == 0)
    return optimization.run(it, step_idx)


def check_log_batch_size(batch: Any, batch_size: int | None) -> None:
    """Raise when a training step that fetches its own batches logs without ``batch_size``."""
    if batch is NO_BATCH and batch_size is None:
        raise MisconfigurationException(
            "With `def training_step(self, dataloader_iter)`, `self.log(..., batch_size=...)` should be provided:"
            " the loop does not know which batches the step used."
        )


# ---------------------------------------------------------------------------------------------- evaluation
def _eval_iterator(loaders: list[Any], limits: list[int | float],
                   batches: Any) -> DataLoaderIter:
    """One iterator over all the stage's loaders, one after the other, each within its limit."""
    triples = ((batch, batch_idx, dl_idx) for dl_idx, (loader, limit) in enumerate(zip(loaders, limits))
               for batch_idx, batch in batches(loader, limit))
    length = None if any(limit == math.inf for limit in limits) else int(sum(limits))
    return DataLoaderIter(triples, length)


def run_eval_steps(loop: EvaluationLoop, loaders: list[Any], limits: list[int | float], step_name: str,
                   step_fn: Any, multiple: bool, sanity: bool, batches: Any) -> None:
    """The batches of an evaluation run with a ``<stage>_step(dataloader_iter)``.

    ``batches(loader, limit)``: the profiled ``(batch_idx, batch)`` pairs of one loader.
    """
    ctx = loop.ctx
    hooks, module, metrics = ctx.hooks, ctx.module, ctx.metrics
    prefix = step_name[: -len("_step")]
    start_hook, end_hook = f"on_{prefix}_batch_start", f"on_{prefix}_batch_end"
    active = hooks.active
    counter = loop.batch_counter
    it = _eval_iterator(loaders, limits, batches)
    count = 0
    while not it.done:
        dl_idx = it.dataloader_idx if multiple else None
        module.__dict__["_current_dataloader_idx"] = dl_idx
        extra = (it.dataloader_idx,) if multiple else ()
        loop.results.batch_start(it.batch, dl_idx)
        if start_hook in active:
            hooks.both(start_hook, it.batch, it.batch_idx, *extra)
        try:
            output = hooks.run_as(step_name, step_fn, it)
        except StopIteration:
            return
        extra = (it.dataloader_idx,) if multiple else ()
        if end_hook in active:
            hooks.both(end_hook, output, it.batch, it.batch_idx, *extra)
        metrics.publish_eval_step(loop.results, count, sanity)
        count += 1
        counter.current += 1


def run_predict_steps(loop: PredictionLoop, loaders: list[Any], limits: list[int | float], multiple: bool,
                      keep: bool, batches: Any) -> None:
    """The batches of a prediction run with a ``predict_step(dataloader_iter)``; ``keep``: keep the outputs."""
    ctx = loop.ctx
    hooks = ctx.hooks
    it = _eval_iterator(loaders, limits, batches)
    while not it.done:
        extra = (it.dataloader_idx,) if multiple else ()
        hooks.both("on_predict_batch_start", it.batch, it.batch_idx, *extra)
        try:
            output = hooks.run_as("predict_step", ctx.strategy.predict_step, it)
        except StopIteration:
            return
        if keep:
            loop._predictions[it.dataloader_idx].append(output)
        extra = (it.dataloader_idx,) if multiple else ()
        hooks.both("on_predict_batch_end", output, it.batch, it.batch_idx, *extra)
        loop.batch_counter.current += 1
