"""``trainer.fit_loop``, ``trainer.validate_loop``, ``trainer.test_loop`` and ``trainer.predict_loop``.

Lightning code reads (and sets) loop attributes: ``trainer.fit_loop.max_epochs = 4`` before a second fit,
``trainer.fit_loop.epoch_progress.current.completed``, ``trainer.test_loop.batch_progress``... In torchbolt
the loops that run are built per run from a :class:`~torchbolt.trainer.context.RunContext`, and their
settings and counters have one owner each: the Trainer's validated config, its
:class:`~torchbolt.trainer.states.Progress`, its :class:`~torchbolt.trainer.context.LoaderSizes` and its
:class:`~torchbolt.loops.progress.EvalBatchCounts`. The classes here are thin views over those owners:

* created in ``Trainer.__init__``, the same objects before, during and after every run;
* no state of their own (except ``verbose``, the last ``validate``/``test`` call's argument): a read asks
  the owner, a write sets the owner;
* during a tuner trial they show the trial's settings and counters, as the Trainer's properties do.

None of them is on the per-batch path: the running loops never read these views.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from torchbolt.loops.progress import STAGES, BatchCounter, CounterSource, EvalBatchCounts, ProgressView
from torchbolt.trainer.states import RunningStage

if TYPE_CHECKING:
    from torchbolt.trainer.config import TrainerConfig
    from torchbolt.trainer.context import LoaderSizes
    from torchbolt.trainer.eval_loop import PredictionLoop
    from torchbolt.trainer.fit_loop import FitLoop
    from torchbolt.trainer.states import Progress


# ---------------------------------------------------------------------- the live owners
@dataclass(frozen=True)
class LoopOwners:
    """Where the views read: each callable returns the owner of the run in progress (a tuner trial's while one
    runs), else the Trainer's. The Trainer builds it; the views never reach into the Trainer themselves."""

    config: Callable[[], TrainerConfig]
    progress: Callable[[], Progress]
    sizes: Callable[[], LoaderSizes]
    counts: Callable[[], EvalBatchCounts]
    #: the fit loop that runs (or ran last), for ``restarting``; ``None`` before the first fit
    fit_loop: Callable[[], FitLoop | None]
    #: the prediction loop of the current or last ``predict``, for its ``predictions``
    predict_loop: Callable[[], PredictionLoop | None]
    #: the running stage (``trainer.state.stage``)
    stage: Callable[[], RunningStage | None]


def _config(owners: LoopOwners) -> TrainerConfig:
    return owners.config()


def _progress(owners: LoopOwners) -> Progress:
    return owners.progress()


def _sizes(owners: LoopOwners) -> LoaderSizes:
    return owners.sizes()


def _counter(owners: LoopOwners, loop: str) -> BatchCounter:
    counter: BatchCounter = getattr(owners.counts(), loop)
    return counter


def _fit_state(owners: LoopOwners) -> dict[str, Any]:
    # the checkpoint's derivation of Lightning's counters, so that the views and the files always agree
    from torchbolt.trainer.checkpointing import _lightning_fit_loop_state

    return _lightning_fit_loop_state(_progress(owners), _counter(owners, "fit_val"))


def _check_limit(name: str, value: Any, minimum: int, allow_none: bool = False) -> int | None:
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        none = " or None" if allow_none else ""
        raise ValueError(f"`{name}` must be an int >= {minimum}{none}, got {value!r}.")
    return value


def _set_counter(owners: LoopOwners, name: str, key: str, value: int) -> None:
    """Write one ``Progress`` counter (``key``) so that the Lightning count ``name`` reads the assigned value."""
    minimum = -1 if key == "total_batch_idx" else 0
    if value < minimum:
        raise ValueError(f"`{name}` cannot be set to that value: it would make `{key}` {value}, below {minimum}.")
    _progress(owners).restore({key: value}, source=f"`{name}`")


