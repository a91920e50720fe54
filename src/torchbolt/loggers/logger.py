"""The ``Logger`` interface every experiment logger implements."""

from __future__ import annotations

import dataclasses
import functools
import json
import os
from abc import ABC, abstractmethod
from argparse import Namespace
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from torch import Tensor, nn

from torchbolt.utilities.rank_zero import rank_zero_only


def rank_zero_experiment(fn: Callable) -> Callable:
    """Decorate a logger's ``experiment`` property: non-zero ranks get a do-nothing object."""

    @functools.wraps(fn)
    def experiment(self: Any) -> Any:
        if rank_zero_only.rank > 0:
            return DummyExperiment()
        return fn(self)

    return experiment


class DummyExperiment:
    """Accepts any call, item read or item assignment and does nothing (the experiment of non-zero ranks)."""

    def nop(self, *args: Any, **kw: Any) -> None:
        pass

    def __getattr__(self, _: Any) -> Callable:
        return self.nop

    def __getitem__(self, idx: int) -> DummyExperiment:
        return self

    def __setitem__(self, *args: Any, **kwargs: Any) -> None:
        pass


_DummyExperiment = DummyExperiment  # the earlier private name


class Logger(ABC):
    """Base class of experiment loggers.

    The Trainer calls :meth:`log_hyperparams` once at the start of fit, :meth:`log_metrics` at every
    flush (every ``log_every_n_steps`` training steps and at epoch ends) with ``global_step`` as the
    step, :meth:`save` after logging, :meth:`after_save_checkpoint` after each checkpoint and
    :meth:`finalize` at the end of the run. Only the global-zero process logs. ``TensorBoardLogger``
    and ``CSVLogger`` (whose ``save`` is a file flush) are saved at most every few seconds instead,
    and always at the end of each training epoch and validation run, before a checkpoint is written,
    when the fit stops and in :meth:`finalize`.
    """

    @property
    @abstractmethod
    def name(self) -> str | None:
        """The experiment's name."""

    @property
    @abstractmethod
    def version(self) -> int | str | None:
        """The experiment's version."""

    @property
    def root_dir(self) -> str | None:
        """The directory all versions of the experiment live in."""
        return None

    @property
    def log_dir(self) -> str | None:
        """The directory this version writes to."""
        return None

    @property
    def save_dir(self) -> str | None:
        """The directory the logger was asked to write under."""
        return None

    @property
    def group_separator(self) -> str:
        """What separates a group from a name in metric keys (``"train/loss"``)."""
        return "/"

    @property
    def experiment(self) -> Any:
        """The backing object (``SummaryWriter``, an MLflow client, a W&B run...)."""
        return None

    @abstractmethod
    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        """Record ``metrics`` (plain numbers) at ``step``."""

    @abstractmethod
    def log_hyperparams(self, params: dict[str, Any] | Namespace, *args: Any, **kwargs: Any) -> None:
        """Record the run's hyperparameters."""

    def log_graph(self, model: nn.Module, input_array: Any | None = None) -> None:
        """Record the model's computational graph."""

    def save(self) -> None:
        """Flush what was logged to storage."""

    def finalize(self, status: str) -> None:
        """Close the experiment; ``status`` is ``"success"``, ``"failed"`` or ``"finished"``."""
        self.save()

    def after_save_checkpoint(self, checkpoint_callback: Any) -> None:
        """Called after a checkpoint was written (loggers that upload checkpoints use it)."""


class DummyLogger(Logger):
    """A logger that does nothing (used when logging is off on some ranks)."""

    def __init__(self) -> None:
        super().__init__()
        self._experiment = DummyExperiment()

    @property
    def experiment(self) -> DummyExperiment:
        return self._experiment

    def log_metrics(self, *args: Any, **kwargs: Any) -> None:
        pass

    def log_hyperparams(self, *args: Any, **kwargs: Any) -> None:
        pass

    @property
    def name(self) -> str:
        return ""

    @property
    def version(self) -> str:
        return ""

    def __getitem__(self, idx: int) -> DummyLogger:
        # lets code written for a list of loggers (``self.logger[0]``) run unchanged
        return self

    def __getattr__(self, name: str) -> Callable:
        # any other logger method (``log_image``, ``watch``...) is accepted and does nothing
        if name.startswith("__"):
            raise AttributeError(name)

        def method(*args: Any, **kwargs: Any) -> None:
            return None

        return method


