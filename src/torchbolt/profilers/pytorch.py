"""``PyTorchProfiler``: operator-level profiling with ``torch.profiler``, exported as Chrome traces."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.autograd.profiler import record_function
from torch.profiler import ProfilerAction, ProfilerActivity

from torchbolt.profilers.profiler import Profiler
from torchbolt.utilities.exceptions import MisconfigurationException
from torchbolt.utilities.rank_zero import WarningCache, rank_zero_warn

_warning_cache = WarningCache()
# the actions that advance the profiler's schedule, per stage (other steps are recorded, not counted). In fit
# it is the whole batch: training_step runs inside optimizer.step, and a cycle ending there would cut the step.
_STAGE_STEP = {"fit": "run_training_batch", "validate": "validation_step", "test": "test_step",
               "predict": "predict_step"}
_STAGE_BATCHES = {"fit": "num_training_batches", "validate": "num_val_batches", "test": "num_test_batches",
                  "predict": "num_predict_batches"}


class RegisterRecordFunction:
    """Label each submodule's forward as ``[pl][module]<class>: <name>`` in the profile.

    Example::

        with RegisterRecordFunction(model), torch.profiler.profile() as prof:
            model(x)
    """

    def __init__(self, model: nn.Module) -> None:
        self._model = model
        self._records: dict[str, Any] = {}
        self._handles: list[Any] = []

    def _start(self, _module: nn.Module, _inputs: Any, record_name: str) -> None:
        record = record_function("[pl][module]" + record_name)
        record.__enter__()
        self._records[record_name] = record

    def _stop(self, _module: nn.Module, _inputs: Any, _output: Any, record_name: str) -> None:
        record = self._records.pop(record_name, None)
        if record is not None:
            record.__exit__(None, None, None)

    def __enter__(self) -> None:
        for name, module in self._model.named_modules():
            if not name:
                continue
            record_name = f"{type(module).__module__}.{type(module).__name__}: {name}"
            self._handles.append(module.register_forward_pre_hook(partial(self._start, record_name=record_name)))
            self._handles.append(module.register_forward_hook(partial(self._stop, record_name=record_name)))

    def __exit__(self, *args: Any) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []


class ScheduleWrapper:
    """A ``torch.profiler`` schedule whose step counter is kept per stage (training, validation, test, predict).

    ``torch.profiler`` calls a schedule with one global step number; when a fit interleaves training and
    validation steps, the wrapped ``schedule`` should instead see how many steps of the *current* stage
    were taken. Tell the wrapper which action runs with :meth:`pre_step` (an action name ending in
    ``training_step``, ``validation_step``, ``test_step`` or ``predict_step``); each call then counts for
    that stage and asks ``schedule`` about that stage's count.

    Args:
        schedule: a ``torch.profiler.schedule(...)`` (step number -> ``ProfilerAction``).
    """

    _STAGES = ("training_step", "validation_step", "test_step", "predict_step")

    def __init__(self, schedule: Callable[[int], ProfilerAction]) -> None:
        self._schedule = schedule
        self.reset()

    def reset(self) -> None:
        """Forget every stage's count (a new run)."""
        self._steps: dict[str, int] = dict.fromkeys(self._STAGES, 0)
        self._current_action: str | None = None
        self._start_action_name: str | None = None

    def setup(self, start_action_name: str) -> None:
        """Record the action the profiled run started with (e.g. ``on_fit_start``)."""
        self._start_action_name = start_action_name

    def pre_step(self, current_action: str) -> None:
        """Say which action the next schedule call belongs to."""
        self._current_action = current_action

    def _stage(self) -> str | None:
        action = self._current_action or ""
        return next((stage for stage in self._STAGES if action.endswith(stage)), None)

    @property
    def is_training(self) -> bool:
        return self._stage() == "training_step"

    @property
    def is_validating(self) -> bool:
        return self._stage() == "validation_step"

    @property
    def is_testing(self) -> bool:
        return self._stage() == "test_step"

    @property
    def is_predicting(self) -> bool:
        return self._stage() == "predict_step"

    @property
    def num_step(self) -> int:
        """Steps taken so far in the current action's stage (0 for an action of no stage)."""
        stage = self._stage()
        return self._steps[stage] if stage is not None else 0

    def __call__(self, num_step: int) -> ProfilerAction:
        """The wrapped schedule's action for the current stage's count (``num_step`` itself is not used)."""
        stage = self._stage()
        if stage is None:
            return ProfilerAction.NONE
        action = self._schedule(self._steps[stage])
        self._steps[stage] += 1
        return action


