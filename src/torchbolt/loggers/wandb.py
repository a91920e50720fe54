"""``WandbLogger``: a Weights & Biases run (online, or offline with no account, synced later).

``wandb`` is imported when the run starts, never at ``import torchbolt``.
"""

from __future__ import annotations

import os
from argparse import Namespace
from collections.abc import Mapping
from typing import Any, Literal

from torch import nn

from torchbolt.loggers.logger import (
    Logger,
    _add_prefix,
    _convert_json_serializable,
    _convert_params,
    _sanitize_callable_params,
    rank_zero_experiment,
)
from torchbolt.loggers.utilities import _checkpoint_aliases, _checkpoint_metadata, _scan_checkpoints
from torchbolt.utilities.imports import _require
from torchbolt.utilities.rank_zero import rank_zero_only, rank_zero_warn

_STEP_KEY = "trainer/global_step"


class WandbLogger(Logger):
    """Log to a W&B run: config, metrics against ``trainer/global_step``, gradients and checkpoints.

    Args:
        name: the run's display name.
        save_dir: where wandb writes its run directory (``<save_dir>/wandb/``).
        version: the run id to create or resume (same as ``id``).
        offline: run without a server (``mode="offline"``); ``wandb sync <run dir>`` uploads it later.
        dir: same as ``save_dir`` (used when ``save_dir`` is ``None``).
        id: the run id to create or resume.
        anonymous: log anonymously (``"allow"`` mode of wandb).
        project: the project (default ``$WANDB_PROJECT``, else ``"lightning_logs"``).
        log_model: upload the checkpoints of ``ModelCheckpoint`` as ``model`` artifacts: ``"all"`` as
            they are written, ``True`` at the end of fit (or as written when ``save_top_k == -1``).
            Offline, the artifacts are recorded in the run directory and uploaded by ``wandb sync``.
        experiment: an existing ``wandb`` run to log to.
        prefix: prepended to every metric key (joined with ``-``).
        checkpoint_name: the artifact name of uploaded checkpoints (default ``model-<run id>``).
        add_file_policy: ``"mutable"`` (copy the checkpoint into wandb's staging area) or ``"immutable"``.
        **kwargs: passed to ``wandb.init`` (``entity``, ``group``, ``tags``, ``config``...).

    Raises:
        ModuleNotFoundError: when ``wandb`` is not installed.

    Example::

        from torchbolt.loggers import WandbLogger

        logger = WandbLogger(project="digits", offline=True, log_model=True)
        logger.watch(model, log="all")
        trainer = Trainer(logger=logger)
    """

    LOGGER_JOIN_CHAR = "-"

    def __init__(
        self,
        name: str | None = None,
        save_dir: str | os.PathLike = ".",
        version: str | None = None,
        offline: bool = False,
        dir: str | os.PathLike | None = None,
        id: str | None = None,
        anonymous: bool | None = None,
        project: str | None = None,
        log_model: Literal["all"] | bool = False,
        experiment: Any = None,
        prefix: str = "",
        checkpoint_name: str | None = None,
        add_file_policy: Literal["mutable", "immutable"] = "mutable",
        **kwargs: Any,
    ) -> None:
        _require("wandb", "wandb", "`WandbLogger`")
        super().__init__()
        self._offline = offline
        self._log_model = log_model
        self._prefix = prefix
        self._experiment = experiment
        self._logged_model_time: dict[str, float] = {}
        self._checkpoint_callbacks: dict[int, Any] = {}
        self._checkpoint_name = checkpoint_name
        self.add_file_policy = add_file_policy
        directory = os.fspath(save_dir) if save_dir is not None else (os.fspath(dir) if dir is not None else None)
        init: dict[str, Any] = {
            "name": name,
            "project": project or os.environ.get("WANDB_PROJECT", "lightning_logs"),
            "dir": directory,
            "id": version or id,
            "resume": "allow",
        }
        if anonymous:
            init["anonymous"] = "allow"
        if offline:
            init["mode"] = "offline"
        init.update(kwargs)
        self._wandb_init = init
        self._project = init.get("project")
        self._save_dir = init.get("dir")
        self._name = init.get("name")
        self._id = init.get("id")

    @property
    @rank_zero_experiment
    def experiment(self) -> Any:
        """The ``wandb`` run, started on first use (an active run in this process is reused).

        Example::

            self.logger.experiment.log({"samples": [wandb.Image(img) for img in images]})
        """
        if self._experiment is not None:
            return self._experiment
        import wandb

        if wandb.run is not None:
            rank_zero_warn(
                "There is a wandb run already in progress and newly created instances of `WandbLogger` will reuse"
                " this run. If this is not desired, call `wandb.finish()` before instantiating `WandbLogger`."
            )
            self._experiment = wandb.run
        else:
            if self._save_dir is not None:
                os.makedirs(self._save_dir, exist_ok=True)
            self._experiment = wandb.init(**self._wandb_init)
            if getattr(self._experiment, "define_metric", None) is not None:
                # every metric is plotted against the Trainer's step, not wandb's own call counter
                self._experiment.define_metric(_STEP_KEY)
                self._experiment.define_metric("*", step_metric=_STEP_KEY, step_sync=True)
        return self._experiment

    def watch(self, model: nn.Module, log: str | None = "gradients", log_freq: int = 100,
              log_graph: bool = True) -> None:
        """Record gradients (``log="gradients"``), parameters (``"parameters"``) or both (``"all"``) every
        ``log_freq`` backward passes."""
        self.experiment.watch(model, log=log, log_freq=log_freq, log_graph=log_graph)

    @rank_zero_only
    def log_hyperparams(self, params: dict[str, Any] | Namespace) -> None:  # type: ignore[override]
        params = _convert_json_serializable(_sanitize_callable_params(_convert_params(params)))
        self.experiment.config.update(params, allow_val_change=True)

    @rank_zero_only
    def log_metrics(self, metrics: Mapping[str, Any], step: int | None = None) -> None:
        metrics = _add_prefix(metrics, self._prefix, self.LOGGER_JOIN_CHAR)
        if step is not None and not self._wandb_init.get("sync_tensorboard"):
            self.experiment.log({**metrics, _STEP_KEY: step})
        else:
            self.experiment.log(dict(metrics))

    @rank_zero_only
    def save(self) -> None:
        # starting the run here makes a wandb failure surface when fit starts, not at the first metric
        _ = self.experiment

    @rank_zero_only
    def log_table(self, key: str, columns: list[str] | None = None, data: list[list[Any]] | None = None,
                  dataframe: Any = None, step: int | None = None) -> None:
        """Log a ``wandb.Table`` built from ``columns`` + ``data`` or a ``dataframe``."""
        import wandb

        self.log_metrics({key: wandb.Table(columns=columns, data=data, dataframe=dataframe)}, step)  # type: ignore[arg-type]

    @rank_zero_only
    def log_text(self, key: str, columns: list[str] | None = None, data: list[list[str]] | None = None,
                 dataframe: Any = None, step: int | None = None) -> None:
        self.log_table(key, columns, data, dataframe, step)

    @rank_zero_only
    def log_image(self, key: str, images: list[Any], step: int | None = None, **kwargs: Any) -> None:
        """Log images (tensors, arrays, PIL images or paths); ``kwargs`` are per-image lists (``caption``...)."""
        import wandb

        self.log_metrics({key: _media(wandb.Image, images, kwargs)}, step)

    @property
    def save_dir(self) -> str | None:
        return self._save_dir

    @property
    def name(self) -> str | None:
        """The project name (``logger.experiment.name`` is the run's display name)."""
        return self._project

    @property
    def version(self) -> str | None:
        """The run id (without starting a run)."""
        return self._experiment.id if self._experiment is not None else self._id

    # ------------------------------------------------------------------ checkpoints
    def after_save_checkpoint(self, checkpoint_callback: Any) -> None:
        if self._log_model == "all" or (self._log_model is True and checkpoint_callback.save_top_k == -1):
            self._scan_and_log_checkpoints(checkpoint_callback)
        elif self._log_model is True:
            self._checkpoint_callbacks[id(checkpoint_callback)] = checkpoint_callback

    @rank_zero_only
    def finalize(self, status: str) -> None:
        """Upload pending checkpoints (``log_model=True``) after a successful fit; the run stays open."""
        if status != "success" or self._experiment is None:
            return
        for checkpoint_callback in self._checkpoint_callbacks.values():
            self._scan_and_log_checkpoints(checkpoint_callback)

    def _scan_and_log_checkpoints(self, checkpoint_callback: Any) -> None:
        import wandb

        for mtime, path, score, _tag in _scan_checkpoints(checkpoint_callback, self._logged_model_time):
            metadata = _checkpoint_metadata(checkpoint_callback, path, score, type(checkpoint_callback).__name__)
            if not self._checkpoint_name:
                self._checkpoint_name = f"model-{self.experiment.id}"
            artifact = wandb.Artifact(name=self._checkpoint_name, type="model", metadata=metadata)
            artifact.add_file(path, name="model.ckpt", policy=self.add_file_policy)
            self.experiment.log_artifact(artifact, aliases=_checkpoint_aliases(checkpoint_callback, path))
            self._logged_model_time[path] = mtime

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        if self._experiment is not None:
            # a spawned process resumes the same run by id instead of pickling the live run object
            state["_id"] = getattr(self._experiment, "id", None)
            state["_wandb_init"] = {**self._wandb_init, "id": state["_id"]}
        state["_experiment"] = None
        return state


def _media(cls: Any, items: list[Any], kwargs: dict[str, list[Any]]) -> list[Any]:
    if not isinstance(items, list):
        raise TypeError(f"Expected a list of media items, found {type(items).__name__}")
    for key, values in kwargs.items():
        if len(values) != len(items):
            raise ValueError(f"Expected {len(items)} items but only found {len(values)} for {key}")
    return [cls(item, **{k: v[i] for k, v in kwargs.items()}) for i, item in enumerate(items)]