# ---------------------------------------------------------------------- fit progress (views over Progress)
class _FitCounts:
    """The counts of one entry of Lightning's fit-loop counters (``entry``: its path in the state dict), read
    from ``Progress``; an assignment sets the ``Progress`` counter the entry derives from (``kind``)."""

    __slots__ = ("_entry", "_kind", "_name", "_owners")

    def __init__(self, owners: LoopOwners, name: str, entry: tuple[str, ...], kind: str) -> None:
        self._owners = owners
        self._name = name
        self._entry = entry
        self._kind = kind

    def read(self, which: str) -> dict[str, int]:
        state: Any = _fit_state(self._owners)
        for key in self._entry:
            state = state[key]
        counts: dict[str, int] = state[which]
        return counts

    def write(self, which: str, stage: str, value: int) -> None:
        owners, name = self._owners, f"{self._name}.{which}.{stage}"
        p = _progress(owners)
        if self._kind == "epoch":
            # ready/started count the epoch once its start hooks ran, processed once its end hooks started
            offset = {"ready": p.epoch_started, "started": p.epoch_started, "processed": p.epoch_ending}.get(
                stage, False)
            _set_counter(owners, name, "current_epoch", value - int(offset))
        elif self._kind == "batch":
            # a batch counts as completed once its post-step work is done (not while it is in its tail)
            tail = int(stage == "completed" and p.in_batch_tail)
            if which == "total":
                _set_counter(owners, name, "total_batch_idx", value - 1 + tail)
            else:
                _set_counter(owners, name, "epoch_batches_done", value + tail)
        else:
            _set_counter(owners, name, "global_step", value)

    def is_last_batch(self) -> bool:
        return _progress(self._owners).last_batch_seen


def _epoch_progress(owners: LoopOwners) -> ProgressView:
    name = "fit_loop.epoch_progress"
    return ProgressView(name, STAGES, _FitCounts(owners, name, ("epoch_progress",), "epoch"))


def _batch_progress(owners: LoopOwners) -> ProgressView:
    name = "fit_loop.epoch_loop.batch_progress"
    counts = _FitCounts(owners, name, ("epoch_loop.batch_progress",), "batch")
    return ProgressView(name, STAGES, counts, counts.is_last_batch)


def _step_progress(owners: LoopOwners, name: str, key: str, stages: tuple[str, ...]) -> ProgressView:
    entry = ("epoch_loop.automatic_optimization.optim_progress", "optimizer", key)
    return ProgressView(name, stages, _FitCounts(owners, name, entry, "step"))


class _EvalCounter:
    """The :class:`BatchCounter` of one evaluation/prediction loop, looked up in the live ``EvalBatchCounts``."""

    __slots__ = ("_loop", "_owners")

    def __init__(self, owners: LoopOwners, loop: str) -> None:
        self._owners = owners
        self._loop = loop

    def __call__(self) -> BatchCounter:
        return _counter(self._owners, self._loop)


class OptimizerProgressView:
    """``trainer.fit_loop.epoch_loop.automatic_optimization.optim_progress.optimizer``: the optimizer's ``step``
    and ``zero_grad`` progress, both counting ``trainer.global_step`` (writing sets it)."""

    def __init__(self, owners: LoopOwners) -> None:
        base = "fit_loop.epoch_loop.automatic_optimization.optim_progress.optimizer"
        self.step = _step_progress(owners, f"{base}.step", "step", ("ready", "completed"))
        self.zero_grad = _step_progress(owners, f"{base}.zero_grad", "zero_grad", ("ready", "started", "completed"))

    def state_dict(self) -> dict[str, Any]:
        return {"step": self.step.state_dict(), "zero_grad": self.zero_grad.state_dict()}


class OptimizationProgressView:
    """``...automatic_optimization.optim_progress``: ``optimizer`` and ``optimizer_steps`` (``trainer.global_step``)."""

    def __init__(self, owners: LoopOwners) -> None:
        self._owners = owners
        self.optimizer = OptimizerProgressView(owners)

    @property
    def optimizer_steps(self) -> int:
        return _progress(self._owners).global_step

    def state_dict(self) -> dict[str, Any]:
        return {"optimizer": self.optimizer.state_dict()}


class AutomaticOptimizationView:
    """``trainer.fit_loop.epoch_loop.automatic_optimization``: its ``optim_progress`` (the step counts)."""

    def __init__(self, owners: LoopOwners) -> None:
        self.optim_progress = OptimizationProgressView(owners)


