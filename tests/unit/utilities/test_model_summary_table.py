"""The model summary: columns, FLOPs, leftover parameters, size estimate, and the callbacks that show it."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import nn

import torchbolt as pl
from torchbolt.callbacks import ModelSummary as ModelSummaryCallback
from torchbolt.callbacks import RichModelSummary
from torchbolt.callbacks.progress import RichProgressBar, TQDMProgressBar
from torchbolt.demos.boring_classes import BoringModel
from torchbolt.utilities.model_summary import (
    LEFTOVER_PARAMS_NAME,
    NOT_APPLICABLE,
    UNKNOWN_SIZE,
    ModelSummary,
    get_formatted_model_size,
    get_human_readable_count,
    summarize,
)


class TwoLayers(pl.LightningModule):
    def __init__(self, with_example: bool = True) -> None:
        super().__init__()
        self.first = nn.Linear(4, 3)
        self.second = nn.Sequential(nn.ReLU(), nn.Linear(3, 2))
        self.scale = nn.Parameter(torch.ones(5))  # lives on the root: the "other params" row
        if with_example:
            self.example_input_array = torch.zeros(2, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.second(self.first(x))


def test_columns_are_strings_with_flops_and_shapes() -> None:
    columns = dict(summarize(TwoLayers())._get_summary_data())
    assert list(columns) == [" ", "Name", "Type", "Params", "Mode", "FLOPs", "In sizes", "Out sizes"]
    assert columns["Name"] == ["first", "second", LEFTOVER_PARAMS_NAME]
    assert columns["Type"] == ["Linear", "Sequential", NOT_APPLICABLE]
    assert columns["Params"] == ["15  ", "8  ", "5  "]
    # a (2x4) @ (4x3) matmul is 2*2*4*3 multiply-adds counted as 2 FLOPs each
    assert columns["FLOPs"][0] == "48  "
    assert columns["In sizes"][:2] == ["[2, 4]", "[2, 3]"] and columns["In sizes"][2] == NOT_APPLICABLE
    assert all(isinstance(cell, str) for cells in columns.values() for cell in cells)


def test_without_example_input_there_are_no_shape_columns_and_no_flops() -> None:
    summary = summarize(TwoLayers(with_example=False))
    headers = [header for header, _ in summary._get_summary_data()]
    assert "In sizes" not in headers and "FLOPs" in headers
    assert summary.total_flops == 0
    assert summary.in_sizes == [UNKNOWN_SIZE, UNKNOWN_SIZE]


def test_depth_two_lists_nested_layers_and_counts_flops_per_layer() -> None:
    summary = ModelSummary(TwoLayers(), max_depth=2)
    assert summary.layer_names == ["first", "second", "second.0", "second.1"]
    assert summary.total_flops == 48 + 2 * 2 * 3 * 2
    assert sum(summary.flop_counts["second"].values()) == 24


def test_text_table_ends_with_the_totals() -> None:
    text = str(summarize(TwoLayers()))
    tail = text.splitlines()[-7:]
    assert [line[10:] for line in tail] == [
        "Trainable params",
        "Non-trainable params",
        "Total params",
        "Total estimated model params size (MB)",
        "Modules in train mode",
        "Modules in eval mode",
        "Total Flops",
    ]
    assert tail[2].startswith("28  ")


def test_forward_pass_runs_in_eval_mode_and_restores_each_mode() -> None:
    seen: list[bool] = []

    class Recorder(TwoLayers):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            seen.append(self.training or self.first.training)
            return super().forward(x)

    model = Recorder()
    model.second.eval()
    summarize(model)
    assert seen == [False]
    assert model.training and model.first.training and not model.second.training


def test_size_follows_the_trainer_precision() -> None:
    model = TwoLayers()
    assert summarize(model).model_size == pytest.approx(28 * 4e-6)
    model.trainer = pl.Trainer(precision="bf16-true", logger=False, enable_progress_bar=False, max_epochs=1)
    assert summarize(model).model_size == pytest.approx(28 * 2e-6)


def test_human_readable_count_keeps_a_unit_column() -> None:
    assert get_human_readable_count(0) == "0  "
    assert get_human_readable_count(999) == "999  "
    assert get_human_readable_count(1234) == "1.2 K"
    assert get_human_readable_count(400_000_000_000_000) == "400 T"
    assert get_human_readable_count(5_000_000_000_000_000) == "5,000 T"
    assert get_formatted_model_size(5500.0) == "5,500.000"
    with pytest.raises(ValueError, match="non-negative"):
        get_human_readable_count(-1)


def test_bad_max_depth_is_rejected() -> None:
    with pytest.raises(ValueError, match="`max_depth` can be -1, 0 or > 0, got -2"):
        ModelSummary(TwoLayers(), max_depth=-2)


def test_custom_summarize_receives_columns_and_totals() -> None:
    received: dict[str, Any] = {}

    class Capture(ModelSummaryCallback):
        @staticmethod
        def summarize(summary_data, total_parameters, trainable_parameters, model_size, total_training_modes,
                      total_flops, **kwargs):  # type: ignore[no-untyped-def, override]
            received.update(data=dict(summary_data), total=total_parameters, modes=total_training_modes,
                            flops=total_flops, kwargs=kwargs)

    trainer = pl.Trainer(callbacks=[Capture(max_depth=1, colour="red")], max_steps=1, limit_val_batches=0,
                         logger=False, enable_checkpointing=False, enable_progress_bar=False)
    trainer.fit(BoringModel())
    assert received["data"]["Name"] == ["layer"] and received["data"]["Mode"] == ["train"]
    assert received["total"] == 66 and received["modes"] == {"train": 1, "eval": 0}
    assert received["flops"] == 0 and received["kwargs"] == {"colour": "red"}


def test_rich_progress_bar_brings_the_rich_summary() -> None:
    pytest.importorskip("rich")
    rich_trainer = pl.Trainer(callbacks=[RichProgressBar()], logger=False, max_epochs=1)
    assert any(isinstance(cb, RichModelSummary) for cb in rich_trainer.callbacks)
    plain_trainer = pl.Trainer(callbacks=[TQDMProgressBar()], logger=False, max_epochs=1)
    summaries = [cb for cb in plain_trainer.callbacks if isinstance(cb, ModelSummaryCallback)]
    assert len(summaries) == 1 and not isinstance(summaries[0], RichModelSummary)


def test_rich_summary_prints_the_formatted_size() -> None:
    pytest.importorskip("rich")
    import io

    import rich
    from rich.console import Console

    buffer = io.StringIO()
    summary = summarize(TwoLayers())
    console = rich.get_console()
    saved = dict(console.__dict__)  # `reconfigure` rewrites the global console in place
    rich.reconfigure(file=buffer, width=200)
    try:
        RichModelSummary.summarize(summary._get_summary_data(), 28, 28, 5500.0, summary.total_training_modes, 1)
    finally:
        console.__dict__ = saved  # later tests' rich output goes to their own captured stdout again
    text = buffer.getvalue()
    assert "5,500.000" in text and "other params" in text and "Total FLOPs" in text
    assert isinstance(console, Console) and console.file is not buffer


@pytest.mark.parametrize(("example", "expected"), [([], UNKNOWN_SIZE), (torch.tensor(1.0), UNKNOWN_SIZE),
                                                   ({"x": torch.zeros(1, 4)}, [1, 4])])
def test_empty_shapes_show_as_unknown(example: Any, expected: Any) -> None:
    class Sink(nn.Module):
        def forward(self, *args: Any) -> None:
            return None

    class AnyInput(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.inner = Sink()

        def forward(self, *args: Any, **kwargs: Any) -> Any:
            return self.inner(*args, *kwargs.values())

    model = AnyInput()
    model.example_input_array = example
    assert summarize(model).in_sizes == [expected]
