"""Short runs inside a running ``fit`` or evaluation (the tuners' trials), with everything put back afterwards.

A tuner callback runs at ``on_fit_start`` (the batch-size finder also at ``on_validation_start``,
``on_test_start``, ``on_predict_start``): the model, optimizers and LR schedulers exist, no batch has
been run. :class:`SearchRun` snapshots the state a training run changes in place (weights and
buffers, optimizer state and param groups, schedulers, precision state, random generators), runs
fresh loops (fit loops, or evaluation loops when tuning an evaluation) in a nested run context (its
own counters, metrics, loader sizes and settings; only the tuner's own callback receives hooks; no
loggers), then restores the snapshot, so the real run starts exactly as it would have without the search. The snapshot lives in host memory: it costs
no device memory, which matters to the batch-size finder.
"""

from __future__ import annotations

import copy
import dataclasses
from types import TracebackType
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from torchbolt.loggers.logger import DummyLogger
from torchbolt.loops.progress import EvalBatchCounts
from torchbolt.trainer.context import LoaderSizes, RunContext
from torchbolt.trainer.data import DataPreparer
from torchbolt.trainer.hooks import HookDispatcher
from torchbolt.trainer.logging import MetricSink, MetricStore
from torchbolt.trainer.states import DataStage, Progress, RunningStage
from torchbolt.utilities.combined_loader import CombinedLoader
from torchbolt.utilities.exceptions import MisconfigurationException
from torchbolt.utilities.seed import _collect_rng_states, _set_rng_states

if TYPE_CHECKING:
    from torchbolt.callbacks.callback import Callback
    from torchbolt.trainer.data import DataSource
    from torchbolt.trainer.trainer import Trainer


@dataclasses.dataclass
class _Stashed:
    """A tensor copied to host memory, with the device it goes back to."""

    device: torch.device
    tensor: Tensor