# ---------------------------------------------------------------------- evaluation and prediction
class _BatchLoopView:
    """What the evaluation and prediction loops share: batch counts, batch limits, ``state_dict``."""

    #: which ``LoaderSizes`` list holds this loop's per-dataloader limits
    _sizes_field: str = "val"

    def __init__(self, owners: LoopOwners, counter: str, name: str) -> None:
        self._owners = owners
        self._counter_name = counter
        self.batch_progress = ProgressView(f"{name}.batch_progress", STAGES,
                                           CounterSource(_EvalCounter(owners, counter)))

    @property
    def max_batches(self) -> list[int | float]:
        """The batches run per dataloader in the current (or last) run (``trainer.num_<stage>_batches``)."""
        sizes: list[int | float] = getattr(_sizes(self._owners), self._sizes_field)
        return sizes

    @property
    def _max_batches(self) -> list[int | float]:
        return self.max_batches

    @_max_batches.setter
    def _max_batches(self, value: list[int | float]) -> None:
        if not isinstance(value, list) or not all(
                isinstance(v, (int, float)) and not isinstance(v, bool) and v >= 0 for v in value):
            raise ValueError(f"`max_batches` must be a list of batch counts >= 0 (one per dataloader), got {value!r}.")
        setattr(_sizes(self._owners), self._sizes_field, list(value))

    def state_dict(self) -> dict[str, Any]:
        """Lightning's entries of this loop (what a checkpoint stores under ``loops.<stage>_loop``)."""
        from torchbolt.trainer.checkpointing import _lightning_eval_loop_state

        return _lightning_eval_loop_state(_counter(self._owners, self._counter_name),
                                          predict=self._counter_name == "predict")

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Set the batch counts from a :meth:`state_dict` (other entries are ignored).

        Raises:
            ValueError: counts that are not ints >= 0.
        """
        batch = state_dict.get("batch_progress") or {}
        total = (batch.get("total") or {}).get("completed", 0)
        current = (batch.get("current") or {}).get("completed", 0)
        counter = _counter(self._owners, self._counter_name)
        counter.set(current=current)
        counter.set(total=total)


class EvaluationLoopView(_BatchLoopView):
    """``trainer.validate_loop``, ``trainer.test_loop`` and ``trainer.fit_loop.epoch_loop.val_loop``.

    ``batch_progress`` counts the finished batches: ``current`` of the current (or last) run, ``total`` of all
    of this loop's runs (the fit's validation is counted apart from ``trainer.validate``; sanity-check batches
    are not counted). ``max_batches``: the batch limit per dataloader.
    """

    def __init__(self, owners: LoopOwners, stage: str) -> None:
        counter = {"fit": "fit_val", "validate": "validate", "test": "test"}[stage]
        name = "fit_loop.epoch_loop.val_loop" if stage == "fit" else f"{stage}_loop"
        super().__init__(owners, counter, name)
        self._stage = stage
        self._sizes_field = "test" if stage == "test" else "val"
        #: whether the last ``trainer.validate``/``trainer.test`` printed its results (its ``verbose`` argument)
        self.verbose = True

    @property
    def max_batches(self) -> list[int | float]:
        sizes = _sizes(self._owners)
        if self._stage == "fit" and self._owners.stage() == RunningStage.SANITY_CHECKING:
            return sizes.sanity_val
        return super().max_batches

    @property
    def inference_mode(self) -> bool:
        """Whether batches run under ``torch.inference_mode`` (else ``no_grad``); never during a fit's validation."""
        return False if self._stage == "fit" else _config(self._owners).inference_mode


