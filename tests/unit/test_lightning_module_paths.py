"""Objects at Lightning's module paths behave as documented (not only importable)."""

from __future__ import annotations

import io
import os
import pickle
from pathlib import Path

import pytest
import torch
from torch import nn

from torchbolt.demos.boring_classes import BoringModel


def test_old_module_paths_name_the_same_objects() -> None:
    from torchbolt.plugins.io import AsyncCheckpointIO
    from torchbolt.plugins.io.async_plugin import AsyncCheckpointIO as FromOldPath
    from torchbolt.profilers import PassThroughProfiler
    from torchbolt.profilers.base import PassThroughProfiler as FromBase

    assert FromOldPath is AsyncCheckpointIO and FromBase is PassThroughProfiler


def test_model_summary_package_layout_and_helpers() -> None:
    from torchbolt.utilities.model_summary import (
        DeepSpeedSummary,
        ModelSummary,
        get_formatted_model_size,
        parse_batch_shape,
    )
    from torchbolt.utilities.model_summary.model_summary import ModelSummary as Direct
    from torchbolt.utilities.model_summary.model_summary_deepspeed import deepspeed_param_size

    assert Direct is ModelSummary and issubclass(DeepSpeedSummary, ModelSummary)
    assert get_formatted_model_size(1234.56789) == "1,234.568"
    assert parse_batch_shape([torch.zeros(2, 3), (torch.zeros(4),)]) == [[2, 3], [[4]]]
    assert parse_batch_shape("text") == "?"
    layer = nn.Linear(3, 2)
    assert deepspeed_param_size(layer.weight) == 6
    # a ZeRO-3 partitioned parameter is empty locally and carries its full size in `ds_numel`
    partitioned = nn.Parameter(torch.empty(0))
    partitioned.ds_numel = 1000  # type: ignore[attr-defined]
    holder = nn.Module()
    holder.p = partitioned
    assert DeepSpeedSummary(holder).total_parameters == 1000


def test_ds_checkpoint_dir_reads_the_latest_tag(tmp_path: Path) -> None:
    from torchbolt.utilities.deepspeed import CPU_DEVICE, ds_checkpoint_dir

    assert torch.device("cpu") == CPU_DEVICE
    (tmp_path / "global_step7").mkdir()
    (tmp_path / "latest").write_text("global_step7\n")
    assert ds_checkpoint_dir(tmp_path) == os.path.join(tmp_path, "global_step7")
    assert ds_checkpoint_dir(tmp_path, tag="global_step7") == os.path.join(tmp_path, "global_step7")
    with pytest.raises(FileNotFoundError, match="global_step9"):
        ds_checkpoint_dir(tmp_path, tag="global_step9")
    with pytest.raises(ValueError, match="latest"):
        ds_checkpoint_dir(tmp_path / "global_step7")


def test_remove_module_hooks_drops_every_hook() -> None:
    from torchbolt.strategies.deepspeed import remove_module_hooks

    calls: list[str] = []
    model = nn.Sequential(nn.Linear(2, 2))
    model[0].register_forward_hook(lambda *_: calls.append("forward"))
    model[0].register_forward_pre_hook(lambda *_: calls.append("pre"))
    remove_module_hooks(model)
    model(torch.randn(1, 2))
    assert calls == []


def test_double_precision_module_casts_inputs() -> None:
    from torchbolt.plugins.precision.double import LightningDoublePrecisionModule

    model = BoringModel().double()
    wrapped = LightningDoublePrecisionModule(model)
    assert wrapped(torch.randn(2, 32)).dtype == torch.float64
    assert wrapped.module is model


def test_schedule_wrapper_counts_each_stage_separately() -> None:
    from torch.profiler import ProfilerAction

    from torchbolt.profilers.pytorch import ScheduleWrapper

    seen: list[int] = []

    def schedule(step: int) -> ProfilerAction:
        seen.append(step)
        return ProfilerAction.RECORD

    wrapper = ScheduleWrapper(schedule)
    wrapper.pre_step("[Strategy]SingleDeviceStrategy.training_step")
    wrapper(0), wrapper(1)
    wrapper.pre_step("[Strategy]SingleDeviceStrategy.validation_step")
    wrapper(2)
    assert seen == [0, 1, 0] and wrapper.is_validating and wrapper.num_step == 1
    wrapper.pre_step("on_train_start")
    assert wrapper(3) == ProfilerAction.NONE and wrapper.num_step == 0
    wrapper.reset()
    wrapper.pre_step("training_step")
    assert wrapper.num_step == 0