def _to_host(obj: Any) -> Any:
    if isinstance(obj, Tensor):
        return _Stashed(obj.device, obj.detach().to("cpu", copy=True))
    if isinstance(obj, dict):
        return {k: _to_host(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_to_host(v) for v in obj)
    return copy.deepcopy(obj)


def _from_host(obj: Any) -> Any:
    if isinstance(obj, _Stashed):
        return obj.tensor.to(obj.device, copy=True)
    if isinstance(obj, dict):
        return {k: _from_host(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_from_host(v) for v in obj)
    return copy.deepcopy(obj)


class _OptimizerSnapshot:
    """Per-parameter state and param-group settings of one optimizer, restored in place.

    In place, because ``LightningOptimizer`` wrappers and LR schedulers share the optimizer's
    ``param_groups`` list and ``state`` dict; ``load_state_dict`` would replace them.
    """

    def __init__(self, optimizer: torch.optim.Optimizer) -> None:
        self.optimizer = optimizer
        self.groups = [({k: copy.deepcopy(v) for k, v in g.items() if k != "params"}, list(g["params"]))
                       for g in optimizer.param_groups]
        self.state = {param: _to_host(state) for param, state in optimizer.state.items()}

    def restore(self) -> None:
        optimizer = self.optimizer
        groups = [dict(settings, params=params) for settings, params in self.groups]
        if len(groups) == len(optimizer.param_groups):
            for live, saved in zip(optimizer.param_groups, groups):
                live.clear()
                live.update(saved)
        else:
            optimizer.param_groups[:] = groups
        optimizer.state.clear()
        for param, state in self.state.items():
            optimizer.state[param] = _from_host(state)


class _Snapshot:
    """Everything a training run inside ``fit`` can change; :meth:`restore` puts it back."""

    def __init__(self, ctx: RunContext) -> None:
        model = ctx.module
        strategy = ctx.strategy
        self.model_state = _to_host(model.state_dict())
        self.training_modes = [(m, m.training) for m in model.modules()]
        self.optimizers = [_OptimizerSnapshot(opt) for opt in strategy.optimizers]
        self.scheduler_list = strategy.lr_scheduler_configs
        self.scheduler_configs = list(self.scheduler_list)
        self.scheduler_states = [_to_host(c.scheduler.state_dict()) for c in self.scheduler_configs]
        self.precision_state = copy.deepcopy(strategy.precision_plugin.state_dict())
        self.rng = _collect_rng_states()
        self.stage = ctx.state.stage

    def restore(self, ctx: RunContext) -> None:
        model = ctx.module
        strategy = ctx.strategy
        ctx.state.stage = self.stage
        model.zero_grad(set_to_none=True)
        model.load_state_dict(_from_host(self.model_state))
        for module, mode in self.training_modes:
            module.training = mode
        for snapshot in self.optimizers:
            snapshot.restore()
        self.scheduler_list[:] = self.scheduler_configs
        strategy.lr_scheduler_configs = self.scheduler_list
        for config, state in zip(self.scheduler_configs, self.scheduler_states):
            config.scheduler.load_state_dict(_from_host(state))
        if self.precision_state:
            strategy.precision_plugin.load_state_dict(copy.deepcopy(self.precision_state))
        _set_rng_states(self.rng)


_EVAL_STAGES: dict[str, tuple[DataStage, RunningStage]] = {
    "validate": ("val", RunningStage.VALIDATING),
    "test": ("test", RunningStage.TESTING),
    "predict": ("predict", RunningStage.PREDICTING),
}


class SearchRun:
    """Context manager for tuner trials inside a running ``fit`` (or ``validate``/``test``/``predict``).

    Args:
        trainer: the Trainer whose run is in progress (call from ``on_fit_start``, ``on_<stage>_start``
            or a later hook).
        callbacks: the only callbacks that receive hooks during the trials.
        continue_progress: ``fit`` only: each trial starts at the run's current ``global_step`` and
            epoch (hooks see the counters go on from where the run is) instead of at 0.
        config_overrides: Trainer settings for the trials (e.g. ``max_steps``), as ``TrainerConfig`` fields.

    Example::

        with SearchRun(trainer, [recorder], max_steps=10) as search:
            search.run()     # a fresh loop over the run's data; may be called repeatedly

    Raises:
        MisconfigurationException: when no run is in progress.
    """

    def __init__(self, trainer: Trainer, callbacks: list[Callback], *, continue_progress: bool = False,
                 **config_overrides: Any) -> None:
        ctx = trainer.run_context
        fn = trainer.state.fn.value if trainer.state.fn is not None else None
        source: DataSource | None = None
        if ctx is not None and fn == "fit" and ctx.fit_loop is not None:
            source = ctx.fit_loop.source
        elif ctx is not None and fn in _EVAL_STAGES:
            source = ctx.source
        if ctx is None or source is None:
            raise MisconfigurationException(
                "The tuners run inside a running `trainer.fit` (the batch size finder also inside `validate`,"
                " `test` or `predict`): use `Tuner(trainer)` or add the tuner callback to `Trainer(callbacks=...)`"
                " and call `trainer.fit(model)`."
            )
        self.trainer = trainer
        self.parent = ctx
        self.callbacks = list(callbacks)
        self.continue_progress = continue_progress
        self.config_overrides = config_overrides
        self.source: DataSource = source
        #: ``None`` for ``fit``, else the loader kind and running stage of the evaluation being tuned
        self.eval_stage: tuple[DataStage, RunningStage] | None = _EVAL_STAGES.get(fn) if fn else None
        self.ctx: RunContext | None = None
        self._snapshot: _Snapshot | None = None
        self._scope: Any = None

    def __enter__(self) -> SearchRun:
        parent = self.parent
        self._snapshot = _Snapshot(parent)
        config = dataclasses.replace(parent.config, **self.config_overrides)
        hooks = HookDispatcher(self.trainer, parent.module, self.callbacks, parent.datamodule, None)
        # nothing is logged, but hooks that use `self.logger` keep working
        loggers: list[Any] = [DummyLogger()] if parent.loggers else []
        progress = Progress()
        self._scope = parent.nested(
            config=config, hooks=hooks, callbacks=list(self.callbacks), loggers=loggers, progress=progress,
            metrics=MetricSink(MetricStore(), loggers, progress, config.barebones), sizes=LoaderSizes(),
            data=DataPreparer(config, parent.strategy, hooks), profiler=None, fit_loop=None, eval_loop=None,
            eval_counts=EvalBatchCounts(),
        )
        self.ctx = self._scope.__enter__()
        return self

    def loaders(self) -> list[Any]:
        """The loaders a trial would run on now (re-created: they read the current batch size)."""
        ctx = self.ctx
        assert ctx is not None, "SearchRun.loaders() is called inside `with SearchRun(...)`"
        if self.eval_stage is None:
            loader, _ = ctx.data.train_loader(self.source)
            return list(loader.flattened) if isinstance(loader, CombinedLoader) else [loader]
        loaders, _ = ctx.data.eval_loaders(self.source, self.eval_stage[0])
        return loaders

    def run(self) -> None:
        """One trial: a fresh loop with the current model (and, in ``fit``, optimizer and schedulers)."""
        from torchbolt.trainer.eval_loop import EvaluationLoop, PredictionLoop
        from torchbolt.trainer.fit_loop import FitLoop

        ctx = self.ctx
        assert ctx is not None, "SearchRun.run() is called inside `with SearchRun(...)`"
        ctx.progress.reset()
        ctx.metrics.collect_into(None)
        if self.eval_stage is None:
            if self.continue_progress:
                counters = self.parent.progress
                ctx.progress.global_step = counters.global_step
                ctx.progress.current_epoch = counters.current_epoch
                ctx.progress.batches_that_stepped = counters.batches_that_stepped
            ctx.module.zero_grad(set_to_none=True)
            ctx.fit_loop = loop = FitLoop(ctx, self.source)
            loop.run()
            return
        kind, running = self.eval_stage
        loaders, limits = ctx.data.eval_loaders(self.source, kind)
        setattr(ctx.sizes, kind, limits)
        eval_loop: EvaluationLoop | PredictionLoop
        if kind == "predict":
            eval_loop = PredictionLoop(ctx, ctx.config.inference_mode, return_predictions=False)
        else:
            eval_loop = EvaluationLoop(ctx, running, inference_mode=ctx.config.inference_mode)
        ctx.eval_loop = eval_loop
        ctx.state.stage = running
        eval_loop.run(loaders, limits)

    def reload_run_loaders(self) -> None:
        """After the search: re-create the run's loaders (they read the size found), so the run uses them.

        In ``fit`` the training and validation loaders are rebuilt (``trainer.train_dataloader``,
        ``trainer.val_dataloaders``); in an evaluation, the
        running loop's loaders are replaced before its first batch (``trainer.val_dataloaders``...).
        """
        parent = self.parent
        if self.eval_stage is None:
            loop = parent.fit_loop
            if loop is not None:
                loop.setup_train_data()
                if loop.validation_enabled():
                    loop._setup_val_data()  # the validation loaders read the batch-size attribute too
            return
        eval_loop = parent.eval_loop
        if eval_loop is None:
            return
        loaders, limits = parent.data.eval_loaders(self.source, self.eval_stage[0])
        eval_loop.replace_loaders(loaders, limits)

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        assert self._snapshot is not None
        try:
            self._scope.__exit__(exc_type, exc, tb)
        finally:
            self._snapshot.restore(self.parent)
            self._snapshot = None
            self.ctx = None
