"""Print a table of the model's layers and parameter counts when fit starts."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from torchbolt.callbacks.callback import Callback
from torchbolt.utilities.model_summary import ModelSummary as _Summary

if TYPE_CHECKING:
    from torchbolt.core.module import LightningModule
    from torchbolt.trainer.trainer import Trainer


class ModelSummary(Callback):
    """Prints the summary on the global-zero process at the start of fit.

    Args:
        max_depth: levels of nested modules to list; ``-1`` all, ``0`` only the totals.
    """

    def __init__(self, max_depth: int = 1, **summarize_kwargs: Any) -> None:
        if not isinstance(max_depth, int) or max_depth < -1:
            raise ValueError(f"`ModelSummary(max_depth={max_depth!r})`: pass -1, 0 or a positive int.")
        self._max_depth = max_depth
        self._summarize_kwargs = summarize_kwargs

    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        summary = self._summary(trainer, pl_module)
        self.summarize(summary)

    def _summary(self, trainer: Trainer, pl_module: LightningModule) -> _Summary:
        return _Summary(pl_module, max_depth=self._max_depth)

    @staticmethod
    def summarize(summary: _Summary) -> None:
        """Print ``summary`` (override to print differently)."""
        print(str(summary))
