"""Profilers: the reports and traces they write, the actions the Trainer times, and no cost without one."""

from __future__ import annotations

import glob
import json
import os
import pstats
import time

import pytest

from torchbolt import Trainer
from torchbolt.demos.boring_classes import BoringModel
from torchbolt.profilers import AdvancedProfiler, PassThroughProfiler, PyTorchProfiler, SimpleProfiler
from torchbolt.profilers.profiler import profiled
from torchbolt.utilities.exceptions import MisconfigurationException

STEP_ACTIONS = {
    "run_training_epoch", "run_training_batch", "optimizer_step", "[_TrainingEpochLoop].train_dataloader_next",
    "[Strategy]SingleDeviceStrategy.training_step", "[Strategy]SingleDeviceStrategy.backward",
    "[Strategy]SingleDeviceStrategy.batch_to_device", "[Strategy]SingleDeviceStrategy.validation_step",
    "[_EvaluationLoop].val_next", "[LightningModule]BoringModel.optimizer_step",
}


def _fit(tmp_path, profiler, **kwargs) -> Trainer:
    trainer = Trainer(profiler=profiler, max_epochs=1, limit_train_batches=6, limit_val_batches=2, logger=False,
                      enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False,
                      default_root_dir=tmp_path, **kwargs)
    trainer.fit(BoringModel())
    return trainer


def test_simple_profiler_times_hooks_and_step_phases(tmp_path):
    profiler = SimpleProfiler()
    _fit(tmp_path, profiler)
    recorded = profiler.recorded_durations
    assert set(recorded) >= STEP_ACTIONS
    assert len(recorded["run_training_batch"]) == 6
    assert len(recorded["[_TrainingEpochLoop].train_dataloader_next"]) == 6
    # sanity check (2) + end-of-epoch validation (2)
    assert len(recorded["[Strategy]SingleDeviceStrategy.validation_step"]) == 4
    assert len(recorded["run_training_epoch"]) == 1


def test_simple_profiler_prints_the_table_at_the_end_of_fit(tmp_path, capsys):
    _fit(tmp_path, "simple")
    out = capsys.readouterr().out
    assert out.startswith("FIT Profiler Report")
    header = next(line for line in out.splitlines() if "Action" in line)
    assert [c.strip() for c in header.split("|") if c.strip()] == [
        "Action", "Mean duration (s)", "Num calls", "Total time (s)", "Percentage %"]
    row = next(line for line in out.splitlines() if line.startswith("|  run_training_batch"))
    assert [c.strip() for c in row.split("|") if c.strip()][2] == "6"


def test_simple_profiler_writes_to_dirpath_filename(tmp_path, capsys):
    profiler = SimpleProfiler(dirpath=tmp_path / "prof", filename="perf")
    _fit(tmp_path, profiler)
    report = (tmp_path / "prof" / "fit-perf.txt").read_text()
    assert "run_training_batch" in report
    assert "Profiler Report" not in capsys.readouterr().out


def test_filename_without_dirpath_goes_to_the_log_dir(tmp_path):
    from torchbolt.loggers import CSVLogger

    logger = CSVLogger(tmp_path)
    profiler = SimpleProfiler(filename="perf")
    trainer = Trainer(profiler=profiler, logger=logger, max_steps=2, limit_val_batches=0, enable_progress_bar=False,
                      enable_model_summary=False, enable_checkpointing=False, default_root_dir=tmp_path)
    trainer.fit(BoringModel())
    assert os.path.isfile(os.path.join(logger.log_dir, "fit-perf.txt"))


def test_simple_profiler_not_extended_has_three_columns(tmp_path):
    profiler = SimpleProfiler(extended=False)
    profiler.setup("fit")
    with profiler.profile("a"):
        time.sleep(0.001)
    header = next(line for line in profiler.summary().splitlines() if "Action" in line)
    assert [c.strip() for c in header.split("|") if c.strip()] == ["Action", "Mean duration (s)", "Total time (s)"]


def test_simple_profiler_rejects_unbalanced_actions():
    profiler = SimpleProfiler()
    with pytest.raises(ValueError, match="never started"):
        profiler.stop("x")
    profiler.start("x")
    with pytest.raises(ValueError, match="already started"):
        profiler.start("x")