class PyTorchProfiler(Profiler):
    """Profile operators (CPU, and CUDA kernels on GPU) with ``torch.profiler``; every Trainer action is a
    ``record_function`` range named ``[pl][profile]<action>``.

    By default the profiler skips 1 step, warms up for 1 and records 3 (``torch.profiler.schedule(wait=1,
    warmup=1, active=3, repeat=1)``) of the stage's batches (``run_training_batch`` in fit, ``validation_step``
    in validate...); with fewer than 5 batches it records every step. When a recording cycle ends, a
    Chrome trace is written to ``<dirpath>/<stage>-<filename>-<action>.<time>.pt.trace.json`` (open it in
    ``chrome://tracing`` or Perfetto). The summary is a table of the recorded operators.

    Args:
        dirpath: where traces and the report go (default ``trainer.log_dir``).
        filename: write the report to ``<dirpath>/<stage>-<filename>.txt`` instead of printing it.
        group_by_input_shapes: group the table by operator input shapes (needs ``record_shapes=True``).
        emit_nvtx: emit NVTX ranges for ``nsys``/``nvprof`` instead of collecting a profile.
        export_to_chrome: write the Chrome trace files.
        row_limit: rows in the summary table (``-1``: all).
        sort_by_key: the table's sort column (``cpu_time_total``, ``cuda_time_total``, ``count``...).
        record_module_names: label each submodule's forward in the trace.
        table_kwargs: extra arguments of ``EventList.table``.
        **profiler_kwargs: passed to ``torch.profiler.profile`` (``schedule``, ``record_shapes``,
            ``profile_memory``, ``with_stack``, ``activities``, ``on_trace_ready``...).

    Raises:
        MisconfigurationException: for an unknown ``sort_by_key`` or a ``schedule`` that is not a valid schedule.
        KeyError: for an invalid ``table_kwargs`` key.

    Example::

        trainer = Trainer(profiler=PyTorchProfiler(filename="perf", record_shapes=True), max_steps=10)
    """

    STEP_FUNCTIONS = {"training_step", "validation_step", "test_step", "predict_step"}
    AVAILABLE_SORT_KEYS = {
        "cpu_time", "cuda_time", "cpu_time_total", "cuda_time_total", "cpu_memory_usage", "cuda_memory_usage",
        "self_cpu_memory_usage", "self_cuda_memory_usage", "count", "device_time", "device_time_total",
        "self_cpu_time_total", "self_cuda_time_total", "self_device_time_total",
    }

    def __init__(
        self,
        dirpath: str | Path | None = None,
        filename: str | None = None,
        group_by_input_shapes: bool = False,
        emit_nvtx: bool = False,
        export_to_chrome: bool = True,
        row_limit: int = 20,
        sort_by_key: str | None = None,
        record_module_names: bool = True,
        table_kwargs: dict[str, Any] | None = None,
        **profiler_kwargs: Any,
    ) -> None:
        super().__init__(dirpath=dirpath, filename=filename)
        self._group_by_input_shapes = group_by_input_shapes and profiler_kwargs.get("record_shapes", False)
        self._emit_nvtx = emit_nvtx
        self._export_to_chrome = export_to_chrome
        self._row_limit = row_limit
        self._record_module_names = record_module_names
        self._table_kwargs = dict(table_kwargs or {})
        self._user_schedule: Callable[[int], ProfilerAction] | None = profiler_kwargs.pop("schedule", None)
        self._user_trace_ready = profiler_kwargs.pop("on_trace_ready", None)
        self._profiler_kwargs = profiler_kwargs
        self._sort_by_key = sort_by_key or _default_sort_by_key(profiler_kwargs)
        self.profiler: Any = None
        self.function_events: Any = None
        self._register: RegisterRecordFunction | None = None
        self._recording_map: dict[str, Any] = {}
        self._record_all = False
        self._steps_seen = 0
        self._last_step_action: str | None = None
        _validate(self._sort_by_key, self.AVAILABLE_SORT_KEYS, self._user_schedule, self._table_kwargs)

    # ------------------------------------------------------------------ schedule
    def _schedule(self, step: int) -> ProfilerAction:
        if self._user_schedule is not None:
            return self._user_schedule(step)
        if self._record_all:
            return ProfilerAction.RECORD
        return _DEFAULT_SCHEDULE(step)

    def _on_trace_ready(self, prof: Any) -> None:
        if self._user_trace_ready is not None:
            self._user_trace_ready(prof)
            return
        if not self._export_to_chrome:
            return
        if self.dirpath is None:
            rank_zero_warn("The PyTorchProfiler failed to export trace as `dirpath` is None")
            return
        from torch.profiler import tensorboard_trace_handler

        worker = self._prepare_filename(action_name=self._last_step_action, extension="")
        tensorboard_trace_handler(str(self.dirpath), worker)(prof)

    # ------------------------------------------------------------------ actions
    def start(self, action_name: str) -> None:
        if self.profiler is None:
            self._create_profiler()
        if self._register is None and self._record_module_names and self._lightning_module is not None:
            self._register = RegisterRecordFunction(self._lightning_module)
            self._register.__enter__()
        if self.profiler is not None and action_name not in self._recording_map:
            recording = record_function("[pl][profile]" + action_name)
            recording.__enter__()
            self._recording_map[action_name] = recording

    def stop(self, action_name: str) -> None:
        recording = self._recording_map.pop(action_name, None)
        if recording is not None:
            recording.__exit__(None, None, None)
        if self._emit_nvtx or self.profiler is None:
            return
        main_step = _STAGE_STEP.get(self._stage or "fit", "training_step")
        if action_name.endswith(main_step):
            self._steps_seen += 1
            if self._steps_seen == 1 and self._user_schedule is None and self._stage_batches() < 5:
                _warning_cache.warn("The PyTorch Profiler default schedule will be overridden as there is not enough"
                                    " steps to properly record traces.")
                self._record_all = True
            self._last_step_action = action_name
            self.profiler.step()

    def _stage_batches(self) -> float:
        trainer = getattr(self._lightning_module, "_trainer", None)
        if trainer is None:
            return float("inf")
        batches = getattr(trainer, _STAGE_BATCHES.get(self._stage or "fit", "num_training_batches"), float("inf"))
        return float(sum(batches) if isinstance(batches, list) else batches)

    def _create_profiler(self) -> None:
        if torch.autograd._profiler_enabled():
            # a profiler left open (e.g. by an earlier PyTorchProfiler that never described) blocks a new one
            torch.autograd._disable_profiler()
        if self._emit_nvtx:
            self.profiler = torch.autograd.profiler.emit_nvtx()
            self.profiler.__enter__()
            return
        kwargs = {k: v for k, v in self._profiler_kwargs.items()
                  if k in inspect.signature(torch.profiler.profile.__init__).parameters}
        kwargs.setdefault("activities", _default_activities())
        self.profiler = torch.profiler.profile(schedule=self._schedule, on_trace_ready=self._on_trace_ready, **kwargs)
        self.profiler.__enter__()

    def _close_profiler(self) -> None:
        for action in list(self._recording_map):
            self._recording_map.pop(action).__exit__(None, None, None)
        if self.profiler is not None:
            self.profiler.__exit__(None, None, None)
            if not self._emit_nvtx:
                self.function_events = self.profiler.events()
            self.profiler = None
        if self._register is not None:
            self._register.__exit__(None, None, None)
            self._register = None
        self._steps_seen = 0
        self._record_all = False

    # ------------------------------------------------------------------ report
    def summary(self) -> str:
        if not self._profiler_kwargs.get("enabled", True) or self._emit_nvtx:
            self._close_profiler()
            return ""
        self._close_profiler()
        if not self.function_events:
            return ""
        averages = self.function_events.key_averages(group_by_input_shapes=self._group_by_input_shapes)
        table = averages.table(sort_by=self._sort_by_key, row_limit=self._row_limit, **self._table_kwargs)
        return self._stats_to_str({"records": table})

    def teardown(self, stage: str | None) -> None:
        self._close_profiler()
        super().teardown(stage=stage)