class PredictionLoopView(_BatchLoopView):
    """``trainer.predict_loop``: batch counts and limits, and what the last ``trainer.predict`` collected
    (``predictions``; ``current_batch_indices``/``epoch_batch_indices`` with a prediction writer)."""

    _sizes_field = "predict"

    def __init__(self, owners: LoopOwners) -> None:
        super().__init__(owners, "predict", "predict_loop")

    @property
    def inference_mode(self) -> bool:
        return _config(self._owners).inference_mode

    @property
    def return_predictions(self) -> bool:
        """The last ``trainer.predict``'s ``return_predictions`` (``True`` before any)."""
        loop = self._owners.predict_loop()
        return True if loop is None else bool(loop.return_predictions)

    @property
    def predictions(self) -> list[Any]:
        """The predictions of the last ``trainer.predict`` (per dataloader when there are several)."""
        loop = self._owners.predict_loop()
        return [] if loop is None else loop.predictions

    @property
    def current_batch_indices(self) -> list[int]:
        loop = self._owners.predict_loop()
        return [] if loop is None else loop.current_batch_indices

    @property
    def epoch_batch_indices(self) -> list[list[list[int]]]:
        loop = self._owners.predict_loop()
        return [] if loop is None else loop.epoch_batch_indices


# ---------------------------------------------------------------------- fit
class TrainingEpochLoopView:
    """``trainer.fit_loop.epoch_loop``: the step limits (settable), the batch counters and the fit's ``val_loop``."""

    def __init__(self, owners: LoopOwners) -> None:
        self._owners = owners
        self.batch_progress = _batch_progress(owners)
        self.automatic_optimization = AutomaticOptimizationView(owners)
        self.val_loop = EvaluationLoopView(owners, "fit")

    @property
    def max_steps(self) -> int:
        """Stop after this many optimizer steps (-1: no limit); set it to change the limit of the next (or
        current) fit."""
        return _config(self._owners).max_steps

    @max_steps.setter
    def max_steps(self, value: int) -> None:
        _config(self._owners).max_steps = _check_limit("fit_loop.max_steps", value, -1)  # type: ignore[assignment]

    @property
    def min_steps(self) -> int | None:
        return _config(self._owners).min_steps

    @min_steps.setter
    def min_steps(self, value: int | None) -> None:
        _config(self._owners).min_steps = _check_limit("fit_loop.min_steps", value, 0, allow_none=True)

    @property
    def global_step(self) -> int:
        return _progress(self._owners).global_step

    @property
    def batch_idx(self) -> int:
        """The index in its epoch of the training batch being (or last) processed."""
        return _progress(self._owners).batch_idx

    @property
    def total_batch_idx(self) -> int:
        """The same counted across epochs (-1 before the first batch)."""
        return _progress(self._owners).total_batch_idx

    @property
    def _batches_that_stepped(self) -> int:
        # the step count the loggers use; Lightning saves it as the epoch loop's state
        return _progress(self._owners).batches_that_stepped

    @_batches_that_stepped.setter
    def _batches_that_stepped(self, value: int) -> None:
        _set_counter(self._owners, "fit_loop.epoch_loop._batches_that_stepped", "batches_that_stepped",
                     _check_limit("fit_loop.epoch_loop._batches_that_stepped", value, 0) or 0)

    @property
    def restarting(self) -> bool:
        """Whether the fit resumed from a checkpoint written inside an epoch and has not reached that point yet."""
        loop = self._owners.fit_loop()
        return loop is not None and loop.resume_pending(in_epoch=True)

    def state_dict(self) -> dict[str, Any]:
        return {"_batches_that_stepped": self._batches_that_stepped}


