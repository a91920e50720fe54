"""The ``Trainer``: validated configuration, plug-ins and state; ``fit``/``validate``/``test``/``predict``.

No loop code lives here: ``fit_loop.py`` and ``eval_loop.py`` hold it.
"""

from __future__ import annotations

import os
import weakref
from collections.abc import Generator, Iterable
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Literal

import torch

from torchbolt.callbacks.callback import Callback
from torchbolt.callbacks.timer import Timer
from torchbolt.core.datamodule import LightningDataModule
from torchbolt.core.module import LightningModule
from torchbolt.core.optimizer import _init_optimizers_and_lr_schedulers
from torchbolt.loggers.logger import Logger
from torchbolt.loops.progress import EvalBatchCounts
from torchbolt.loops.views import EvaluationLoopView, FitLoopView, LoopOwners, PredictionLoopView
from torchbolt.profilers.profiler import instrument_optimizers, instrument_strategy
from torchbolt.strategies.launchers.multiprocessing import WorkerResult
from torchbolt.strategies.strategy import Strategy
from torchbolt.trainer import config as _config
from torchbolt.trainer import legacy as _legacy
from torchbolt.trainer import setup as _setup
from torchbolt.trainer.checkpointing import (
    LoadedCheckpoint,
    dump_checkpoint,
    load_checkpoint,
    restore_module_and_callbacks,
    restore_training_state,
)
from torchbolt.trainer.context import LoaderSizes, RunContext
from torchbolt.trainer.data import DataPreparer, DataSource
from torchbolt.trainer.eval_loop import EvaluationLoop, PredictionLoop
from torchbolt.trainer.fit_loop import FitLoop, _set_sampler_epoch_all
from torchbolt.trainer.hooks import HookDispatcher
from torchbolt.trainer.logging import MetricSink, MetricStore, scalars
from torchbolt.trainer.optimization import bind_optimizers
from torchbolt.trainer.properties import TrainerProperties
from torchbolt.trainer.reporting import log_hyperparams, print_results
from torchbolt.trainer.signals import SignalHandler
from torchbolt.trainer.states import (
    Progress,
    RunningStage,
    RunOutcome,
    TrainerFn,
    TrainerState,
    TrainerStatus,
)
from torchbolt.utilities.exceptions import MisconfigurationException, _TunerExitException
from torchbolt.utilities.rank_zero import WarningCache, rank_zero_deprecation, rank_zero_info

_warning_cache = WarningCache()


_ENTRY_STAGE = {
    TrainerFn.FITTING: RunningStage.TRAINING,
    TrainerFn.VALIDATING: RunningStage.VALIDATING,
    TrainerFn.TESTING: RunningStage.TESTING,
    TrainerFn.PREDICTING: RunningStage.PREDICTING,
}


