"""The model summary drawn as a ``rich`` table (install ``torchbolt[rich]``)."""

from __future__ import annotations

from typing import Any

from torchbolt.callbacks.model_summary import ModelSummary
from torchbolt.utilities.imports import _require
from torchbolt.utilities.model_summary import ModelSummary as _Summary
from torchbolt.utilities.model_summary import get_human_readable_count


class RichModelSummary(ModelSummary):
    """Like :class:`ModelSummary`, as a rich table.

    Raises:
        ModuleNotFoundError: when ``rich`` is not installed.
    """

    def __init__(self, max_depth: int = 1, **summarize_kwargs: Any) -> None:
        _require("rich", "rich", "RichModelSummary")
        super().__init__(max_depth=max_depth, **summarize_kwargs)

    @staticmethod
    def summarize(summary: _Summary) -> None:
        from rich.console import Console
        from rich.table import Table

        table = Table(header_style="bold magenta")
        for header, _ in summary._table_columns():
            table.add_column(header)
        columns = [values for _, values in summary._table_columns()]
        for row in zip(*columns):
            table.add_row(*row)
        console = Console()
        console.print(table)
        trainable = summary.trainable_parameters
        total = summary.total_parameters
        console.print(
            f"[bold]Trainable params[/]: {get_human_readable_count(trainable)}\n"
            f"[bold]Non-trainable params[/]: {get_human_readable_count(total - trainable)}\n"
            f"[bold]Total params[/]: {get_human_readable_count(total)}\n"
            f"[bold]Total estimated model params size (MB)[/]: {summary.model_size:,.3f}"
        )