def test_advanced_profiler_reports_cprofile_stats_per_action(tmp_path):
    profiler = AdvancedProfiler(dirpath=tmp_path, filename="adv", line_count_restriction=5, dump_stats=True)
    _fit(tmp_path, profiler)
    report = (tmp_path / "fit-adv.txt").read_text()
    assert "Profile stats for: run_training_batch" in report
    assert "Ordered by: cumulative time" in report
    dump = tmp_path / "fit-adv-[Strategy]SingleDeviceStrategy.training_step.prof"
    stats = pstats.Stats(str(dump))  # the dump is a standard pstats file
    called = {(os.path.basename(f[0]), f[2]) for f in stats.stats}  # type: ignore[attr-defined]
    assert ("boring_classes.py", "training_step") in called


def test_advanced_profiler_nested_actions_resume_the_outer_one():
    profiler = AdvancedProfiler()
    profiler.start("outer")
    profiler.start("inner")
    profiler.stop("inner")
    sum(range(1000))
    profiler.stop("outer")
    with pytest.raises(ValueError, match="never started"):
        profiler.stop("outer")


def test_pytorch_profiler_exports_a_chrome_trace_with_action_names(tmp_path, capsys):
    profiler = PyTorchProfiler(dirpath=tmp_path, filename="pt")
    _fit(tmp_path, profiler)
    (trace_path,) = glob.glob(str(tmp_path / "fit-pt-*.pt.trace.json"))
    with open(trace_path) as f:
        trace = json.load(f)
    names = {event.get("name") for event in trace["traceEvents"]}
    assert "[pl][profile][Strategy]SingleDeviceStrategy.training_step" in names
    assert "[pl][profile]run_training_batch" in names
    assert "[pl][module]torch.nn.modules.linear.Linear: layer" in names
    assert any(name and name.startswith("aten::") for name in names)
    report = (tmp_path / "fit-pt.txt").read_text()
    assert "Profile stats for: records" in report and "aten::" in report


def test_pytorch_profiler_default_schedule_records_three_steps(tmp_path):
    profiler = PyTorchProfiler(dirpath=tmp_path, filename="pt", record_module_names=False)
    _fit(tmp_path, profiler)
    (trace_path,) = glob.glob(str(tmp_path / "fit-pt-*.pt.trace.json"))
    with open(trace_path) as f:
        events = json.load(f)["traceEvents"]
    steps = {e["name"] for e in events if str(e.get("name", "")).startswith("ProfilerStep#")}
    assert steps == {"ProfilerStep#2", "ProfilerStep#3", "ProfilerStep#4"}  # wait 1, warmup 1, active 3


def test_pytorch_profiler_validates_its_arguments():
    with pytest.raises(MisconfigurationException, match="sort_by_key"):
        PyTorchProfiler(sort_by_key="nonsense")
    with pytest.raises(MisconfigurationException, match="Schedule should be a callable"):
        PyTorchProfiler(schedule=3)
    with pytest.raises(KeyError, match="row_limit"):
        PyTorchProfiler(table_kwargs={"row_limit": 1})


def test_profiler_strings_resolve_and_unknown_ones_are_rejected():
    assert isinstance(Trainer(profiler="simple", logger=False).profiler, SimpleProfiler)
    assert isinstance(Trainer(profiler="Advanced", logger=False).profiler, AdvancedProfiler)
    assert isinstance(Trainer(profiler="pytorch", logger=False).profiler, PyTorchProfiler)
    assert isinstance(Trainer(logger=False).profiler, PassThroughProfiler)
    with pytest.raises(MisconfigurationException, match="can only be one of"):
        Trainer(profiler="fast", logger=False)


def test_no_profiler_leaves_the_hot_path_unwrapped(tmp_path):
    trainer = _fit(tmp_path, None)
    strategy = trainer.strategy
    for name in ("training_step", "validation_step", "backward", "batch_to_device"):
        assert name not in vars(strategy), f"{name} was wrapped without a profiler"
    loop = trainer.run_context.fit_loop
    assert loop is not None and "_run_epoch" not in vars(loop) and "run" not in vars(loop.optimization)
    assert not hasattr(strategy._lightning_optimizers[0]._step_fn, "_torchbolt_profiler")
    assert trainer.run_context is not None and trainer.run_context.profiler is None


def test_profiled_wrapper_is_built_once_and_times_each_call():
    profiler = SimpleProfiler()
    fn = profiled(lambda x: x + 1, "inc", profiler)
    assert [fn(i) for i in range(3)] == [1, 2, 3]
    assert len(profiler.recorded_durations["inc"]) == 3


def test_profile_context_manager_records_on_exception():
    profiler = SimpleProfiler()
    with pytest.raises(RuntimeError), profiler.profile("boom"):
        raise RuntimeError
    assert len(profiler.recorded_durations["boom"]) == 1