def test_migrate_checkpoint_reports_what_it_changed() -> None:
    from torchbolt.utilities.migration import migrate_checkpoint

    old = {"pytorch-lightning_version": "1.5.0", "epoch": 1, "global_step": 8, "state_dict": {}}
    checkpoint, applied = migrate_checkpoint(old)
    assert checkpoint is old
    assert applied == {"1.6.0": ["_migrate_counters_to_progress"], "2.0.0": ["_migrate_loop_structure"]}
    assert old["legacy_pytorch-lightning_version"] == "1.5.0" and "loops" in old
    assert migrate_checkpoint({"pytorch-lightning_version": "2.2.0"})[1] == {}
    limited = {"pytorch-lightning_version": "1.5.0", "epoch": 0, "global_step": 0}
    assert list(migrate_checkpoint(limited, target_version="1.9.0")[1]) == ["1.6.0"]


def test_pl_legacy_patch_resolves_removed_and_moved_names() -> None:
    from torchbolt.callbacks import EarlyStopping
    from torchbolt.utilities.migration import pl_legacy_patch

    # pickles written by old Lightning name these; the first no longer exists anywhere
    removed = b"\x80\x02cpytorch_lightning.utilities.argparse_utils\n_gpus_arg_default\nq\x00."
    moved = b"\x80\x02cpytorch_lightning.callbacks.early_stopping\nEarlyStopping\nq\x00."
    with pytest.raises(ModuleNotFoundError):
        pickle.Unpickler(io.BytesIO(removed)).load()
    with pl_legacy_patch():
        assert pickle.Unpickler(io.BytesIO(removed)).load()(5) == 5
        assert pickle.Unpickler(io.BytesIO(moved)).load() is EarlyStopping
        buffer = io.BytesIO()
        torch.save({"fn": 1}, buffer)
        buffer.seek(0)
        assert torch.load(buffer, weights_only=False) == {"fn": 1}
    assert pickle.Unpickler is not None and pickle.Unpickler.__module__ in ("_pickle", "pickle")


def test_instantiate_module_builds_from_a_config() -> None:
    pytest.importorskip("jsonargparse")
    import torchbolt as pl
    from torchbolt.cli import instantiate_module
    from torchbolt.demos.boring_classes import DemoModel

    model = instantiate_module(pl.LightningModule, {"_class_path": "torchbolt.demos.boring_classes.DemoModel",
                                                    "out_dim": 16})
    assert isinstance(model, DemoModel) and model.l1.out_features == 16
    assert instantiate_module(DemoModel, {"out_dim": 8}).l1.out_features == 8


def test_rich_columns_render_a_progress_line() -> None:
    pytest.importorskip("rich")
    from rich.console import Console

    from torchbolt.callbacks.progress.rich_progress import (
        BatchesProcessedColumn,
        CustomBarColumn,
        CustomInfiniteTask,
        CustomProgress,
        CustomTimeColumn,
        MetricsTextColumn,
        ProcessingSpeedColumn,
    )

    out = io.StringIO()
    console = Console(file=out, width=100, color_system=None)
    metrics = MetricsTextColumn(None, "white", " | ", ".2f")
    metrics.update({"loss": 0.12345, "tag": "x"})
    progress = CustomProgress(CustomBarColumn(), BatchesProcessedColumn("white"), CustomTimeColumn("grey"),
                              ProcessingSpeedColumn("grey"), metrics, console=console, auto_refresh=False)
    endless = progress.add_task("train", total=float("inf"))
    finite = progress.add_task("val", total=10)
    progress.update(endless, advance=3)
    progress.update(finite, advance=5)
    assert isinstance(progress._tasks[endless], CustomInfiniteTask)
    console.print(progress.get_renderable())
    lines = out.getvalue().splitlines()
    assert "3/--" in lines[0] and "5/10" in lines[1]
    assert all("loss: 0.12 | tag: x" in line and "it/s" in line and "•" in line for line in lines)