class FitLoopView:
    """``trainer.fit_loop``: the fit's epoch limits and counters, present from ``Trainer(...)``.

    Settings (``max_epochs``, ``min_epochs``, ``max_steps``, ``min_steps``) read and write the Trainer's
    configuration: set before ``fit`` they apply to the next fit; set during a fit (a callback extending
    training) they apply to it. Counters read (and write) the Trainer's ``Progress``.

    ``max_epochs`` is ``None`` until the first fit when ``Trainer(max_epochs=...)`` was not given; that fit sets
    it to 1000 (with a warning), or to -1 when ``max_steps``, ``max_time`` or a ``Timer`` ends the fit.
    """

    def __init__(self, owners: LoopOwners) -> None:
        self._owners = owners
        self.epoch_loop = TrainingEpochLoopView(owners)
        self.epoch_progress = _epoch_progress(owners)

    # ------------------------------------------------------------------ limits (the config's)
    @property
    def max_epochs(self) -> int | None:
        return _config(self._owners).max_epochs

    @max_epochs.setter
    def max_epochs(self, value: int | None) -> None:
        _config(self._owners).max_epochs = _check_limit("fit_loop.max_epochs", value, -1, allow_none=True)

    @property
    def min_epochs(self) -> int | None:
        return _config(self._owners).min_epochs

    @min_epochs.setter
    def min_epochs(self, value: int | None) -> None:
        _config(self._owners).min_epochs = _check_limit("fit_loop.min_epochs", value, 0, allow_none=True)

    @property
    def max_steps(self) -> int:
        return self.epoch_loop.max_steps

    @max_steps.setter
    def max_steps(self, value: int) -> None:
        self.epoch_loop.max_steps = value

    @property
    def min_steps(self) -> int | None:
        return self.epoch_loop.min_steps

    @min_steps.setter
    def min_steps(self, value: int | None) -> None:
        self.epoch_loop.min_steps = value

    @property
    def max_batches(self) -> int | float:
        """Training batches per epoch (``trainer.num_training_batches``; ``inf`` before the loader is loaded)."""
        return _sizes(self._owners).train

    @max_batches.setter
    def max_batches(self, value: int | float) -> None:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not (value >= 0):
            raise ValueError(f"`fit_loop.max_batches` must be a batch count >= 0 (or inf), got {value!r}.")
        _sizes(self._owners).train = value if value == math.inf else int(value)

    # ------------------------------------------------------------------ counters (the Progress's)
    @property
    def batch_idx(self) -> int:
        return self.epoch_loop.batch_idx

    @property
    def total_batch_idx(self) -> int:
        return self.epoch_loop.total_batch_idx

    @property
    def done(self) -> bool:
        """Whether a fit would stop now: no training batches, a limit reached, or an allowed stop request."""
        from torchbolt.trainer.fit_loop import fit_done

        return fit_done(_config(self._owners), _progress(self._owners), self.max_batches)

    @property
    def _can_stop_early(self) -> bool:
        from torchbolt.trainer.fit_loop import can_stop_early

        return can_stop_early(_config(self._owners), _progress(self._owners))

    @property
    def restarting(self) -> bool:
        """Whether the fit resumed from a checkpoint and has not yet reached the point it was written at."""
        loop = self._owners.fit_loop()
        return loop is not None and loop.resume_pending()

    # ------------------------------------------------------------------ saving
    def state_dict(self) -> dict[str, Any]:
        """Lightning's fit-loop entries (as a checkpoint stores them under ``loops.fit_loop``), derived from the
        counters; it changes only when training advances (or a counter is set)."""
        return _fit_state(self._owners)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Set the counters from a :meth:`state_dict` (this Trainer's or Lightning's).

        Raises:
            ValueError: an entry of the wrong type or out of range (naming it); nothing is changed then.
        """
        from torchbolt.trainer.checkpointing import _progress_from_other_tool
        from torchbolt.trainer.states import Progress

        optim = state_dict.get("epoch_loop.automatic_optimization.optim_progress") or {}
        step = ((optim.get("optimizer") or {}).get("step") or {}).get("total") or {}
        checkpoint = {"global_step": step.get("completed", 0)}
        # read into fresh counters first: a bad entry leaves the Trainer's untouched
        loaded = Progress()
        _progress_from_other_tool(loaded, checkpoint, dict(state_dict), "fit_loop.load_state_dict")
        _progress(self._owners).restore(loaded.state_dict(), source="fit_loop.load_state_dict")
        val = state_dict.get("epoch_loop.val_loop.batch_progress")
        if val is not None:
            self.epoch_loop.val_loop.load_state_dict({"batch_progress": val})

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(max_epochs={self.max_epochs}, max_steps={self.max_steps},"
                f" current_epoch={_progress(self._owners).current_epoch}, global_step={_progress(self._owners).global_step})")


__all__ = [
    "AutomaticOptimizationView",
    "EvaluationLoopView",
    "FitLoopView",
    "LoopOwners",
    "OptimizationProgressView",
    "OptimizerProgressView",
    "PredictionLoopView",
    "TrainingEpochLoopView",
]
