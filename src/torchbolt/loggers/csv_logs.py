"""``CSVLogger``: metrics in a ``metrics.csv`` file and hyperparameters in ``hparams.yaml``."""

from __future__ import annotations

import csv
import io
import os
from argparse import Namespace
from typing import Any

from torchbolt.loggers.logger import Logger, _add_prefix, _convert_params, _next_version, rank_zero_experiment
from torchbolt.utilities.cloud_io import _atomic_save, get_filesystem
from torchbolt.utilities.rank_zero import rank_zero_only, rank_zero_warn


class ExperimentWriter:
    """Buffers metric rows and writes them to ``metrics.csv``, rewriting the header when new keys appear."""

    NAME_HPARAMS_FILE = "hparams.yaml"
    NAME_METRICS_FILE = "metrics.csv"

    def __init__(self, log_dir: str) -> None:
        self.hparams: dict[str, Any] = {}
        self.metrics: list[dict[str, Any]] = []
        self.metrics_keys: list[str] = []
        self._fs = get_filesystem(log_dir)
        self.log_dir = log_dir
        self.metrics_file_path = os.path.join(log_dir, self.NAME_METRICS_FILE)
        if self._fs.exists(log_dir) and self._fs.listdir(log_dir):
            rank_zero_warn(
                f"Experiment logs directory {log_dir} exists and is not empty. New rows are appended to its"
                " metrics.csv and its hparams.yaml is rewritten; pass another `version` to start a clean one."
            )
            self._drop_empty_metrics_file()
        self._fs.makedirs(log_dir, exist_ok=True)
        self._read_existing_header = False
        self._header_on_disk: list[str] = []

    def _drop_empty_metrics_file(self) -> None:
        """A zero-byte ``metrics.csv`` (left by a run that ended before its first write) holds no rows:
        it is removed so that this run starts the file afresh. A file with rows is appended to, never deleted."""
        if self._fs.isfile(self.metrics_file_path) and self._fs.size(self.metrics_file_path) == 0:
            self._fs.rm_file(self.metrics_file_path)

    def log_hparams(self, params: dict[str, Any]) -> None:
        from torchbolt.core.saving import save_hparams_to_yaml

        self.hparams.update(params)
        save_hparams_to_yaml(os.path.join(self.log_dir, self.NAME_HPARAMS_FILE), self.hparams)

    def log_metrics(self, metrics_dict: dict[str, Any], step: int | None = None) -> None:
        def _value(v: Any) -> Any:
            return v.item() if hasattr(v, "item") else v

        row = {k: _value(v) for k, v in metrics_dict.items()}
        if step is None:
            step = len(self.metrics)
        row["step"] = step
        self.metrics.append(row)

    def save(self) -> None:
        """Append buffered rows; rewrite the whole file (old rows kept) when the set of columns grew.

        Columns are sorted by name, as Lightning's are. A file left by an earlier run in the same
        directory (a resumed run) keeps its rows and columns.
        """
        if not self.metrics:
            return
        file_exists = self._fs.isfile(self.metrics_file_path)
        if file_exists and not self._read_existing_header:
            self._read_existing_header = True
            self._header_on_disk = self._file_header()
        self._record_new_keys()
        if file_exists and self._header_on_disk != self.metrics_keys:
            self._rewrite_with_new_header(self.metrics_keys)
        mode = "a" if file_exists else "w"
        with self._fs.open(self.metrics_file_path, mode, newline="") as f:
            writer = csv.DictWriter(f, fieldnames=self.metrics_keys)
            if mode == "w":
                writer.writeheader()
            writer.writerows(self.metrics)
        self._header_on_disk = list(self.metrics_keys)
        self.metrics = []

    def _file_header(self) -> list[str]:
        with self._fs.open(self.metrics_file_path, "r", newline="") as f:
            return next(csv.reader(f), [])

    def _record_new_keys(self) -> set[str]:
        """Add the keys of the buffered rows (and of a file found on disk) to the sorted column list."""
        known = set(self.metrics_keys)
        new_keys = {k for row in self.metrics for k in row if k not in known}
        new_keys |= {k for k in self._header_on_disk if k not in known}
        self.metrics_keys = sorted(known | new_keys)
        return new_keys

    def _rewrite_with_new_header(self, fieldnames: list[str]) -> None:
        with self._fs.open(self.metrics_file_path, "r", newline="") as f:
            rows = list(csv.DictReader(f))
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=fieldnames)
        writer.writeheader()
        writer.writerows(rows)
        # replaced atomically: a crash while growing the header never loses the rows already written
        _atomic_save(buffer.getvalue().encode("utf-8"), self.metrics_file_path)


