"""``MLFlowLogger``: runs in an MLflow tracking store (a local directory, a SQLite file or a server).

``mlflow`` is imported when the logger is created, never at ``import torchbolt``.
"""

from __future__ import annotations

import logging
import os
import re
import tempfile
import time
from argparse import Namespace
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from torchbolt.loggers.logger import Logger, _add_prefix, _convert_params, _flatten_dict, rank_zero_experiment
from torchbolt.loggers.utilities import _checkpoint_aliases, _checkpoint_metadata, _scan_checkpoints
from torchbolt.utilities.exceptions import MisconfigurationException
from torchbolt.utilities.imports import _require
from torchbolt.utilities.rank_zero import rank_zero_only, rank_zero_warn

log = logging.getLogger(__name__)
LOCAL_FILE_URI_PREFIX = "file:"
_MAX_PARAMS_PER_BATCH = 100  # MLflow's limit for one log_batch call
_STATUS = {"success": "FINISHED", "finished": "FINISHED", "failed": "FAILED"}


class MLFlowLogger(Logger):
    """Log to an MLflow experiment: parameters, metrics with steps, tags and (optionally) checkpoints.

    Args:
        experiment_name: the MLflow experiment (created when missing).
        run_name: the run's name (stored as the ``mlflow.runName`` tag).
        tracking_uri: where runs are stored: ``"sqlite:///mlflow.db"``, ``"file:./mlruns"``, ``"http://host:5000"``.
            Defaults to ``$MLFLOW_TRACKING_URI``, else ``file:<save_dir>``.
        tags: tags of the run.
        save_dir: the local directory of the default ``file:`` tracking URI.
        log_model: upload the checkpoints of ``ModelCheckpoint`` as artifacts: ``"all"`` as they are
            written, ``True`` at the end of fit (or as written when ``save_top_k == -1``), ``False`` never.
        checkpoint_path_prefix: artifact path prefix of uploaded checkpoints.
        prefix: prepended to every metric key (joined with ``-``).
        artifact_location: where a newly created experiment stores artifacts.
        run_id: continue this existing run instead of starting a new one.
        synchronous: ask MLflow to block on each logging call (``None``: MLflow's default).

    Raises:
        ModuleNotFoundError: when ``mlflow`` is not installed.
        MisconfigurationException: when the tracking store cannot be opened (e.g. MLflow refuses a
            ``file:`` store, or the directory is not writable): before any training happens.

    Example::

        from torchbolt.loggers import MLFlowLogger

        logger = MLFlowLogger(experiment_name="digits", tracking_uri="sqlite:///mlflow.db", log_model=True)
        trainer = Trainer(logger=logger)
    """

    LOGGER_JOIN_CHAR = "-"

    def __init__(
        self,
        experiment_name: str = "lightning_logs",
        run_name: str | None = None,
        tracking_uri: str | None = None,
        tags: dict[str, Any] | None = None,
        save_dir: str | None = "./mlruns",
        log_model: Literal[True, False, "all"] = False,
        checkpoint_path_prefix: str = "",
        prefix: str = "",
        artifact_location: str | None = None,
        run_id: str | None = None,
        synchronous: bool | None = None,
    ) -> None:
        _require("mlflow", "mlflow", "`MLFlowLogger`")
        super().__init__()
        if not tracking_uri:
            tracking_uri = os.environ.get("MLFLOW_TRACKING_URI") or f"{LOCAL_FILE_URI_PREFIX}{save_dir}"
        self._experiment_name = experiment_name
        self._experiment_id: str | None = None
        self._tracking_uri = tracking_uri
        self._run_name = run_name
        self._run_id = run_id
        self.tags = tags
        self._log_model = log_model
        self._logged_model_time: dict[str, float] = {}
        self._checkpoint_callback: Any = None
        self._prefix = prefix
        self._artifact_location = artifact_location
        self._log_batch_kwargs = {} if synchronous is None else {"synchronous": synchronous}
        self._initialized = False
        self._checkpoint_path_prefix = checkpoint_path_prefix
        self._mlflow_client = _open_client(tracking_uri)

    @property
    @rank_zero_experiment
    def experiment(self) -> Any:
        """The ``MlflowClient``; the experiment and the run are created on first use.

        Example::

            self.logger.experiment.log_text(self.logger.run_id, "notes", "notes.txt")
        """
        if self._initialized:
            return self._mlflow_client
        client = self._mlflow_client
        if self._run_id is not None:
            self._experiment_id = client.get_run(self._run_id).info.experiment_id
            self._initialized = True
            return client
        if self._experiment_id is None:
            expt = client.get_experiment_by_name(self._experiment_name)
            if expt is not None and expt.lifecycle_stage != "deleted":
                self._experiment_id = expt.experiment_id
            else:
                log.info(f"Experiment with name {self._experiment_name} not found. Creating it.")
                self._experiment_id = client.create_experiment(
                    name=self._experiment_name, artifact_location=self._artifact_location
                )
        tags = dict(self.tags or {})
        if self._run_name is not None:
            from mlflow.utils.mlflow_tags import MLFLOW_RUN_NAME

            tags[MLFLOW_RUN_NAME] = self._run_name
        from mlflow.tracking.context.registry import resolve_tags

        run = client.create_run(experiment_id=self._experiment_id, tags=resolve_tags(tags))
        self._run_id = run.info.run_id
        self._initialized = True
        return client

    @property
    def run_id(self) -> str | None:
        """The run's id (creating the run if needed)."""
        _ = self.experiment
        return self._run_id

    @property
    def experiment_id(self) -> str | None:
        """The experiment's id (creating the experiment if needed)."""
        _ = self.experiment
        return self._experiment_id

    @property
    def name(self) -> str | None:
        """The experiment id."""
        return self.experiment_id

    @property
    def version(self) -> str | None:
        """The run id."""
        return self.run_id

    @property
    def save_dir(self) -> str | None:
        """The local directory of a ``file:`` tracking URI, else ``None``."""
        if self._tracking_uri.startswith(LOCAL_FILE_URI_PREFIX):
            return self._tracking_uri[len(LOCAL_FILE_URI_PREFIX):]
        return None

    # ------------------------------------------------------------------ logging
    @rank_zero_only
    def log_hyperparams(self, params: dict[str, Any] | Namespace) -> None:  # type: ignore[override]
        """Record ``params`` (flattened with ``/``; values as strings cut at MLflow's length limit)."""
        from mlflow.entities import Param

        limit = _max_param_length()
        flat = _flatten_dict(_convert_params(params))
        params_list = [Param(key=k, value=str(v)[:limit]) for k, v in flat.items()]
        for start in range(0, len(params_list), _MAX_PARAMS_PER_BATCH):
            self.experiment.log_batch(run_id=self.run_id, params=params_list[start:start + _MAX_PARAMS_PER_BATCH],
                                      **self._log_batch_kwargs)

    @rank_zero_only
    def log_metrics(self, metrics: Mapping[str, Any], step: int | None = None) -> None:
        """Record ``metrics`` at ``step`` in one batch (characters MLflow rejects are removed from keys)."""
        from mlflow.entities import Metric

        metrics = _add_prefix(metrics, self._prefix, self.LOGGER_JOIN_CHAR)
        timestamp_ms = int(time.time() * 1000)
        metrics_list = []
        for key, value in metrics.items():
            if isinstance(value, str):
                log.warning(f"Discarding metric with string value {key}={value}.")
                continue
            clean = re.sub(r"[^a-zA-Z0-9_/. -]+", "", key)
            if clean != key:
                rank_zero_warn(
                    "MLFlow only allows '_', '/', '.' and ' ' special characters in metric name."
                    f" Replacing {key} with {clean}.",
                    category=RuntimeWarning,
                )
            value = value.item() if hasattr(value, "item") else value
            metrics_list.append(Metric(key=clean, value=float(value), timestamp=timestamp_ms, step=step or 0))
        self.experiment.log_batch(run_id=self.run_id, metrics=metrics_list, **self._log_batch_kwargs)

    @rank_zero_only
    def save(self) -> None:
        # opening the run here makes a bad tracking store fail when fit starts, not at the first metric
        _ = self.experiment

    @rank_zero_only
    def finalize(self, status: str = "success") -> None:
        """Upload pending checkpoints (``log_model=True``) and mark the run FINISHED or FAILED."""
        if not self._initialized:
            return
        if self._checkpoint_callback is not None:
            self._scan_and_log_checkpoints(self._checkpoint_callback)
        if self.experiment.get_run(self.run_id):
            self.experiment.set_terminated(self.run_id, _STATUS.get(status, status))

    # ------------------------------------------------------------------ checkpoints
    def after_save_checkpoint(self, checkpoint_callback: Any) -> None:
        if self._log_model == "all" or (self._log_model is True and checkpoint_callback.save_top_k == -1):
            self._scan_and_log_checkpoints(checkpoint_callback)
        elif self._log_model is True:
            self._checkpoint_callback = checkpoint_callback

    def _scan_and_log_checkpoints(self, checkpoint_callback: Any) -> None:
        """Upload each new checkpoint to ``<prefix>/<stem>/`` with ``metadata.yaml`` and ``aliases.txt``."""
        for mtime, path, score, _tag in _scan_checkpoints(checkpoint_callback, self._logged_model_time):
            artifact_path = str(Path(self._checkpoint_path_prefix) / Path(path).stem)
            self.experiment.log_artifact(self._run_id, path, artifact_path)
            metadata = _checkpoint_metadata(checkpoint_callback, path, score, "Checkpoint")
            with tempfile.TemporaryDirectory() as tmp_dir:
                import yaml  # imported on first use, to keep `import torchbolt` light

                with open(os.path.join(tmp_dir, "metadata.yaml"), "w") as f:
                    yaml.safe_dump(metadata, f, default_flow_style=False)
                with open(os.path.join(tmp_dir, "aliases.txt"), "w") as f:
                    f.write(str(_checkpoint_aliases(checkpoint_callback, path)))
                self.experiment.log_artifacts(self._run_id, tmp_dir, artifact_path)
            self._logged_model_time[path] = mtime


def _open_client(tracking_uri: str) -> Any:
    """An ``MlflowClient`` on ``tracking_uri``; its store is opened now, so a bad URI fails at construction."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    try:
        return MlflowClient(tracking_uri)
    except MlflowException as ex:
        hint = ""
        if tracking_uri.startswith(LOCAL_FILE_URI_PREFIX) or "://" not in tracking_uri:
            hint = (" This MLflow version refuses plain-directory (`file:`) stores unless"
                    " `MLFLOW_ALLOW_FILE_STORE=true` is set; or pass `tracking_uri='sqlite:///mlflow.db'`.")
        raise MisconfigurationException(
            f"`MLFlowLogger` could not open the tracking store {tracking_uri!r}: {ex.message}{hint}"
        ) from ex
    except OSError as ex:
        raise MisconfigurationException(
            f"`MLFlowLogger` could not open the tracking store {tracking_uri!r}: {ex}. Pass a writable `save_dir`"
            " or another `tracking_uri`."
        ) from ex


def _max_param_length() -> int:
    from mlflow.utils import validation

    return int(getattr(validation, "MAX_PARAM_VAL_LENGTH", 250))
