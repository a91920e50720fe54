"""The model summary drawn as a ``rich`` table (install ``torchbolt[rich]``)."""

from __future__ import annotations

from typing import Any

from torchbolt.callbacks.model_summary import ModelSummary
from torchbolt.utilities.imports import module_available
from torchbolt.utilities.model_summary.model_summary import get_formatted_model_size, get_human_readable_count

_RICH_AVAILABLE = module_available("rich")

# columns beyond the fixed ones, drawn only when the summary has them, with their alignment
_OPTIONAL_COLUMNS = {"Params per Device": "right", "In sizes": "right", "Out sizes": "right"}


class RichModelSummary(ModelSummary):
    """Like :class:`ModelSummary`, as a rich table printed on rich's console.

    Args:
        max_depth: levels of nested modules to list; ``-1`` all, ``0`` turns the summary off.
        **summarize_kwargs: ``header_style`` (default ``"bold magenta"``) styles the header row.

    Raises:
        ModuleNotFoundError: when ``rich`` is not installed.
    """

    def __init__(self, max_depth: int = 1, **summarize_kwargs: Any) -> None:
        if not _RICH_AVAILABLE:
            raise ModuleNotFoundError(
                "`RichModelSummary` requires `rich` to be installed. Install it with `pip install -U rich`"
                " (or `pip install 'torchbolt[rich]'`)."
            )
        super().__init__(max_depth=max_depth, **summarize_kwargs)

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
        """Print the layer table, then a grid of the totals (two ``print`` calls on rich's global console)."""
        from rich import get_console
        from rich.table import Table

        console = get_console()
        headers = [header for header, _ in summary_data]
        table = Table(header_style=summarize_kwargs.get("header_style", "bold magenta"))
        for header in headers:
            if header == " ":
                table.add_column(header, style="dim")
            elif header == "Name":
                table.add_column(header, justify="left", no_wrap=True)
            elif header in ("Params", "FLOPs"):
                table.add_column(header, justify="right")
            elif header in _OPTIONAL_COLUMNS:
                table.add_column(header, justify="right", style="white")
            else:
                table.add_column(header)
        for row in zip(*(cells for _, cells in summary_data)):
            table.add_row(*row)
        console.print(table)

        totals = Table.grid(expand=True)
        totals.add_column()
        totals.add_column()
        trainable = get_human_readable_count(int(trainable_parameters))
        frozen = get_human_readable_count(int(total_parameters - trainable_parameters))
        for label, value in (
            ("Trainable params", f"{trainable:<10}"),
            ("Non-trainable params", f"{frozen:<10}"),
            ("Total params", f"{get_human_readable_count(int(total_parameters)):<10}"),
            ("Total estimated model params size (MB)", f"{get_formatted_model_size(model_size):<10}"),
            ("Modules in train mode", str(total_training_modes["train"])),
            ("Modules in eval mode", str(total_training_modes["eval"])),
            ("Total FLOPs", get_human_readable_count(total_flops)),
        ):
            totals.add_row(f"[bold]{label}[/]: {value}")
        console.print(totals)
