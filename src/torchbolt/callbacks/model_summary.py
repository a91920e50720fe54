"""Log a table of the model's layers, parameter counts, modes and FLOPs when fit starts."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from torchbolt.callbacks.callback import Callback
from torchbolt.utilities.model_summary.model_summary import ModelSummary as _Summary
from torchbolt.utilities.model_summary.model_summary import _format_summary_table, summarize

if TYPE_CHECKING:
    from torchbolt.core.module import LightningModule
    from torchbolt.trainer.trainer import Trainer

log = logging.getLogger(__name__)


class ModelSummary(Callback):
    """Builds the model summary at the start of fit and hands it to :meth:`summarize` on the global-zero process.

    Args:
        max_depth: levels of nested modules to list; ``-1`` all, ``0`` turns the summary off.
        **summarize_kwargs: passed on to :meth:`summarize` (e.g. ``header_style`` for the rich table).

    Override :meth:`summarize` (a static method) to present the table differently; it receives the columns as
    ``(header, cells)`` pairs of strings and the totals.
    """

    def __init__(self, max_depth: int = 1, **summarize_kwargs: Any) -> None:
        if isinstance(max_depth, bool) or not isinstance(max_depth, int) or max_depth < -1:
            raise ValueError(f"`ModelSummary(max_depth={max_depth!r})`: pass -1, 0 or a positive int.")
        self._max_depth = max_depth
        self._summarize_kwargs = summarize_kwargs

    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not self._max_depth:
            return
        # built on every rank: the example forward pass must run everywhere if a layer synchronizes
        summary = self._summary(trainer, pl_module)
        data = summary._get_summary_data()
        if not trainer.is_global_zero:
            return
        self.summarize(
            data,
            summary.total_parameters,
            summary.trainable_parameters,
            summary.model_size,
            summary.total_training_modes,
            total_flops=summary.total_flops,
            **self._summarize_kwargs,
        )

    def _summary(self, trainer: Trainer, pl_module: LightningModule) -> _Summary:
        return summarize(pl_module, max_depth=self._max_depth)

    @staticmethod
    def summarize(
        summary_data: list[tuple[str, list[str]]],
        total_parameters: int,
        trainable_parameters: int,
        model_size: float,
        total_training_modes: dict[str, int],
        total_flops: int = 0,
        **summarize_kwargs: Any,
    ) -> None:
        """Log the table (at INFO level, on the ``torchbolt`` logger)."""
        table = _format_summary_table(
            total_parameters, trainable_parameters, model_size, total_training_modes, total_flops, *summary_data
        )
        log.info("\n" + table)
