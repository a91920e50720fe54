"""The Trainer's read-only properties (what users and callbacks read), kept apart from its run logic."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor
from torch.optim import Optimizer

from torchbolt.callbacks.callback import Callback
from torchbolt.callbacks.checkpoint import Checkpoint
from torchbolt.callbacks.progress.progress_bar import ProgressBar
from torchbolt.core.optimizer import LRSchedulerConfig
from torchbolt.loggers.logger import Logger
from torchbolt.plugins.precision.precision import Precision
from torchbolt.trainer.config import _check_val_check_interval, default_max_epochs
from torchbolt.trainer.logging import scalars
from torchbolt.trainer.states import RunningStage, TrainerFn, TrainerStatus
from torchbolt.utilities.combined_loader import CombinedLoader
from torchbolt.utilities.exceptions import MisconfigurationException
from torchbolt.utilities.rank_zero import rank_zero_info

if TYPE_CHECKING:
    from torchbolt.core.module import LightningModule
    from torchbolt.loops.progress import EvalBatchCounts
    from torchbolt.loops.views import EvaluationLoopView, FitLoopView, PredictionLoopView
    from torchbolt.strategies.strategy import Strategy
    from torchbolt.trainer.config import TrainerConfig
    from torchbolt.trainer.context import LoaderSizes, RunContext
    from torchbolt.trainer.eval_loop import PredictionLoop
    from torchbolt.trainer.fit_loop import FitLoop
    from torchbolt.trainer.logging import MetricStore
    from torchbolt.trainer.signals import SignalHandler
    from torchbolt.trainer.states import Progress, TrainerState


class TrainerProperties:
    """Properties of :class:`~torchbolt.Trainer`; every value is read from its one owner."""

    strategy: Strategy
    state: TrainerState
    callbacks: list[Callback]
    _config: TrainerConfig
    _progress: Progress
    _metric_store: MetricStore
    _sizes: LoaderSizes
    _runs: list[RunContext]
    _signals: SignalHandler
    _loggers: list[Logger]
    _fit_loop: FitLoop | None
    _predict_loop: Any
    _eval_counts: EvalBatchCounts
    _fit_loop_view: FitLoopView
    _validate_loop_view: EvaluationLoopView
    _test_loop_view: EvaluationLoopView
    _predict_loop_view: PredictionLoopView
    _lightning_module: LightningModule | None
    _eval_loaders: dict[str, list[Any]]
    _resolved: Any

    # the state of the run in progress: a tuner trial's while one runs, else the Trainer's own
    def _live_progress(self) -> Progress:
        runs = self._runs
        return runs[-1].progress if runs else self._progress

    def _live_metrics(self) -> MetricStore:
        runs = self._runs
        return runs[-1].metrics.store if runs else self._metric_store

    def _live_sizes(self) -> LoaderSizes:
        runs = self._runs
        return runs[-1].sizes if runs else self._sizes

    def _live_config(self) -> TrainerConfig:
        runs = self._runs
        return runs[-1].config if runs else self._config

    def _live_eval_counts(self) -> EvalBatchCounts:
        runs = self._runs
        return runs[-1].eval_counts if runs else self._eval_counts

    def _last_predict_loop(self) -> PredictionLoop | None:
        loop: PredictionLoop | None = self._predict_loop
        return loop

    def _running_stage(self) -> RunningStage | None:
        return self.state.stage

    @property
    def current_epoch(self) -> int:
        """Completed training epochs (0 during the first epoch)."""
        return self._live_progress().current_epoch

    @property
    def global_step(self) -> int:
        """Optimizer steps taken so far."""
        return self._live_progress().global_step

    @property
    def should_stop(self) -> bool:
        """Set to ``True`` to stop fitting at the next chance (after ``min_epochs``/``min_steps``)."""
        return self._live_progress().should_stop

    @should_stop.setter
    def should_stop(self, value: bool) -> None:
        self._live_progress().request_stop(bool(value))

    @property
    def callback_metrics(self) -> dict[str, Tensor]:
        """Every metric logged so far (step and epoch values, as tensors): what callbacks monitor."""
        return self._live_metrics().callback

    @property
    def logged_metrics(self) -> dict[str, Any]:
        """The ``logger=True`` values logged so far (a step's values from that step on, whether or not a logger is
        called at it, as in Lightning)."""
        return self._live_metrics().logged

    @property
    def progress_bar_metrics(self) -> dict[str, float]:
        """The ``prog_bar=True`` metrics as Python numbers (reading them synchronizes with the device)."""
        return scalars(self._live_metrics().pbar)

    @property
    def lightning_module(self) -> LightningModule:
        """The module of the current (or last) run, else the one attached with ``trainer.strategy.connect``."""
        if self._lightning_module is None:
            return self.strategy.lightning_module  # type: ignore[return-value]
        return self._lightning_module

    @property
    def model(self) -> torch.nn.Module | None:
        """The model the loops call (the LightningModule, or its DDP/FSDP wrapper)."""
        return self.strategy.model

    @property
    def accelerator(self) -> Any:
        return self.strategy.accelerator

    @property
    def precision_plugin(self) -> Precision:
        return self.strategy.precision_plugin

    @property
    def precision(self) -> str:
        return self.strategy.precision_plugin.precision

    @property
    def optimizers(self) -> list[Optimizer]:
        return self.strategy.optimizers

    @optimizers.setter
    def optimizers(self, optimizers: list[Optimizer]) -> None:
        self.strategy.optimizers = optimizers

    @property
    def lr_scheduler_configs(self) -> list[LRSchedulerConfig]:
        return self.strategy.lr_scheduler_configs

    @property
    def is_global_zero(self) -> bool:
        return self.strategy.is_global_zero

    @property
    def global_rank(self) -> int:
        return self.strategy.global_rank

    @property
    def local_rank(self) -> int:
        return self.strategy.local_rank

    @property
    def node_rank(self) -> int:
        return self.strategy.node_rank

    @property
    def world_size(self) -> int:
        return self.strategy.world_size

    @property
    def num_nodes(self) -> int:
        return int(self._resolved.num_nodes)

    @property
    def num_devices(self) -> int:
        return int(self._resolved.num_devices)

    @property
    def device_ids(self) -> list[int]:
        return list(self._resolved.device_ids)

    @property
    def loggers(self) -> list[Logger]:
        runs = self._runs
        return runs[-1].loggers if runs else self._loggers

    @loggers.setter
    def loggers(self, loggers: list[Logger] | None) -> None:
        # in place: the run's metric sink holds this list
        self._loggers[:] = list(loggers) if loggers else []

    @property
    def logger(self) -> Logger | None:
        """The first logger (``None`` without loggers)."""
        loggers = self.loggers
        return loggers[0] if loggers else None

    @logger.setter
    def logger(self, logger: Logger | None) -> None:
        self._loggers[:] = [logger] if logger is not None else []

    @property
    def log_dir(self) -> str:
        """The first logger's directory (its ``save_dir`` when it has none), else ``default_root_dir``.

        Rank 0's value on every process: other ranks would pick the next free ``version_N`` themselves.
        Under several processes, read it on all of them (it is a collective, as in Lightning).
        """
        directory: str | None = None
        if self.loggers:
            logger = self.loggers[0]
            directory = logger.log_dir if logger.log_dir is not None else logger.save_dir
        if directory is None:
            directory = self._config.default_root_dir
        return self.strategy.broadcast(directory)

    @property
    def default_root_dir(self) -> str:
        return self._config.default_root_dir

    @property
    def checkpoint_callback(self) -> Checkpoint | None:
        callbacks = self.checkpoint_callbacks
        return callbacks[0] if callbacks else None

    @property
    def checkpoint_callbacks(self) -> list[Checkpoint]:
        return [c for c in self.callbacks if isinstance(c, Checkpoint)]

    @property
    def early_stopping_callback(self) -> Callback | None:
        callbacks = self.early_stopping_callbacks
        return callbacks[0] if callbacks else None

    @property
    def early_stopping_callbacks(self) -> list[Callback]:
        return [c for c in self.callbacks if type(c).__name__ == "EarlyStopping" or any(
            base.__name__ == "EarlyStopping" for base in type(c).__mro__)]

    @property
    def progress_bar_callback(self) -> ProgressBar | None:
        for c in self.callbacks:
            if isinstance(c, ProgressBar):
                return c
        return None

    @property
    def state_dict_ready(self) -> bool:
        return self._lightning_module is not None

    @property
    def num_training_batches(self) -> int | float:
        return self._live_sizes().train

    @property
    def val_check_batch(self) -> int | float | None:
        """Validation runs after every this many training batches (``inf``: at the epoch's end only), as the
        fit's training data set it; ``None`` before that, and with a time-based ``val_check_interval``."""
        loop = self._active_fit_loop()
        if loop is None or loop.train_loader is None or loop.validates_on_time:
            return None
        return loop.val_check_batch

    @property
    def num_val_batches(self) -> list[int | float]:
        return self._live_sizes().val

    @property
    def num_sanity_val_batches(self) -> list[int | float]:
        return self._live_sizes().sanity_val

    @property
    def num_test_batches(self) -> list[int | float]:
        return self._live_sizes().test

    @property
    def num_predict_batches(self) -> list[int | float]:
        return self._live_sizes().predict

    @property
    def estimated_stepping_batches(self) -> int | float:
        """Optimizer steps the whole fit will take (for schedulers like ``OneCycleLR``).

        Loads the training dataloader if it was not loaded yet (it may be called in ``configure_optimizers``).
        """
        config = self._config
        # before a fit resolves an unset `max_epochs`, the value that fit would use
        max_epochs = config.max_epochs if config.max_epochs is not None else default_max_epochs(config)
        if max_epochs == -1:
            # no epoch limit: only max_steps bounds the fit
            return math.inf if config.max_steps == -1 else config.max_steps
        loop = self._active_fit_loop()
        if loop is None and self.state.fn == TrainerFn.FITTING and self._lightning_module is not None:
            raise MisconfigurationException("`estimated_stepping_batches` is available once `fit` has started.")
        if loop is not None and loop.train_loader is None:
            rank_zero_info("Loading `train_dataloader` to estimate number of stepping batches.")
            loop.setup_train_data()
        total = self.num_training_batches
        if total == math.inf:
            return config.max_steps if config.max_steps != -1 else math.inf
        per_epoch = math.ceil(total / config.accumulate_grad_batches)
        estimated = per_epoch * max(max_epochs, 1)
        return min(estimated, config.max_steps) if config.max_steps != -1 else estimated

    # Lightning's loop objects: views over this Trainer's settings and counters, present from ``__init__``
    @property
    def fit_loop(self) -> FitLoopView:
        """The fit's limits and counters (``max_epochs``, ``epoch_progress``, ``epoch_loop``...), before, during
        and after ``fit`` (see :mod:`torchbolt.loops.views`)."""
        return self._fit_loop_view

    @property
    def validate_loop(self) -> EvaluationLoopView:
        """``trainer.validate``'s batch counts and limits (``batch_progress``, ``max_batches``, ``verbose``)."""
        return self._validate_loop_view

    @property
    def test_loop(self) -> EvaluationLoopView:
        """``trainer.test``'s batch counts and limits (``batch_progress``, ``max_batches``, ``verbose``)."""
        return self._test_loop_view

    @property
    def predict_loop(self) -> PredictionLoopView:
        """``trainer.predict``'s batch counts and limits, and the last run's ``predictions``."""
        return self._predict_loop_view

    def _active_fit_loop(self) -> FitLoop | None:
        """The running fit loop: a tuner trial's while one runs, else that of the current or last ``fit``."""
        runs = self._runs
        if runs and runs[-1].fit_loop is not None:
            return runs[-1].fit_loop
        return self._fit_loop

    @property
    def train_dataloader(self) -> Any:
        """The training loader(s) of the current or last fit, as prepared for it: one loader, or the collection
        (list/dict, nested as given) of several, not the ``CombinedLoader`` that iterates them together."""
        loop = self._active_fit_loop()
        loader = loop.train_loader if loop is not None else None
        return loader.iterables if isinstance(loader, CombinedLoader) else loader

    @property
    def val_dataloaders(self) -> Any:
        """The validation loaders: of ``validate`` while or after it runs, else of the fit's validation."""
        if self.state.fn == TrainerFn.VALIDATING and "val" in self._eval_loaders:
            return _one_or_list(self._eval_loaders["val"])
        loop = self._active_fit_loop()
        if loop is None or loop.val_loaders is None:
            return _one_or_list(self._eval_loaders.get("val"))
        return _one_or_list(loop.val_loaders)

    @property
    def test_dataloaders(self) -> Any:
        """The loaders of the current or last ``test`` (one loader, or a list of them)."""
        return _one_or_list(self._eval_loaders.get("test"))

    @property
    def predict_dataloaders(self) -> Any:
        """The loaders of the current or last ``predict`` (one loader, or a list of them)."""
        return _one_or_list(self._eval_loaders.get("predict"))

    @property
    def is_last_batch(self) -> bool:
        """Whether the training batch being (or last) processed is the epoch's last (already in its
        ``on_train_batch_start`` and ``training_step``, so a manual-optimization step can act on it)."""
        return self._live_progress().batch_is_last

    @property
    def sanity_checking(self) -> bool:
        return self.state.stage == RunningStage.SANITY_CHECKING

    @property
    def training(self) -> bool:
        return self.state.stage == RunningStage.TRAINING

    @training.setter
    def training(self, value: bool) -> None:
        if value:
            self.state.stage = RunningStage.TRAINING

    @property
    def validating(self) -> bool:
        return self.state.stage == RunningStage.VALIDATING

    @validating.setter
    def validating(self, value: bool) -> None:
        if value:
            self.state.stage = RunningStage.VALIDATING

    @property
    def testing(self) -> bool:
        return self.state.stage == RunningStage.TESTING

    @testing.setter
    def testing(self, value: bool) -> None:
        if value:
            self.state.stage = RunningStage.TESTING

    @property
    def predicting(self) -> bool:
        return self.state.stage == RunningStage.PREDICTING

    @predicting.setter
    def predicting(self, value: bool) -> None:
        if value:
            self.state.stage = RunningStage.PREDICTING

    @property
    def evaluating(self) -> bool:
        return self.state.stage is not None and self.state.stage.evaluating

    @property
    def interrupted(self) -> bool:
        return self.state.status == TrainerStatus.INTERRUPTED

    @property
    def received_sigterm(self) -> bool:
        return self._signals.agreed != 0

    @property
    def enable_validation(self) -> bool:
        loop = self._active_fit_loop()
        return loop is not None and loop.validation_enabled()

    @property
    def barebones(self) -> bool:
        return self._config.barebones

    @property
    def _detect_anomaly(self) -> bool:
        """Lightning's private spelling of ``Trainer(detect_anomaly=...)``, read by code written against it."""
        return self._config.detect_anomaly

    @property
    def accumulate_grad_batches(self) -> int:
        """Step the optimizer every this many batches; the fit loop reads it at every batch."""
        return self._config.accumulate_grad_batches

    @accumulate_grad_batches.setter
    def accumulate_grad_batches(self, value: int) -> None:
        # the one setting callbacks may change during fit (``GradientAccumulationScheduler`` does, per
        # epoch); it writes the config, which stays the single owner of the value
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise MisconfigurationException(
                f"`trainer.accumulate_grad_batches = {value!r}` is invalid: expected an int >= 1."
            )
        self._config.accumulate_grad_batches = value

    # the validated arguments, read-only
    max_epochs = property(lambda self: self._config.max_epochs)
    min_epochs = property(lambda self: self._config.min_epochs)
    max_steps = property(lambda self: self._config.max_steps)
    min_steps = property(lambda self: self._config.min_steps)
    fast_dev_run = property(lambda self: _fast_dev_run_view(self._config.fast_dev_run))
    gradient_clip_val = property(lambda self: self._config.gradient_clip_val)
    gradient_clip_algorithm = property(lambda self: self._config.gradient_clip_algorithm)
    val_check_interval = property(lambda self: self._config.val_check_interval,
                                  lambda self, value: self._set_val_check_interval(value))

    def _set_val_check_interval(self, value: Any) -> None:
        """``trainer.val_check_interval = value`` (as Lightning allows): checked as the argument is, used by the
        next fit (a running fit decided its validation points when its loaders were set up)."""
        self._config.val_check_interval = _check_val_check_interval(value, self._config.check_val_every_n_epoch)
    check_val_every_n_epoch = property(lambda self: self._config.check_val_every_n_epoch)
    log_every_n_steps = property(lambda self: self._config.log_every_n_steps)
    limit_train_batches = property(lambda self: self._config.limit_train_batches)
    limit_val_batches = property(lambda self: self._config.limit_val_batches)
    limit_test_batches = property(lambda self: self._config.limit_test_batches)
    limit_predict_batches = property(lambda self: self._config.limit_predict_batches)
    overfit_batches = property(lambda self: self._config.overfit_batches)
    num_sanity_val_steps = property(lambda self: self._config.num_sanity_val_steps)
    reload_dataloaders_every_n_epochs = property(lambda self: self._config.reload_dataloaders_every_n_epochs)
    max_time = property(lambda self: self._config.max_time)
    # Lightning 1.x tuner flags, read by ``trainer.tune()``
    auto_lr_find = property(lambda self: self._config.auto_lr_find)
    auto_scale_batch_size = property(lambda self: self._config.auto_scale_batch_size)


def _fast_dev_run_view(batches: int) -> int | bool:
    """``trainer.fast_dev_run`` as Lightning shows it: ``True`` for one batch (``fast_dev_run=1`` or ``True``),
    ``False`` when off, else the number of batches."""
    if batches == 1:
        return True
    return batches if batches else False


def _one_or_list(loaders: list[Any] | None) -> Any:
    if not loaders:
        return None
    if len(loaders) == 1:
        # a CombinedLoader evaluated in parallel shows as its collection, as the training loaders do
        return loaders[0].iterables if isinstance(loaders[0], CombinedLoader) else loaders[0]
    return loaders