class Trainer(TrainerProperties):
    """Runs a :class:`~torchbolt.LightningModule`: the loops, devices, precision, logging and checkpoints.

    Example::

        trainer = Trainer(max_epochs=10, accelerator="auto", devices="auto")
        trainer.fit(model, datamodule=dm)
        trainer.test(datamodule=dm)

    Args:
        accelerator: ``"cpu"``, ``"gpu"``/``"cuda"``, ``"mps"``, ``"tpu"`` or ``"auto"`` (or an ``Accelerator``).
        strategy: ``"auto"``, ``"single_device"``, ``"ddp"``, ``"ddp_spawn"``, ``"fsdp"``, ``"deepspeed"``, ...
            or a ``Strategy`` instance.
        devices: how many devices (int), which (list or ``"0,1"``), all (``-1``) or ``"auto"``.
        num_nodes: number of machines.
        precision: ``"32-true"`` (default), ``"64-true"``, ``"16-mixed"``, ``"bf16-mixed"``, ``"16-true"``,
            ``"bf16-true"``, ...
        logger: ``True``/``None`` for the default (TensorBoard if installed, else CSV), ``False`` for none,
            or a logger / list of loggers.
        callbacks: callbacks to add to the defaults (progress bar, model summary, checkpointing).
        fast_dev_run: run ``n`` batches (``True``: 1) of train/val/test/predict to find bugs; writes nothing.
        max_epochs: stop after this many epochs (``-1``: no limit). Unset, ``trainer.max_epochs`` is ``None``
            until the first ``fit``, which uses 1000 (with a warning) when no other limit is set, else -1.
        min_epochs: do not stop early before this many epochs.
        max_steps: stop after this many optimizer steps (``-1``: no limit).
        min_steps: do not stop early before this many optimizer steps.
        max_time: stop after this wall time (``"DD:HH:MM:SS"``, ``timedelta`` or dict).
        limit_train_batches: use this many (int) or this fraction (float) of training batches per epoch.
        limit_val_batches: same for validation (``0`` disables validation).
        limit_test_batches: same for test.
        limit_predict_batches: same for predict.
        overfit_batches: train and validate on this many (or this fraction of) training batches, unshuffled.
        val_check_interval: validate every this fraction of an epoch (float), every this many batches (int), or
            once this much wall-clock time has passed since the last validation (``"DD:HH:MM:SS"``,
            ``timedelta`` or a dict of ``timedelta`` arguments).
        check_val_every_n_epoch: validate every this many epochs (``None``: count ``val_check_interval``
            batches across epochs).
        num_sanity_val_steps: validation batches run before training to catch bugs (``-1``: all).
        log_every_n_steps: send step metrics to the loggers every this many optimizer steps.
        enable_checkpointing: add a ``ModelCheckpoint`` when none is given (default True).
        enable_progress_bar: show a progress bar (default True).
        enable_model_summary: print the model summary at fit start (default True).
        accumulate_grad_batches: step the optimizer every this many batches.
        gradient_clip_val: clip gradients at this value (``None``/0: no clipping).
        gradient_clip_algorithm: ``"norm"`` (default) or ``"value"``.
        deterministic: ``True`` forces deterministic algorithms; ``"warn"`` only warns.
        benchmark: the value of ``torch.backends.cudnn.benchmark``.
        inference_mode: use ``torch.inference_mode`` (else ``no_grad``) in validate/test/predict.
        use_distributed_sampler: add a ``DistributedSampler`` to loaders under distributed strategies.
        profiler: ``"simple"``, ``"advanced"``, ``"pytorch"`` or a ``Profiler``.
        detect_anomaly: run fit under ``torch.autograd.set_detect_anomaly``.
        barebones: turn off every feature with per-step cost (logging, checkpointing, bars, summary).
        plugins: precision, checkpoint-I/O or cluster-environment plug-ins.
        sync_batchnorm: convert BatchNorm layers to ``SyncBatchNorm`` under distributed strategies.
        reload_dataloaders_every_n_epochs: call the ``*_dataloader`` methods again every this many epochs.
        default_root_dir: where logs and checkpoints go when no logger/callback says otherwise (default: cwd).
        enable_autolog_hparams: send the module's and datamodule's hyperparameters to the loggers.

    Raises:
        MisconfigurationException: for any invalid argument, naming it and the fix.
        TypeError: for an unknown argument.
    """

    def __init__(
        self,
        *,
        accelerator: str | Any = "auto",
        strategy: str | Strategy = "auto",
        devices: list[int] | str | int = "auto",
        num_nodes: int = 1,
        precision: int | str | None = None,
        logger: Logger | Iterable[Logger] | bool | None = None,
        callbacks: list[Callback] | Callback | None = None,
        fast_dev_run: int | bool = False,
        max_epochs: int | None = None,
        min_epochs: int | None = None,
        max_steps: int = -1,
        min_steps: int | None = None,
        max_time: str | timedelta | dict[str, int] | None = None,
        limit_train_batches: int | float | None = None,
        limit_val_batches: int | float | None = None,
        limit_test_batches: int | float | None = None,
        limit_predict_batches: int | float | None = None,
        overfit_batches: int | float = 0.0,
        val_check_interval: int | float | str | timedelta | dict[str, int] | None = None,
        check_val_every_n_epoch: int | None = 1,
        num_sanity_val_steps: int | None = None,
        log_every_n_steps: int | None = None,
        enable_checkpointing: bool | None = None,
        enable_progress_bar: bool | None = None,
        enable_model_summary: bool | None = None,
        accumulate_grad_batches: int = 1,
        gradient_clip_val: int | float | None = None,
        gradient_clip_algorithm: str | None = None,
        deterministic: bool | str | None = None,
        benchmark: bool | None = None,
        inference_mode: bool = True,
        use_distributed_sampler: bool = True,
        profiler: Any = None,
        detect_anomaly: bool = False,
        barebones: bool = False,
        plugins: Any = None,
        sync_batchnorm: bool = False,
        reload_dataloaders_every_n_epochs: int = 0,
        default_root_dir: str | os.PathLike[str] | None = None,
        enable_autolog_hparams: bool = True,
        **legacy_kwargs: Any,
    ) -> None:
        args = dict(locals())
        del args["self"], args["legacy_kwargs"]
        args = _config.env_defaults(args, _TRAINER_DEFAULTS)
        legacy = _legacy.check_legacy_arguments(legacy_kwargs, _config.KNOWN_ARGS)
        args = _legacy.apply_legacy(args, legacy)
        self._config = _config.resolve_config(args, legacy)
        resolved = _setup.resolve_plugins(args, self._config, legacy)
        self._resolved = resolved
        self.strategy: Strategy = resolved.strategy
        _setup.set_torch_flags(self._config)
        self.state = TrainerState()
        # owned here for the Trainer's lifetime; each run's context lends them to the loops
        self._progress = Progress()
        self._metric_store = MetricStore()
        self._sizes = LoaderSizes()
        self._signals = SignalHandler()
        #: the live run contexts: [0] the current (or last) run, above it a tuner trial while one runs
        self._runs: list[RunContext] = []
        self._fit_loop: FitLoop | None = None
        self._predict_loop: PredictionLoop | None = None
        # the batch counts of the evaluation/prediction loops, and Lightning's loop objects as views over this
        # Trainer's owners: created once, the same objects before, during and after every run
        self._eval_counts = EvalBatchCounts()
        # bound methods, not closures: a Trainer is pickled to spawned processes
        owners = LoopOwners(
            config=self._live_config, progress=self._live_progress, sizes=self._live_sizes,
            counts=self._live_eval_counts, fit_loop=self._active_fit_loop, predict_loop=self._last_predict_loop,
            stage=self._running_stage,
        )
        self._fit_loop_view = FitLoopView(owners)
        self._validate_loop_view = EvaluationLoopView(owners, "validate")
        self._test_loop_view = EvaluationLoopView(owners, "test")
        self._predict_loop_view = PredictionLoopView(owners)
        #: the loaders of the last validate/test/predict run, by stage (``trainer.test_dataloaders``...)
        self._eval_loaders: dict[str, list[Any]] = {}
        self._lightning_module: LightningModule | None = None
        self.datamodule: LightningDataModule | None = None
        self._enable_autolog_hparams = args["enable_autolog_hparams"]
        self.ckpt_path: str | None = None
        self.profiler = _setup.resolve_profiler(args["profiler"], self._config.default_root_dir)
        self.callbacks: list[Callback] = _setup.build_callbacks(self._config, args["callbacks"])
        self._loggers: list[Logger] = _setup.build_loggers(self._config, args["logger"])

    # ------------------------------------------------------------------ entry points
    def fit(
        self,
        model: LightningModule,
        train_dataloaders: Any = None,
        val_dataloaders: Any = None,
        datamodule: LightningDataModule | None = None,
        ckpt_path: str | os.PathLike[str] | None = None,
        weights_only: bool | None = None,
    ) -> None:
        """Train ``model``, validating as configured.

        Args:
            model: the LightningModule (a ``torch.compile``d one works too).
            train_dataloaders: a DataLoader, a collection of them, or a LightningDataModule.
            val_dataloaders: one or several validation DataLoaders.
            datamodule: a LightningDataModule providing the loaders.
            ckpt_path: resume from this checkpoint: a path, ``"last"`` or ``"best"``. A torchbolt
                checkpoint resumes exactly where it was written (see ``docs/checkpointing.md``).
            weights_only: ``None``/``True`` reads the checkpoint as tensors and plain data only;
                ``False`` allows arbitrary unpickling (only for files you trust).

        Raises:
            MisconfigurationException: for a model without ``training_step``/``configure_optimizers``, no
                training data, or both a datamodule and dataloaders.
        """
        if isinstance(train_dataloaders, LightningDataModule):
            datamodule, train_dataloaders = train_dataloaders, None
        model = self._check_model(model, "fit")
        if datamodule is not None and (train_dataloaders is not None or val_dataloaders is not None):
            raise MisconfigurationException(
                "You cannot pass `train_dataloaders` or `val_dataloaders` to `trainer.fit(datamodule=...)`:"
                " pass the loaders or the datamodule, not both."
            )
        source = DataSource(model, self._check_datamodule(datamodule),
                            {"train": train_dataloaders, "val": val_dataloaders})
        self._run_entry(TrainerFn.FITTING, model, source, _RunOptions(ckpt_path, weights_only))

    def validate(
        self,
        model: LightningModule | None = None,
        dataloaders: Any = None,
        ckpt_path: str | os.PathLike[str] | None = None,
        verbose: bool = True,
        datamodule: LightningDataModule | None = None,
        weights_only: bool | None = None,
    ) -> list[dict[str, float]]:
        """Run the validation loop once.

        Returns:
            One dict of the epoch-level metrics logged during validation per dataloader.
        """
        return self._evaluate(TrainerFn.VALIDATING, model, dataloaders, datamodule,
                              _RunOptions(ckpt_path, weights_only, model is not None, verbose))

    def test(
        self,
        model: LightningModule | None = None,
        dataloaders: Any = None,
        ckpt_path: str | os.PathLike[str] | None = None,
        verbose: bool = True,
        datamodule: LightningDataModule | None = None,
        weights_only: bool | None = None,
    ) -> list[dict[str, float]]:
        """Run the test loop once and print the results table (``verbose``).

        Returns:
            One dict of the epoch-level metrics logged during testing per dataloader.
        """
        return self._evaluate(TrainerFn.TESTING, model, dataloaders, datamodule,
                              _RunOptions(ckpt_path, weights_only, model is not None, verbose))

    def predict(
        self,
        model: LightningModule | None = None,
        dataloaders: Any = None,
        datamodule: LightningDataModule | None = None,
        return_predictions: bool | None = None,
        ckpt_path: str | os.PathLike[str] | None = None,
        weights_only: bool | None = None,
    ) -> list[Any] | None:
        """Run ``predict_step`` over the predict dataloader(s).

        Returns:
            The predictions (a list per dataloader when there are several), or ``None`` when
            ``return_predictions=False``. ``return_predictions=None`` means ``True``, except with a strategy
            whose processes are spawned (``ddp_spawn``...), where only ``False`` is allowed (each process
            predicts a share of the data: write the predictions with a ``BasePredictionWriter``).
        """
        if isinstance(dataloaders, LightningDataModule):
            datamodule, dataloaders = dataloaders, None
        options = _RunOptions(ckpt_path, weights_only, model is not None, return_predictions=return_predictions)
        model = self._check_model(model, "predict")
        if datamodule is not None and dataloaders is not None:
            raise MisconfigurationException(
                "You cannot pass both `trainer.predict(dataloaders=..., datamodule=...)`"
            )
        datamodule = self._check_datamodule(datamodule) if datamodule is not None else (
            self.datamodule if dataloaders is None else None)
        source = DataSource(model, datamodule, {"predict": dataloaders})
        predictions: list[Any] | None = self._run_entry(TrainerFn.PREDICTING, model, source, options)
        return predictions

    def tune(
        self,
        model: LightningModule,
        train_dataloaders: Any = None,
        val_dataloaders: Any = None,
        dataloaders: Any = None,
        datamodule: LightningDataModule | None = None,
        scale_batch_size_kwargs: dict[str, Any] | None = None,
        lr_find_kwargs: dict[str, Any] | None = None,
        method: str = "fit",
    ) -> dict[str, Any]:
        """Lightning 1.x: run the tuners enabled by ``Trainer(auto_scale_batch_size=...)``/``auto_lr_find=...``.

        Deprecated: use ``torchbolt.tuner.Tuner(trainer).lr_find(model)`` and ``.scale_batch_size(model)``.

        Returns:
            ``{"scale_batch_size": int, "lr_find": lr_finder}`` for the tuners that ran.
        """
        from torchbolt.tuner.tuning import _tune

        rank_zero_deprecation(
            "`trainer.tune()` is a Lightning 1.x method; use `Tuner(trainer).lr_find(model)` and"
            " `Tuner(trainer).scale_batch_size(model)` (from `torchbolt.tuner import Tuner`) instead."
        )
        return _tune(self, model, train_dataloaders, val_dataloaders, dataloaders, datamodule,
                     scale_batch_size_kwargs, lr_find_kwargs, method)  # type: ignore[arg-type]

    @property
    def tuner(self) -> Any:
        """Lightning 1.x: ``trainer.tuner.lr_find(model)``. Deprecated: use ``Tuner(trainer)``."""
        from torchbolt.tuner import Tuner

        rank_zero_deprecation(
            "`trainer.tuner` is a Lightning 1.x attribute; use `Tuner(trainer)` (from `torchbolt.tuner import Tuner`)."
        )
        return Tuner(self)

    def _evaluate(
        self, fn: TrainerFn, model: LightningModule | None, dataloaders: Any, datamodule: LightningDataModule | None,
        options: _RunOptions,
    ) -> list[dict[str, float]]:
        if isinstance(dataloaders, LightningDataModule):
            datamodule, dataloaders = dataloaders, None
        model = self._check_model(model, fn.value)
        if datamodule is not None and dataloaders is not None:
            raise MisconfigurationException(
                f"You cannot pass both `trainer.{fn.value}(dataloaders=..., datamodule=...)`"
            )
        datamodule = self._check_datamodule(datamodule) if datamodule is not None else (
            self.datamodule if dataloaders is None else None)
        stage: Literal["val", "test"] = "val" if fn == TrainerFn.VALIDATING else "test"
        source = DataSource(model, datamodule, {stage: dataloaders})
        (self._validate_loop_view if stage == "val" else self._test_loop_view).verbose = options.verbose
        results = self._run_entry(fn, model, source, options)
        return results if results is not None else []

    def _check_model(self, model: LightningModule | None, entry: str) -> LightningModule:
        if model is None:
            if self._lightning_module is None:
                # a TypeError as in Lightning (a missing argument), still a MisconfigurationException for old code
                raise _config._ArgumentTypeError(
                    f"`trainer.{entry}()` requires a `LightningModule` when it hasn't been passed in a previous run:"
                    f" call `trainer.{entry}(model, ...)`."
                )
            return self._lightning_module
        orig = getattr(model, "_orig_mod", None)  # torch.compile(model) wraps the module
        if isinstance(orig, LightningModule):
            from torchbolt.utilities.compile import _unwrap_compiled

            unwrapped: LightningModule = _unwrap_compiled(model)
            return unwrapped
        if not isinstance(model, LightningModule):
            raise TypeError(
                f"`model` must be a `LightningModule` (or a `torch.compile`d one), got `{type(model).__qualname__}`."
            )
        return model

    @staticmethod
    def _check_datamodule(datamodule: Any) -> LightningDataModule | None:
        if datamodule is not None and not isinstance(datamodule, LightningDataModule):
            raise TypeError(f"`datamodule` must be a `LightningDataModule`, got `{type(datamodule).__qualname__}`")
        return datamodule

    def _run_entry(self, fn: TrainerFn, model: LightningModule, source: DataSource, options: _RunOptions) -> Any:
        self.state.fn = fn
        self.state.status = TrainerStatus.RUNNING
        # the entry point's loop is the stage from the start (`setup` and `configure_model` see it), as in
        # Lightning; the loops set it again as they run (sanity check, validation within fit)
        self.state.stage = _ENTRY_STAGE[fn]
        self._lightning_module = model
        self.datamodule = source.datamodule
        self._runs.clear()  # the previous run's context must not be mistaken for this one's
        launcher = self.strategy.launcher
        try:
            if launcher is not None:
                return self._apply_worker_result(launcher.launch(self._run, model, source, options, trainer=self))
            return self._run(model, source, options)
        except _TunerExitException:
            # a tuner callback finished its search and ends this fit: a normal finish, not a failure
            self._teardown()
            self._call_teardown_hooks(fn)
            self.state.status = TrainerStatus.FINISHED
            self.state.stage = None
            return None
        except KeyboardInterrupt as exception:
            rank_zero_info("\nDetected KeyboardInterrupt, attempting graceful shutdown ...")
            with _sigint_ignored():  # a second Ctrl-C must not cut the shutdown (hooks, teardown) short
                self._interrupt(exception)
                _kill_script_ranks(self.strategy.launcher)
            # as in Lightning: the process ends with status 1 (catch `SystemExit` to continue after it)
            raise SystemExit(1) from exception
        except BaseException as exception:
            self._interrupt(exception)
            raise

    def _apply_worker_result(self, output: Any) -> Any:
        """A run that happened in spawned processes: take over its state, counters and metrics here."""
        if not isinstance(output, WorkerResult):
            return output
        self.state = output.state
        self._progress.restore(output.progress, source="the spawned processes' result")
        self._metric_store.update(output.callback_metrics, output.logged_metrics, {})
        return output.results

    def _interrupt(self, exception: BaseException) -> None:
        """``on_exception`` hooks, then teardown, so nothing is left half-open after a failure."""
        self.state.status = TrainerStatus.INTERRUPTED
        module = self._lightning_module
        ctx = self._runs[0] if self._runs else None
        if ctx is not None:
            ctx.hooks.callbacks("on_exception", exception)
            ctx.hooks.module("on_exception", exception)
        elif module is not None:
            # the run failed before its hooks were set up; the hook name still tells `self.log` it cannot log
            previous = module.__dict__.get("_current_fx_name")
            module.__dict__["_current_fx_name"] = "on_exception"
            try:
                for cb in self.callbacks:
                    cb.on_exception(self, module, exception)
                module.on_exception(exception)
            finally:
                module.__dict__["_current_fx_name"] = previous
        if self.datamodule is not None:
            self.datamodule.on_exception(exception)
        self.strategy.on_exception(exception)
        self.strategy.finish_flag_exchange(failed=True)
        try:
            self._teardown()
            if ctx is not None and self.state.fn is not None:
                self._call_teardown_hooks(self.state.fn, status="failed")
        finally:
            self.state.stage = None

    # ------------------------------------------------------------------ one run
    def _new_context(self, fn: TrainerFn, model: LightningModule) -> RunContext:
        """The context of a run: this Trainer's state objects and the run's plug-ins, in one place."""
        profiler = self.profiler if _setup.is_active_profiler(self.profiler) else None
        hooks = HookDispatcher(self, model, self.callbacks, self.datamodule, profiler)
        sink = MetricSink(self._metric_store, self._loggers, self._progress, self._config.barebones, module=model)
        return RunContext(
            trainer=self, fn=fn, config=self._config, state=self.state, progress=self._progress, metrics=sink,
            sizes=self._sizes, hooks=hooks, strategy=self.strategy, module=model, datamodule=self.datamodule,
            callbacks=self.callbacks, loggers=self._loggers, data=DataPreparer(self._config, self.strategy, hooks),
            signals=self._signals, profiler=None, active=self._runs, eval_counts=self._eval_counts,
        )

    def _run(self, model: LightningModule, source: DataSource, options: _RunOptions) -> Any:
        fn = self.state.fn
        assert fn is not None
        model.trainer = self  # before `configure_callbacks`, which may use `self.trainer` (and cannot log)
        self.callbacks = _setup.merge_model_callbacks(self.callbacks, model)
        _setup.attach_module_logging(self.callbacks, model)
        self.strategy.connect(model)
        if self.datamodule is not None:
            self.datamodule.trainer = self
        if fn == TrainerFn.FITTING:  # an unset `max_epochs` gets its value now, and keeps it (as in Lightning)
            _config.resolve_fit_max_epochs(self._config, any(isinstance(cb, Timer) for cb in self.callbacks))
        ctx = self._new_context(fn, model)
        ctx.source = source
        self._runs[:] = [ctx]  # `self.log` and `manual_backward` reach the run through `trainer.run_context`
        self._metric_store.reset()
        self._progress.request_stop(False)
        _setup.verify_model(self._config, self.callbacks, model, fn, source)
        self.strategy.setup_environment()
        self._setup_profiler(ctx)
        if fn == TrainerFn.FITTING:
            self._signals.register(self._cluster_environment())
        self._prepare_data(ctx)
        self._call_setup_hooks(ctx, fn)
        self._configure_model(ctx)
        loaded = self._load_checkpoint(fn, options)
        if loaded is not None and not self.strategy.restore_checkpoint_after_setup:
            restore_module_and_callbacks(ctx, loaded)
        if fn == TrainerFn.FITTING:
            ctx.fit_loop = self._fit_loop = FitLoop(ctx, source)
        self._setup_strategy(ctx)
        log_hyperparams(ctx, self._enable_autolog_hparams)
        if loaded is not None:
            if self.strategy.restore_checkpoint_after_setup:
                restore_module_and_callbacks(ctx, loaded)
            if fn == TrainerFn.FITTING:
                restore_training_state(ctx, loaded)
        self.strategy.barrier("run-stage")
        model.zero_grad()  # torch's default frees the gradients (set_to_none=True)
        if ctx.fit_loop is not None:
            with torch.autograd.set_detect_anomaly(self._config.detect_anomaly), torch.enable_grad():
                ctx.fit_loop.run()
            results = None
        else:
            results = self._run_evaluation(ctx, source, options)
        self.strategy.finish_flag_exchange()
        self._teardown()
        if fn == TrainerFn.FITTING:
            ctx.hooks.both("on_fit_end")
        self._call_teardown_hooks(fn)
        self.state.status = TrainerStatus.FINISHED
        self.state.stage = None
        return results

    def _setup_strategy(self, ctx: RunContext) -> None:
        """Devices, model wrapping and (when fitting) optimizers, bound to this run; then ``on_fit_start``."""
        if self._config.benchmark is not None:  # again: another Trainer in this process may have changed it
            torch.backends.cudnn.benchmark = self._config.benchmark
        self.strategy.accelerator.setup(self)  # type: ignore[union-attr]
        loop = ctx.fit_loop
        self.strategy.setup(ctx.module, (lambda: self._setup_optimizers(ctx)) if loop is not None else None)
        if loop is None:
            return
        bind_optimizers(ctx, ctx.module.automatic_optimization, loop.optimization.on_gradients_ready)
        if ctx.profiler is not None:
            instrument_optimizers(self.strategy, ctx.profiler)
        ctx.hooks.both("on_fit_start")

    def _run_evaluation(self, ctx: RunContext, source: DataSource, options: _RunOptions) -> Any:
        """``validate``/``test``/``predict``: the loop over the stage's loaders."""
        fn = ctx.fn
        if _skips_evaluation(self._config, fn):
            return None if fn == TrainerFn.PREDICTING else []
        if fn == TrainerFn.PREDICTING:
            self.state.stage = RunningStage.PREDICTING
            loaders, limits = ctx.data.eval_loaders(source, "predict")
            if not loaders and not source.is_defined("predict"):
                raise MisconfigurationException(
                    "No `predict_dataloader()` method defined to run `Trainer.predict`. Pass"
                    " `trainer.predict(model, dataloaders=...)` or implement `predict_dataloader`."
                )
            ctx.sizes.predict = limits
            self._eval_loaders["predict"] = loaders
            _set_sampler_epoch_all(loaders, self._progress.current_epoch)  # shuffling that follows training
            self._predict_loop = PredictionLoop(ctx, self._config.inference_mode, options.return_predictions)
            ctx.eval_loop = self._predict_loop
            return self._predict_loop.run(loaders, limits)
        stage: Literal["val", "test"] = "val" if fn == TrainerFn.VALIDATING else "test"
        running = RunningStage.VALIDATING if fn == TrainerFn.VALIDATING else RunningStage.TESTING
        self.state.stage = running
        loaders, limits = ctx.data.eval_loaders(source, stage)
        if not source.is_defined(stage):
            method = "val_dataloader" if stage == "val" else "test_dataloader"
            raise MisconfigurationException(
                f"No `{method}()` method defined to run `Trainer.{fn.value}`. Pass"
                f" `trainer.{fn.value}(model, dataloaders=...)`, a datamodule, or implement `{method}`."
            )
        if fn == TrainerFn.VALIDATING:
            ctx.sizes.val = limits
        else:
            ctx.sizes.test = limits
        self._eval_loaders[stage] = loaders
        _set_sampler_epoch_all(loaders, self._progress.current_epoch)  # shuffling that follows training
        loop = EvaluationLoop(ctx, running, inference_mode=self._config.inference_mode)
        ctx.eval_loop = loop
        results = [scalars(r) for r in loop.run(loaders, limits)]
        if options.verbose and self.is_global_zero and results:
            print_results(results, stage)
        return results

    def _teardown(self) -> None:
        self._signals.teardown()
        self.strategy.teardown()
        if self._runs:
            self._runs[0].metrics.collect_into(None)

    def _cluster_environment(self) -> Any:
        return getattr(self.strategy, "cluster_environment", None) or self._resolved.cluster_environment

    # ------------------------------------------------------------------ run phases
    def _prepare_data(self, ctx: RunContext) -> None:
        """``prepare_data`` once per node (``prepare_data_per_node``) or once in total, then a barrier."""
        strategy = self.strategy
        for obj in (ctx.datamodule, ctx.module):
            if obj is None:
                continue
            per_node = getattr(obj, "prepare_data_per_node", True)
            is_zero = strategy.local_rank == 0 if per_node else strategy.is_global_zero
            if is_zero:
                if obj is ctx.module:
                    ctx.hooks.module("prepare_data")
                else:
                    ctx.hooks.datamodule("prepare_data")  # timed by the profiler, as the module's hook is
        strategy.barrier("prepare_data")

    def _call_setup_hooks(self, ctx: RunContext, stage: TrainerFn) -> None:
        """``setup(stage)`` on the datamodule, callbacks and module; ``stage`` is the ``TrainerFn`` (a ``str``)."""
        self.strategy.barrier("pre_setup")
        if ctx.datamodule is not None:
            ctx.hooks.datamodule("setup", stage=stage)
        ctx.hooks.callbacks("setup", stage=stage)
        ctx.hooks.module("setup", stage=stage)
        self.strategy.barrier("post_setup")

    def _call_teardown_hooks(self, stage: TrainerFn, status: RunOutcome = "success") -> None:
        ctx = self._runs[0] if self._runs else None
        if ctx is not None and ctx.datamodule is not None:
            ctx.hooks.datamodule("teardown", stage=stage)  # timed by the profiler
        elif self.datamodule is not None:
            self.datamodule.teardown(stage=stage)
        if ctx is not None:
            ctx.hooks.callbacks("teardown", stage=stage)
            ctx.hooks.module("teardown", stage=stage)
            ctx.hooks.clear_current_hook()
        for logger in self.loggers:
            logger.finalize(status)
        if _setup.is_active_profiler(self.profiler):
            self.profiler.describe()

    def _setup_profiler(self, ctx: RunContext) -> None:
        """Decide once whether this run is profiled; if so, wrap the strategy's step methods (else nothing)."""
        profiler = self.profiler
        if not _setup.is_active_profiler(profiler):
            return
        ctx.profiler = profiler
        profiler._lightning_module = weakref.proxy(ctx.module)
        local_rank = self.local_rank if self.world_size > 1 else None
        profiler.setup(stage=ctx.fn.value, local_rank=local_rank, log_dir=self.log_dir)
        instrument_strategy(self.strategy, profiler)

    def _configure_model(self, ctx: RunContext) -> None:
        # Only a hook the module's class really overrides is called (a wrapper that records calls to the
        # inherited no-op does not count), and the contexts are entered only then, as in Lightning.
        from torchbolt.utilities.parsing import is_overridden

        if is_overridden("configure_sharded_model", ctx.module, LightningModule):
            with self.strategy.model_sharded_context():
                ctx.hooks.module("configure_sharded_model")
        if is_overridden("configure_model", ctx.module, LightningModule):
            with self.strategy.model_sharded_context(), self.strategy.precision_plugin.module_init_context():
                ctx.hooks.module("configure_model")

    def _setup_optimizers(self, ctx: RunContext) -> None:
        optim_conf = ctx.hooks.module("configure_optimizers")
        optimizers, configs = _init_optimizers_and_lr_schedulers(ctx.module, optim_conf)
        self.strategy.optimizers = optimizers
        self.strategy.lr_scheduler_configs = configs

    def _load_checkpoint(self, fn: TrainerFn, options: _RunOptions) -> LoadedCheckpoint | None:
        from torchbolt.trainer.ckpt_path import resolve_ckpt_path

        path = resolve_ckpt_path(self, fn, options.ckpt_path, options.model_provided, options.weights_only,
                                 environment=self._cluster_environment())
        self.ckpt_path = path
        if path is None:
            return None
        return load_checkpoint(self.strategy, path, weights_only=options.weights_only)

    # ------------------------------------------------------------------ model creation
    @contextmanager
    def init_module(self, empty_init: bool | None = None) -> Generator[None, None, None]:
        """Create the model's tensors on the run's device and in the precision's dtype (e.g. ``"bf16-true"``),
        instead of creating them in fp32 on the CPU and converting them later.

        Example::

            trainer = Trainer(accelerator="gpu", precision="bf16-true")
            with trainer.init_module():
                model = MyLightningModule()

        Args:
            empty_init: accepted for Lightning compatibility; weights are always initialized.
        """
        with self.strategy.tensor_init_context(empty_init):
            yield

    # ------------------------------------------------------------------ checkpoints
    def save_checkpoint(self, filepath: str | os.PathLike[str], weights_only: bool | None = False,
                        storage_options: Any | None = None) -> None:
        """Write a checkpoint of the current state to ``filepath``.

        Every process builds the dict (sharded strategies gather there); the strategy writes it
        (the global-zero process only, atomically: a crash leaves the old file or the new one).
        The loggers' buffered values are saved first, so the log files hold every row sent before
        the checkpoint.

        Args:
            filepath: a local path or an fsspec URL (``s3://...``, ``memory://...``).
            weights_only: save only the weights and loop counters (no optimizer, scheduler or
                callback state: such a file cannot resume a fit).
            storage_options: passed to the ``CheckpointIO`` plug-in.

        Raises:
            AttributeError: when no model is attached (call it after or during a run, or attach one
                with ``trainer.strategy.connect(model)``).
            OSError: the file could not be written (the message names it; earlier files are intact).

        Example::

            trainer.save_checkpoint("example.ckpt")
            model = LitModel.load_from_checkpoint("example.ckpt")
        """
        module = self.lightning_module
        if module is None:
            raise AttributeError(
                "Saving a checkpoint is only possible if a model is attached to the Trainer. Did you call"
                " `Trainer.save_checkpoint()` before calling `Trainer.{fit,validate,test,predict}`?"
            )
        for ctx in self._runs:  # log rows sent before the checkpoint are on disk before it exists
            ctx.metrics.flush_loggers()
        # a module attached with `trainer.strategy.connect(model)` before any run: its state at step 0
        ctx = self._runs[-1] if self._runs else self._new_context(self.state.fn or TrainerFn.FITTING, module)
        checkpoint = dump_checkpoint(ctx, weights_only)
        self.strategy.save_checkpoint(checkpoint, filepath, storage_options=storage_options)
        self.strategy.barrier("Trainer.save_checkpoint")

    # ------------------------------------------------------------------ the run's state
    @property
    def run_context(self) -> RunContext | None:
        """The context of the run in progress (a tuner trial's while one runs), else of the last run.

        For torchbolt's loops, tuners and plug-ins; user code reads the Trainer's properties instead.
        """
        return self._runs[-1] if self._runs else None


