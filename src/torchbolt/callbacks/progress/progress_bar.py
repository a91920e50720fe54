"""The ``ProgressBar`` base class: what every progress bar shows and when it refreshes."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from torchbolt.callbacks.callback import Callback

if TYPE_CHECKING:
    from torchbolt.core.module import LightningModule
    from torchbolt.trainer.trainer import Trainer


class ProgressBar(Callback):
    """Base of ``TQDMProgressBar`` and ``RichProgressBar``; subclass it for a custom bar.

    ``get_metrics`` converts the logged tensors to Python numbers (on an accelerator, a host
    synchronization); a bar should call it only when it draws, never on every step.
    """

    def __init__(self) -> None:
        self._trainer: Trainer | None = None
        self._current_eval_dataloader_idx: int | None = None

    @property
    def trainer(self) -> Trainer:
        if self._trainer is None:
            raise TypeError(f"The `{type(self).__name__}._trainer` reference has not been set yet.")
        return self._trainer

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        self._trainer = trainer
        if not trainer.is_global_zero:
            self.disable()  # one bar per job, not one per process

    @property
    def is_enabled(self) -> bool:
        return True

    @property
    def is_disabled(self) -> bool:
        return not self.is_enabled

    def disable(self) -> None:
        """Turn the bar off (e.g. on non-zero ranks)."""

    def enable(self) -> None:
        """Turn the bar back on."""

    def print(self, *args: Any, **kwargs: Any) -> None:
        """Print without breaking the bar."""
        print(*args, **kwargs)

    @property
    def sanity_check_description(self) -> str:
        return "Sanity Checking"

    @property
    def train_description(self) -> str:
        return "Training"

    @property
    def validation_description(self) -> str:
        return "Validation"

    @property
    def test_description(self) -> str:
        return "Testing"

    @property
    def predict_description(self) -> str:
        return "Predicting"

    @property
    def total_train_batches(self) -> int | float:
        """Batches in a training epoch (``inf`` for an iterable dataset without length).

        With ``max_epochs=-1`` and ``max_steps`` set, at most the steps left to ``max_steps`` (so an
        endless loader still gets a finite bar).
        """
        trainer = self.trainer
        max_steps = trainer.max_steps
        if trainer.max_epochs == -1 and max_steps is not None and max_steps > 0:
            return min(trainer.num_training_batches, max_steps - trainer.global_step)
        return trainer.num_training_batches

    @property
    def total_val_batches_current_dataloader(self) -> int | float:
        return self._eval_total(self.trainer.num_sanity_val_batches if self.trainer.sanity_checking
                                else self.trainer.num_val_batches)

    @property
    def total_test_batches_current_dataloader(self) -> int | float:
        return self._eval_total(self.trainer.num_test_batches)

    @property
    def total_predict_batches_current_dataloader(self) -> int | float:
        return self._eval_total(self.trainer.num_predict_batches)

    @property
    def total_val_batches(self) -> int | float:
        """The validation batches of every dataloader this epoch (0 when this epoch does not validate)."""
        trainer = self.trainer
        every = trainer.check_val_every_n_epoch
        if not trainer.enable_validation or (every is not None and (trainer.current_epoch + 1) % every != 0):
            return 0
        return sum(trainer.num_val_batches)

    @property
    def total_test_batches(self) -> int | float:
        """The test batches of every dataloader."""
        return sum(self.trainer.num_test_batches)

    @property
    def total_predict_batches(self) -> int | float:
        """The predict batches of every dataloader."""
        return sum(self.trainer.num_predict_batches)

    def _eval_total(self, totals: list[int | float]) -> int | float:
        idx = self._current_eval_dataloader_idx or 0
        return totals[idx] if idx < len(totals) else 0

    def get_metrics(self, trainer: Trainer, pl_module: LightningModule) -> dict[str, int | str | float | dict]:
        """What the bar shows: the logger version (``v_num``) and every ``prog_bar=True`` metric.

        Override to add or remove entries.
        """
        return {**get_standard_metrics(trainer), **trainer.progress_bar_metrics}


def get_standard_metrics(trainer: Trainer) -> dict[str, int | str]:
    """``{"v_num": version}``: the logger's version (several loggers: their distinct versions joined with
    ``_``), if there is one."""
    items: dict[str, int | str] = {}
    if trainer.loggers:
        from torchbolt.loggers.utilities import _version

        version = _version(trainer.loggers)
        # a logger without a version (e.g. the dummy logger of fast_dev_run) shows none
        if version is not None and version != "":
            if isinstance(version, str):
                # show the last 4 places of long version strings
                version = version[-4:]
            items["v_num"] = version
    return items