def _next_version(root_dir: str, fs: Any = None) -> int:
    """One more than the largest ``version_N`` under ``root_dir`` (0 when there is none)."""
    if fs is None:
        from torchbolt.utilities.cloud_io import get_filesystem

        fs = get_filesystem(root_dir)
    try:
        listing = fs.listdir(root_dir, detail=True)
    except (FileNotFoundError, OSError):
        return 0
    versions = []
    for entry in listing:
        name = os.path.basename(str(entry["name"]).rstrip("/"))
        if entry.get("type") == "directory" and name.startswith("version_"):
            suffix = name.split("_", 1)[1]
            if suffix.isdigit():
                versions.append(int(suffix))
    return max(versions) + 1 if versions else 0


def _flatten_dict(params: Mapping[Any, Any], delimiter: str = "/", parent_key: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a/b": 1}`` (namespaces and dataclass instances are flattened too)."""
    result: dict[str, Any] = {}
    for k, v in params.items():
        new_key = f"{parent_key}{delimiter}{k}" if parent_key else str(k)
        if dataclasses.is_dataclass(v) and not isinstance(v, type):
            v = dataclasses.asdict(v)
        elif isinstance(v, Namespace):
            v = vars(v)
        if isinstance(v, Mapping):
            result.update(_flatten_dict(v, delimiter, new_key))
        else:
            result[new_key] = v
    return result


def _convert_params(params: Mapping[str, Any] | Namespace | None) -> dict[str, Any]:
    if params is None:
        return {}
    if isinstance(params, Namespace):
        return vars(params)
    return dict(params)


def _add_prefix(metrics: Mapping[str, Any], prefix: str, separator: str) -> dict[str, Any]:
    if not prefix:
        return dict(metrics)
    return {f"{prefix}{separator}{k}": v for k, v in metrics.items()}


def _sanitize_params(params: Mapping[str, Any]) -> dict[str, Any]:
    """Values as ``bool``/``int``/``float``/``str``/``Tensor`` (what TensorBoard's hparams accept); others as ``str``."""
    out: dict[str, Any] = {}
    for key, value in params.items():
        if hasattr(value, "item") and type(value).__module__ == "numpy" and getattr(value, "ndim", 1) == 0:
            value = value.item()  # numpy scalars become Python numbers, not strings
        is_tensor = isinstance(value, Tensor)
        if (is_tensor and value.ndim > 1) or (not is_tensor and type(value) not in (bool, int, float, str)):
            value = str(value)
        out[key] = value
    return out


def _sanitize_callable_params(params: Mapping[str, Any]) -> dict[str, Any]:
    """Callables (a class, a function) are recorded by name; they are never called."""
    return {k: (getattr(v, "__name__", repr(v)) if callable(v) else v) for k, v in params.items()}


def _convert_json_serializable(params: Mapping[str, Any]) -> dict[str, Any]:
    """Values JSON cannot encode become their ``str``, recursively through dicts."""

    def convert(value: Any) -> Any:
        if isinstance(value, Mapping):
            return {str(k): convert(v) for k, v in value.items()}
        try:
            json.dumps(value)
        except (TypeError, ValueError, OverflowError):
            return str(value)
        return value

    return {k: convert(v) for k, v in params.items()}




def _is_number(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    return isinstance(value, (int, float)) or (isinstance(value, Tensor) and value.numel() == 1)


def merge_dicts(
    dicts: Sequence[Mapping[str, Any]],
    agg_key_funcs: Mapping[str, Callable[[Sequence[float]], float]] | None = None,
    default_func: Callable[[Sequence[float]], float] | None = None,
) -> dict[str, Any]:
    """Combine several metric dicts into one, aggregating the values each key has across them.

    A key's values go through ``agg_key_funcs[key]`` when given there, else ``default_func`` (default: the
    arithmetic mean). Values that are dicts are merged recursively with the same functions. A key whose
    values are not numbers (and not dicts) is dropped unless it has its own function in ``agg_key_funcs``.
    """
    funcs = dict(agg_key_funcs or {})
    default = default_func if default_func is not None else (lambda values: sum(values) / len(values))
    keys: list[str] = []
    for d in dicts:
        keys.extend(k for k in d if k not in keys)
    merged: dict[str, Any] = {}
    for key in keys:
        values = [d[key] for d in dicts if key in d]
        if all(isinstance(v, Mapping) for v in values):
            merged[key] = merge_dicts(values, funcs, default_func)
            continue
        func = funcs.get(key)
        if func is None:
            values = [float(v) for v in values if _is_number(v)]
            if not values:
                continue
            func = default
        merged[key] = func(values)
    return merged