class CSVLogger(Logger):
    """Log to ``<save_dir>/<name>/version_<N>/metrics.csv`` (and ``hparams.yaml``).

    Args:
        save_dir: the root directory (local path or fsspec URL).
        name: the experiment name (a sub-directory); ``""`` or ``None`` for none.
        version: an int (``version_<N>``), a string (used as is), or ``None`` for the next free N.
        prefix: prepended to every metric key.
        flush_logs_every_n_steps: write buffered rows to disk every this many logging calls.

    Example::

        trainer = Trainer(logger=CSVLogger("logs", name="digits"))
    """

    LOGGER_JOIN_CHAR = "-"

    def __init__(
        self,
        save_dir: str | os.PathLike,
        name: str | None = "lightning_logs",
        version: int | str | None = None,
        prefix: str = "",
        flush_logs_every_n_steps: int = 100,
    ) -> None:
        super().__init__()
        if not isinstance(flush_logs_every_n_steps, int) or flush_logs_every_n_steps < 1:
            raise ValueError(
                f"`CSVLogger(flush_logs_every_n_steps={flush_logs_every_n_steps!r})`: pass a positive int."
            )
        self._root_dir = os.fspath(save_dir)
        self._name = name or ""
        self._version = version
        self._prefix = prefix
        self._fs = get_filesystem(self._root_dir)
        self._experiment: ExperimentWriter | None = None
        self._flush_logs_every_n_steps = flush_logs_every_n_steps

    @property
    def root_dir(self) -> str:
        return os.path.join(self._root_dir, self.name)

    @property
    def log_dir(self) -> str:
        version = self.version if isinstance(self.version, str) else f"version_{self.version}"
        return os.path.join(self.root_dir, version)

    @property
    def save_dir(self) -> str:
        return self._root_dir

    @property
    def name(self) -> str:
        return self._name

    @property
    def version(self) -> int | str:
        if self._version is None:
            self._version = _next_version(self.root_dir, self._fs)
        return self._version

    @property
    @rank_zero_experiment
    def experiment(self) -> ExperimentWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = ExperimentWriter(log_dir=self.log_dir)
        return self._experiment

    @rank_zero_only
    def log_hyperparams(self, params: dict[str, Any] | Namespace | None = None, *args: Any, **kwargs: Any) -> None:
        """Merge ``params`` into ``hparams.yaml`` (written now; with no ``params`` the file is still created)."""
        self.experiment.log_hparams(_convert_params(params))

    @rank_zero_only
    def log_metrics(self, metrics: dict[str, Any], step: int | None = None) -> None:
        """Buffer one row (``step`` defaults to the row count); written every ``flush_logs_every_n_steps`` steps
        and whenever :meth:`save` runs (the Trainer calls it at most every few seconds of logging, at the end of
        each training epoch and validation run, before each checkpoint, when the fit stops and at its end)."""
        metrics = _add_prefix(metrics, self._prefix, self.LOGGER_JOIN_CHAR)
        if step is None:
            step = len(self.experiment.metrics)
        self.experiment.log_metrics(metrics, step)
        if (step + 1) % self._flush_logs_every_n_steps == 0:
            self.save()

    @rank_zero_only
    def save(self) -> None:
        super().save()
        self.experiment.save()

    @rank_zero_only
    def finalize(self, status: str) -> None:
        if self._experiment is None:
            # nothing was logged: do not create an empty directory
            return
        self.save()
