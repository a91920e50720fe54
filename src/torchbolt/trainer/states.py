"""The Trainer's state: which entry point runs, which loop is active, and the counters of a run.

:class:`Progress` is the one owner of every counter (epoch, step, batch index). Loops advance it
through its methods; everything else reads it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from enum import Enum
from typing import Any


class TrainerStatus(str, Enum):
    """Whether the Trainer is idle, running or was stopped."""

    INITIALIZING = "initializing"
    RUNNING = "running"
    FINISHED = "finished"
    INTERRUPTED = "interrupted"

    @property
    def stopped(self) -> bool:
        return self in (TrainerStatus.FINISHED, TrainerStatus.INTERRUPTED)


class TrainerFn(str, Enum):
    """The Trainer entry point being run."""

    FITTING = "fit"
    VALIDATING = "validate"
    TESTING = "test"
    PREDICTING = "predict"


class RunningStage(str, Enum):
    """The loop being run. ``fit`` runs ``train``, ``sanity_check`` and ``validate`` loops."""

    TRAINING = "train"
    SANITY_CHECKING = "sanity_check"
    VALIDATING = "validate"
    TESTING = "test"
    PREDICTING = "predict"

    @property
    def evaluating(self) -> bool:
        return self in (RunningStage.VALIDATING, RunningStage.TESTING, RunningStage.SANITY_CHECKING)

    @property
    def dataloader_prefix(self) -> str | None:
        if self in (RunningStage.VALIDATING, RunningStage.SANITY_CHECKING):
            return "val"
        return self.value


@dataclass
class TrainerState:
    """``trainer.state``: status, entry point and active loop."""

    status: TrainerStatus = TrainerStatus.INITIALIZING
    fn: TrainerFn | None = None
    stage: RunningStage | None = None

    @property
    def finished(self) -> bool:
        return self.status == TrainerStatus.FINISHED

    @property
    def stopped(self) -> bool:
        return self.status.stopped


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
    epoch_ending: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    def state_dict(self) -> dict[str, Any]:
        return asdict(self)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for key, value in state.items():
            if hasattr(self, key):
                setattr(self, key, value)

    def start_epoch_bookkeeping(self) -> None:
        """Counters of a new epoch (after ``current_epoch`` advanced)."""
        self.epoch_batches_done = 0
        self.epoch_started = False
        self.in_batch_tail = False
        self.tail_validated = False
        self.last_batch_seen = False
        self.epoch_ending = False