@dataclass
class _RunOptions:
    """What one ``fit``/``validate``/``test``/``predict`` call asked for, besides model and data."""

    ckpt_path: Any = None
    weights_only: bool | None = None
    model_provided: bool = True
    verbose: bool = True
    #: None: return them, except under a spawning strategy (see `PredictionLoop`)
    return_predictions: bool | None = None


# ---------------------------------------------------------------------- module-level helpers
@contextmanager
def _sigint_ignored() -> Generator[None, None, None]:
    """Ignore SIGINT while the block runs (main thread only; elsewhere signals cannot be changed)."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        # `None`: a handler installed outside Python, which cannot be put back; Python's default then
        signal.signal(signal.SIGINT, previous if previous is not None else signal.default_int_handler)


def _kill_script_ranks(launcher: Any) -> None:
    """After Ctrl-C, the local ranks a script launcher started must not outlive this process."""
    import signal

    from torchbolt.strategies.launchers.subprocess_script import SubprocessScriptLauncher

    if isinstance(launcher, SubprocessScriptLauncher):
        launcher.kill(getattr(signal, "SIGKILL", signal.SIGTERM))


def _signature_defaults() -> dict[str, Any]:
    import inspect

    return {name: p.default for name, p in inspect.signature(Trainer.__init__).parameters.items()
            if p.default is not inspect.Parameter.empty}


_TRAINER_DEFAULTS: dict[str, Any] = {}



_TRAINER_DEFAULTS.update(_signature_defaults())


def _skips_evaluation(config: Any, fn: TrainerFn) -> bool:
    """``limit_{val,test,predict}_batches=0``: the run requests no loader and calls no loop hook (as in Lightning).

    ``validate``/``test`` then return ``[]`` and ``predict`` returns ``None``; setup and teardown hooks still run.
    """
    stage = {TrainerFn.VALIDATING: "val", TrainerFn.TESTING: "test", TrainerFn.PREDICTING: "predict"}.get(fn)
    return stage is not None and getattr(config, f"limit_{stage}_batches") == 0
