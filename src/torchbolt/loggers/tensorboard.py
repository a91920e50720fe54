"""``TensorBoardLogger``: event files TensorBoard reads, plus ``hparams.yaml`` beside them.

``tensorboard`` (or ``tensorboardX``) is imported when the first event is written, never at
``import torchbolt``.
"""

from __future__ import annotations

import os
import time
from argparse import Namespace
from collections.abc import Mapping
from typing import Any

from torch import Tensor, nn

from torchbolt.loggers.logger import (
    Logger,
    _add_prefix,
    _convert_params,
    _flatten_dict,
    _next_version,
    _sanitize_params,
    rank_zero_experiment,
)
from torchbolt.utilities.cloud_io import get_filesystem
from torchbolt.utilities.imports import module_available
from torchbolt.utilities.rank_zero import rank_zero_only, rank_zero_warn


def _tensorboard_available() -> bool:
    return module_available("tensorboard") or module_available("tensorboardX")


class TensorBoardLogger(Logger):
    """Log to ``<save_dir>/<name>/<version>[/<sub_dir>]`` in TensorBoard's event format.

    The default logger of ``Trainer(logger=True)`` when ``tensorboard`` is installed. Scalars are
    written at the Trainer's ``global_step``-based x-axis; hyperparameters go both to the event file
    (TensorBoard's HPARAMS tab) and to ``hparams.yaml``.

    Args:
        save_dir: the root directory (local path or fsspec URL).
        name: the experiment name (a sub-directory); ``""`` or ``None`` for none.
        version: an int (``version_<N>``), a string (used as is) or ``None`` for the next free N.
        log_graph: add the model's graph (traced from ``example_input_array``) at the start of fit.
        default_hp_metric: when hyperparameters are logged without metrics, log ``hp_metric = -1`` so
            the HPARAMS tab shows the run; log ``"hp_metric"`` yourself to fill it in.
        prefix: prepended to every metric key (joined with ``-``).
        sub_dir: a sub-directory of the version directory to write to.
        **kwargs: passed to ``SummaryWriter`` (``max_queue``, ``flush_secs``...).

    Raises:
        ModuleNotFoundError: when neither ``tensorboard`` nor ``tensorboardX`` is installed.

    Example::

        from torchbolt.loggers import TensorBoardLogger

        logger = TensorBoardLogger("tb_logs", name="my_model")
        trainer = Trainer(logger=logger)  # events in tb_logs/my_model/version_0/
    """

    NAME_HPARAMS_FILE = "hparams.yaml"
    LOGGER_JOIN_CHAR = "-"

    def __init__(
        self,
        save_dir: str | os.PathLike,
        name: str | None = "lightning_logs",
        version: int | str | None = None,
        log_graph: bool = False,
        default_hp_metric: bool = True,
        prefix: str = "",
        sub_dir: str | os.PathLike | None = None,
        **kwargs: Any,
    ) -> None:
        if not _tensorboard_available():
            raise ModuleNotFoundError(
                "`TensorBoardLogger` requires `tensorboard`, which is not installed. Install it with"
                " `pip install 'torchbolt[tensorboard]'` (or `pip install tensorboard`), or use `CSVLogger`."
            )
        super().__init__()
        self._root_dir = os.fspath(save_dir)
        self._name = name or ""
        self._version = version
        self._sub_dir = None if sub_dir is None else os.fspath(sub_dir)
        self._log_graph = log_graph
        self._default_hp_metric = default_hp_metric
        self._prefix = prefix
        self._kwargs = kwargs
        self._fs = get_filesystem(self._root_dir)
        self._experiment: Any = None
        #: the writer class whose scalars `log_metrics` writes as one event (torch's `SummaryWriter`, once created)
        self._batch_writer_type: Any = None
        #: scalar events of `log_metrics` calls not yet given to the writer: ``(summary, step, wall time)``
        self._pending: list[tuple[Any, int | None, float]] = []
        self.hparams: dict[str, Any] = {}
        self._hparams_dirty = False

    # ------------------------------------------------------------------ layout
    @property
    def name(self) -> str:
        return self._name

    @property
    def version(self) -> int | str:
        """The version given, else the next free ``version_N`` under :attr:`root_dir` (decided once)."""
        if self._version is None:
            self._version = _next_version(self.root_dir, self._fs)
        return self._version

    @property
    def root_dir(self) -> str:
        """``<save_dir>/<name>``: where the versions live (reads :attr:`name`, so a subclass may override it)."""
        return os.path.join(self._root_dir, self.name)

    @property
    def log_dir(self) -> str:
        """``<root_dir>/version_<N>`` (or the string version), plus ``sub_dir``; ``~`` and ``$VARS`` expanded."""
        version = self.version if isinstance(self.version, str) else f"version_{self.version}"
        log_dir = os.path.join(self.root_dir, version)
        if isinstance(self._sub_dir, str):
            log_dir = os.path.join(log_dir, self._sub_dir)
        return os.path.expanduser(os.path.expandvars(log_dir))

    @property
    def save_dir(self) -> str:
        return self._root_dir

    @property
    def sub_dir(self) -> str | None:
        return self._sub_dir

    @property
    @rank_zero_experiment
    def experiment(self) -> Any:
        """The ``SummaryWriter`` (created, with its directory, on first use).

        Example::

            self.logger.experiment.add_histogram("weights", self.layer.weight, self.global_step)
        """
        if self._experiment is not None:
            if self._pending:  # what is done with the writer from here sees the scalars logged so far
                self._hand_over()
            return self._experiment
        if self.root_dir:
            self._fs.makedirs(self.root_dir, exist_ok=True)
        if module_available("tensorboard"):
            from torch.utils.tensorboard import SummaryWriter

            self._batch_writer_type = SummaryWriter
        else:
            from tensorboardX import SummaryWriter  # type: ignore[no-redef]
        self._experiment = SummaryWriter(log_dir=self.log_dir, **self._kwargs)
        return self._experiment

    # ------------------------------------------------------------------ logging
    @rank_zero_only
    def log_metrics(self, metrics: Mapping[str, Any], step: int | None = None) -> None:
        """Write each value as a scalar at ``step`` (a dict value becomes a group of scalars).

        Raises:
            ValueError: for a value that is neither a number, a one-element tensor nor a dict of them.
        """
        metrics = _add_prefix(metrics, self._prefix, self.LOGGER_JOIN_CHAR)
        # not through `experiment`, which hands the kept events over
        writer = self._experiment if self._experiment is not None else self.experiment
        if type(writer) is self._batch_writer_type and "add_scalar" not in vars(writer):
            summary = _scalars_summary(metrics)
            if summary is not None:
                # what `add_scalar` writes value by value, as one event, kept until the next `save()`: handing
                # each event to the writer's thread wakes it and makes the training thread wait for the GIL,
                # every `log_every_n_steps`; a batch of them at a save (every few seconds) wakes it once
                self._pending.append((summary, step, time.time()))
                if len(self._pending) >= _MAX_PENDING:
                    self._hand_over()
                return
        for key, value in metrics.items():
            if isinstance(value, Tensor):
                value = value.item()
            if isinstance(value, dict):
                writer.add_scalars(key, value, step)
                continue
            try:
                writer.add_scalar(key, value, step)
            except Exception as ex:
                raise ValueError(
                    f"TensorBoardLogger cannot log {key}={value!r} ({type(value).__name__}): log a number, a"
                    " one-element tensor or a dict of them."
                ) from ex

    @rank_zero_only
    def log_hyperparams(  # type: ignore[override]
        self, params: dict[str, Any] | Namespace, metrics: dict[str, Any] | float | None = None,
        step: int | None = None,
    ) -> None:
        """Record hyperparameters in the HPARAMS tab (with ``metrics``, else ``hp_metric``) and ``hparams.yaml``.

        Args:
            params: the hyperparameters (nested dicts are flattened with ``/``).
            metrics: the metrics to show with them; a number means ``{"hp_metric": number}``.
            step: the step the metrics are logged at (``None``: TensorBoard's default).
        """
        params = _convert_params(params)
        self.hparams.update(params)
        self._hparams_dirty = True
        flat = _sanitize_params(_flatten_dict(params))
        if metrics is None:
            metrics = {"hp_metric": -1} if self._default_hp_metric else None
        elif not isinstance(metrics, dict):
            metrics = {"hp_metric": metrics}
        if not metrics:
            return
        self.log_metrics(metrics, step)
        if module_available("tensorboard"):
            from torch.utils.tensorboard.summary import hparams
        else:
            from tensorboardX.summary import hparams  # type: ignore[no-redef]
        experiment, session_start, session_end = hparams(flat, metrics)
        file_writer = self.experiment._get_file_writer()
        for summary in (experiment, session_start, session_end):
            file_writer.add_summary(summary)

    @rank_zero_only
    def log_graph(self, model: nn.Module, input_array: Any | None = None) -> None:
        """Trace ``model`` on ``input_array`` (default ``model.example_input_array``) when ``log_graph=True``."""
        if not self._log_graph:
            return
        if input_array is None:
            input_array = getattr(model, "example_input_array", None)
        if input_array is None:
            rank_zero_warn(
                "Could not log computational graph to TensorBoard: The `model.example_input_array` attribute"
                " is not set or `input_array` was not given."
            )
            return
        if not isinstance(input_array, (Tensor, tuple)):
            rank_zero_warn(
                "Could not log computational graph to TensorBoard: The `input_array` or `model.example_input_array`"
                f" has type {type(input_array)} which can't be traced by TensorBoard. Make the input array a tuple"
                " representing the positional arguments to the model's `forward()` implementation."
            )
            return
        from torchbolt.core.module import _jit_is_scripting
        from torchbolt.utilities.apply_func import move_data_to_device

        device = next((p.device for p in model.parameters()), None)
        if device is not None:
            input_array = move_data_to_device(input_array, device)
        # tracing reads every attribute of the module; `model.trainer` must not raise for a detached model
        with _jit_is_scripting():
            self.experiment.add_graph(model, input_array)

    def _hand_over(self) -> None:
        """Give the scalar events kept by :meth:`log_metrics` to the writer (their step and time as logged)."""
        pending, self._pending = self._pending, []
        if pending and self._experiment is not None:
            file_writer = self._experiment._get_file_writer()
            for summary, step, walltime in pending:
                file_writer.add_summary(summary, step, walltime)

    @rank_zero_only
    def save(self) -> None:
        """Write and flush the events and (re)write ``hparams.yaml`` when hyperparameters changed or it is
        missing."""
        self.experiment.flush()  # `experiment` hands the kept events over first
        hparams_file = os.path.join(self.log_dir, self.NAME_HPARAMS_FILE)
        if self._fs.isdir(self.log_dir) and (self._hparams_dirty or not self._fs.isfile(hparams_file)):
            from torchbolt.core.saving import save_hparams_to_yaml

            save_hparams_to_yaml(hparams_file, self.hparams)
            self._hparams_dirty = False

    @rank_zero_only
    def finalize(self, status: str) -> None:
        if self._experiment is None:
            return
        if status == "success":
            self.save()
        self._hand_over()
        self._experiment.flush()
        self._experiment.close()

    def __getstate__(self) -> dict[str, Any]:
        self._hand_over()  # the events logged so far belong to this process's file
        state = self.__dict__.copy()
        state["_experiment"] = None  # a SummaryWriter cannot be pickled (spawned processes make their own)
        return state


#: at most this many `log_metrics` calls wait for a `save()` before their events go to the writer anyway
_MAX_PENDING = 100


def _scalars_summary(metrics: Mapping[str, Any]) -> Any:
    """A TensorBoard ``Summary`` holding every value of ``metrics`` as a scalar (``simple_value``, as
    ``SummaryWriter.add_scalar`` writes it), or ``None`` when a value is not a plain number or a
    one-element tensor (a dict of values, say: ``log_metrics`` then writes value by value), or when there is none."""
    from tensorboard.compat.proto.summary_pb2 import Summary

    values = []
    for key, value in metrics.items():
        if isinstance(value, Tensor):
            if value.numel() != 1:
                return None
            value = value.item()
        if not isinstance(value, (int, float)):
            return None
        values.append(Summary.Value(tag=key, simple_value=float(value)))
    return Summary(value=values) if values else None
