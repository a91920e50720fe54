"""The Trainer's state: which entry point runs, which loop is active, and the counters of a run.

:class:`Progress` is the one owner of every counter (epoch, step, batch index). Loops advance it
through its methods; everything else reads it. The state enums and :class:`TrainerState` are defined
in :mod:`torchbolt.utilities.states` (every layer uses them) and re-exported here, Lightning's path.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from enum import Enum
from typing import Any, Literal

from torchbolt.utilities.states import RunningStage, TrainerFn, TrainerState, TrainerStatus

#: a loader kind, as in ``limit_<stage>_batches`` and ``<stage>_dataloader``
DataStage = Literal["train", "val", "test", "predict"]
#: ``Trainer(gradient_clip_algorithm=...)`` after normalization
GradClipAlgorithm = Literal["norm", "value"]
#: when an LR scheduler steps
SchedulerInterval = Literal["step", "epoch"]
#: how a run ended, as loggers' ``finalize`` receives it
RunOutcome = Literal["success", "failed"]
#: ``setup``/``teardown`` stage names
FnName = Literal["fit", "validate", "test", "predict"]


class EpochPhase(Enum):
    """Where the current training epoch stands (what :meth:`Progress.cursor` reports)."""

    START = "start"  #: ``on_train_epoch_start`` has not run yet
    BATCHES = "batches"  #: inside the epoch's batches, before batch ``epoch_batches_done``
    BATCH_TAIL = "batch_tail"  #: a batch was optimized but its post-step work (logging, validation) is due
    BATCHES_DONE = "batches_done"  #: the last batch is finished; the epoch-end work is due
    END = "end"  #: ``on_train_epoch_end`` hooks started; the epoch's closing steps are due


@dataclass
class Progress:
    """Every counter of a fit, owned here and nowhere else.

    Attributes:
        current_epoch: completed training epochs (0 during the first epoch; ``trainer.current_epoch``).
        global_step: optimizer steps taken (``trainer.global_step``); under manual optimization,
            every ``optimizer.step()`` call counts.
        batch_idx: index within the epoch of the training batch being processed (or last processed).
        total_batch_idx: the same across epochs.
        epoch_batches_done: training batches fully processed in the current epoch (resume point).
        batches_that_stepped: batches that ended with an optimizer step; the step loggers use.
        epoch_started: whether ``on_train_epoch_start`` ran for ``current_epoch`` (mid-epoch resume).
        should_stop: a request (by a callback or the user) to stop fitting at the next chance.
        in_batch_tail: the last batch counted in ``epoch_batches_done`` was optimized but its
            post-step work (step logging, due validation, plateau schedulers, ``batches_that_stepped``)
            has not finished; a resume finishes it before fetching the next batch.
        tail_validated: the validation due after that batch already ran.
        last_batch_seen: that batch was the last of the epoch.
        batch_is_last: the batch being (or last) processed is the epoch's last, known from when it is
            fetched, before its hooks run (``trainer.is_last_batch``).
        epoch_ending: ``on_train_epoch_end`` hooks started for ``current_epoch``; a resume does not
            call them again and goes on with the epoch's closing steps.
    """

    current_epoch: int = 0
    global_step: int = 0
    batch_idx: int = 0
    total_batch_idx: int = -1
    epoch_batches_done: int = 0
    batches_that_stepped: int = 0
    epoch_started: bool = False
    should_stop: bool = False
    in_batch_tail: bool = False
    tail_validated: bool = False
    last_batch_seen: bool = False
    batch_is_last: bool = False
    epoch_ending: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    def cursor(self) -> tuple[EpochPhase, int]:
        """Where the current epoch stands: its phase and how many of its batches are done.

        The fit loop reads it once per epoch and runs what remains, in order, so a fresh epoch and
        one resumed from a checkpoint written at any point of it take the same path.
        """
        if not self.epoch_started:
            return EpochPhase.START, 0
        if self.epoch_ending:
            return EpochPhase.END, self.epoch_batches_done
        if self.in_batch_tail:
            return EpochPhase.BATCH_TAIL, self.epoch_batches_done
        if self.last_batch_seen:
            return EpochPhase.BATCHES_DONE, self.epoch_batches_done
        return EpochPhase.BATCHES, self.epoch_batches_done

    # ------------------------------------------------------------------ advancing (the loops' only writes)
    def open_epoch(self) -> None:
        """A new epoch's training is about to start (before ``on_train_epoch_start``)."""
        self.batch_idx = 0
        # `trainer.is_last_batch` keeps the finished epoch's answer until the next epoch starts (as in Lightning)
        self.batch_is_last = False

    def epoch_opened(self) -> None:
        """``on_train_epoch_start`` ran: a checkpoint written from here resumes inside the epoch."""
        self.epoch_started = True

    def begin_batch(self, batch_idx: int, is_last: bool = False) -> None:
        """Training batch ``batch_idx`` of the epoch starts; ``is_last``: it is the epoch's last."""
        self.batch_idx = batch_idx
        self.total_batch_idx += 1
        self.batch_is_last = is_last

    def batch_trained(self, batch_idx: int, is_last: bool) -> None:
        """The batch's forward/backward (and optimizer step, when due) are done; its post-step work is not."""
        self.epoch_batches_done = batch_idx + 1
        self.last_batch_seen = is_last
        self.in_batch_tail = True

    def tail_validation_done(self) -> None:
        """The validation due after the current batch ran."""
        self.tail_validated = True

    def finish_batch(self, stepped: bool) -> None:
        """The batch's post-step work is done; ``stepped``: it ended with an optimizer step."""
        if stepped:
            self.batches_that_stepped += 1
        self.in_batch_tail = False
        self.tail_validated = False

    def optimizer_stepped(self) -> None:
        """One optimizer step was taken (``trainer.global_step`` advances)."""
        self.global_step += 1

    def begin_epoch_end(self) -> None:
        """``on_train_epoch_end`` hooks start for ``current_epoch``."""
        self.epoch_ending = True

    def advance_epoch(self) -> None:
        """The epoch is complete: count it and start the next one's bookkeeping."""
        self.current_epoch += 1
        self.start_epoch_bookkeeping()

    def request_stop(self, stop: bool = True) -> None:
        """``trainer.should_stop = stop``: stop fitting at the next chance (after ``min_epochs``/``min_steps``)."""
        self.should_stop = bool(stop)

    def reset(self) -> None:
        """Every counter back to a fresh run's value (a tuner trial starts from step 0)."""
        self.restore(Progress().state_dict(), source="a fresh run")

    def start_epoch_bookkeeping(self) -> None:
        """Counters of a new epoch (after ``current_epoch`` advanced)."""
        self.epoch_batches_done = 0
        self.epoch_started = False
        self.in_batch_tail = False
        self.tail_validated = False
        self.last_batch_seen = False
        self.epoch_ending = False

    # ------------------------------------------------------------------ saving and restoring
    def state_dict(self) -> dict[str, Any]:
        return asdict(self)

    def restore(self, state: Mapping[str, Any], source: str = "the checkpoint") -> None:
        """Set the counters from ``state`` (a :meth:`state_dict`, e.g. read from a checkpoint), after checking
        every value: only known counters, of the right type and range. Unknown keys are ignored.

        Raises:
            ValueError: a counter of the wrong type or out of range, naming the key and ``source``;
                nothing is changed then.
        """
        if not isinstance(state, Mapping):
            raise ValueError(f"The loop progress in {source} is a {type(state).__name__}, not a dict.")
        checked: dict[str, Any] = {}
        for key, value in state.items():
            kind = _FIELD_KINDS.get(key)
            if kind is None:
                continue  # written by a newer version, or not a counter: never set as an attribute
            if kind is bool:
                if not isinstance(value, bool):
                    raise ValueError(f"The loop progress key {key!r} in {source} must be a bool, got {value!r}.")
            elif kind is int:
                if isinstance(value, bool) or not isinstance(value, int):
                    raise ValueError(f"The loop progress key {key!r} in {source} must be an int, got {value!r}.")
                minimum = -1 if key == "total_batch_idx" else 0
                if value < minimum:
                    raise ValueError(
                        f"The loop progress key {key!r} in {source} is {value}, but it must be >= {minimum}: the"
                        " file was damaged or edited."
                    )
            elif not isinstance(value, dict):
                raise ValueError(f"The loop progress key {key!r} in {source} must be a dict, got {value!r}.")
            checked[key] = value
        for key, value in checked.items():
            setattr(self, key, dict(value) if isinstance(value, dict) else value)

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Alias of :meth:`restore` (the usual name for it)."""
        self.restore(state)


# the type of each Progress field, for validating restored values
_FIELD_KINDS: dict[str, type] = {
    f.name: (dict if f.name == "extra" else bool if isinstance(f.default, bool) else int) for f in fields(Progress)
}


__all__ = ["EpochPhase", "Progress", "RunningStage", "TrainerFn", "TrainerState", "TrainerStatus"]