# one cycle: skip the first step (one-time costs), warm up on the second, record three
_DEFAULT_SCHEDULE = torch.profiler.schedule(wait=1, warmup=1, active=3, repeat=1)


def _default_activities() -> list[ProfilerActivity]:
    activities = [ProfilerActivity.CPU]
    if torch.cuda.is_available():
        activities.append(ProfilerActivity.CUDA)
    return activities


def _default_sort_by_key(profiler_kwargs: dict[str, Any]) -> str:
    activities = profiler_kwargs.get("activities") or []
    cuda = ProfilerActivity.CUDA in activities or (not activities and torch.cuda.is_available())
    return f"{'cuda' if cuda else 'cpu'}_time_total"


def _validate(sort_by_key: str, allowed: set[str], schedule: Any, table_kwargs: dict[str, Any]) -> None:
    if sort_by_key not in allowed:
        raise MisconfigurationException(
            f"`PyTorchProfiler(sort_by_key={sort_by_key!r})`: use one of {sorted(allowed)}."
        )
    if schedule is not None:
        if not callable(schedule):
            raise MisconfigurationException(f"Schedule should be a callable. Found: {schedule}")
        action = schedule(0)
        if not isinstance(action, ProfilerAction):
            raise MisconfigurationException(f"Schedule should return a `torch.profiler.ProfilerAction`. Found: {action}")
    from torch.autograd.profiler_util import EventList

    valid = set(inspect.signature(EventList.table).parameters) - {"self", "sort_by", "row_limit"}
    for key in table_kwargs:
        if key in {"sort_by", "row_limit"}:
            raise KeyError(f"Found invalid table_kwargs key: {key}. This is already a positional argument of the Profiler.")
        if key not in valid:
            raise KeyError(f"Found invalid table_kwargs key: {key}. Should be within {valid}.")
