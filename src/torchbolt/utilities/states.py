"""The vocabulary of a run, shared by every layer: which entry point runs (:class:`TrainerFn`), which loop
(:class:`RunningStage`), and how it stands (:class:`TrainerStatus`, :class:`TrainerState`).

Lightning users import these from ``torchbolt.trainer.states`` (re-exported there); callbacks and
plug-ins import them from here, so that they do not depend on the engine's modules.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


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
    """The Trainer entry point being run.

    ``setup(stage)`` and ``teardown(stage)`` hooks receive it: it equals its value (``stage == "fit"``)
    and prints as it (``f"{stage}"`` is ``"fit"``), so code written for a plain string keeps working.
    """

    FITTING = "fit"
    VALIDATING = "validate"
    TESTING = "test"
    PREDICTING = "predict"

    def __str__(self) -> str:
        return str(self.value)

    def __format__(self, spec: str) -> str:
        return format(str(self.value), spec)


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
        return str(self.value)


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
