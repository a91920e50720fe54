"""``CometLogger``: experiments on Comet (comet.ml), online or written to a local offline archive.

``comet_ml`` is imported when the logger is created, never at ``import torchbolt``.
"""

from __future__ import annotations

from argparse import Namespace
from collections.abc import Mapping
from typing import Any

from torch import nn

from torchbolt.loggers.logger import Logger, _add_prefix, _convert_params, _flatten_dict, rank_zero_experiment
from torchbolt.utilities.imports import _require
from torchbolt.utilities.rank_zero import rank_zero_only

#: the framework name Comet records for experiments started by this logger (Lightning's, so Comet's
#: integration pages treat them alike)
FRAMEWORK_NAME = "pytorch-lightning"

# older spellings of the constructor's arguments -> today's
_RENAMED = {"project_name": "project", "experiment_name": "name", "save_dir": "offline_directory"}


class CometLogger(Logger):
    """Log metrics, hyperparameters and the model graph to a Comet experiment.

    The experiment is started on first use, on global rank 0 only. Without an API key or with
    ``online=False`` (or ``mode``/``COMET_*`` settings saying so) Comet writes an offline archive into
    ``offline_directory`` (a zip to upload later with ``comet upload``).

    Args:
        api_key: your Comet API key (default: ``COMET_API_KEY`` or Comet's config file).
        workspace: the workspace (default: the key's default workspace).
        project: the project name (default: Comet's "general").
        experiment_key: continue or create the experiment with this key.
        mode: ``"get_or_create"``, ``"get"`` or ``"create"`` (Comet's ``start`` modes).
        online: ``False`` logs offline; ``None`` lets Comet decide from its configuration.
        prefix: prepended to every metric key (joined with ``-``).
        **kwargs: more ``comet_ml.ExperimentConfig`` settings, e.g. ``offline_directory``, ``name``,
            ``tags``, ``log_code``. The older names ``project_name``, ``experiment_name``, ``save_dir``
            and ``offline=True`` are accepted too.

    Raises:
        ModuleNotFoundError: ``comet_ml`` is not installed (raised when the logger is created).

    Example::

        logger = CometLogger(project="digits", online=False, offline_directory="comet-offline")
        trainer = Trainer(logger=logger)
    """

    LOGGER_JOIN_CHAR = "-"

    def __init__(
        self,
        *,
        api_key: str | None = None,
        workspace: str | None = None,
        project: str | None = None,
        experiment_key: str | None = None,
        mode: str | None = None,
        online: bool | None = None,
        prefix: str | None = None,
        **kwargs: Any,
    ) -> None:
        _require("comet_ml", "comet", "`CometLogger`")
        super().__init__()
        for old, new in _RENAMED.items():
            if old in kwargs:
                value = kwargs.pop(old)
                if new == "project":
                    project = project or value
                else:
                    kwargs.setdefault(new, value)
        if kwargs.pop("offline", False):
            online = False
        kwargs.pop("rest_api_key", None)  # the REST key of older Comet clients is no longer used
        self._start_args: dict[str, Any] = {"api_key": api_key, "workspace": workspace, "project": project,
                                            "experiment_key": experiment_key, "mode": mode, "online": online}
        self._config_kwargs = kwargs
        self._prefix = prefix or ""
        self._experiment: Any = None
        self._experiment_key: str | None = experiment_key

    @property
    @rank_zero_experiment
    def experiment(self) -> Any:
        """The ``comet_ml`` experiment (started on first use; rank 0 only)."""
        if self._experiment is None:
            import comet_ml

            config = comet_ml.ExperimentConfig(**self._config_kwargs)
            self._experiment = comet_ml.start(experiment_config=config, **self._start_args)
            self._experiment_key = self._experiment.get_key()
            self._experiment.log_other("Created from", FRAMEWORK_NAME)
        return self._experiment

    @rank_zero_only
    def log_hyperparams(self, params: dict[str, Any] | Namespace, *args: Any, **kwargs: Any) -> None:
        flat = _flatten_dict(_convert_params(params))
        self.experiment.log_parameters(flat)

    @rank_zero_only
    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        values = {k: (v.item() if hasattr(v, "item") else v) for k, v in metrics.items()}
        values = _add_prefix(values, self._prefix, self.LOGGER_JOIN_CHAR)
        epoch = values.pop("epoch", None)
        self.experiment.log_metrics(values, step=step, epoch=epoch)

    @rank_zero_only
    def log_graph(self, model: nn.Module, input_array: Any | None = None) -> None:
        self.experiment.set_model_graph(model)

    @rank_zero_only
    def finalize(self, status: str) -> None:
        """End the experiment (an offline one writes its archive now); a later use starts a new one."""
        if self._experiment is None:
            return
        self._experiment.end()
        self._experiment = None

    @property
    def save_dir(self) -> str | None:
        """The offline archive's directory, when one was given."""
        return self._config_kwargs.get("offline_directory")

    @property
    def name(self) -> str | None:
        """The project name."""
        return self._start_args["project"]

    @property
    def version(self) -> str | None:
        """The experiment key (starts the experiment on rank 0 when it has not started yet)."""
        if self._experiment_key is None and rank_zero_only.rank == 0:
            self.experiment  # noqa: B018 (starting it assigns the key)
        return self._experiment_key

    def __getstate__(self) -> dict[str, Any]:
        # the live experiment holds threads and sockets; a copy in another process starts its own
        state = self.__dict__.copy()
        state["_experiment"] = None
        return state
