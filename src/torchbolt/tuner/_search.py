"""Short training runs inside a running ``fit`` (the tuners' trials), with everything put back afterwards.

A tuner callback runs at ``on_fit_start``: the model, optimizers and LR schedulers exist, no batch
has been trained. :class:`SearchRun` snapshots every piece of state a training run can change
(weights and buffers, optimizer state and param groups, schedulers, loop counters, precision
state, random generators, the Trainer's hooks, loggers and metrics), runs fresh fit loops with
only the tuner's own callback receiving hooks and no loggers, then restores the snapshot, so the
real run starts exactly as it would have without the search. The snapshot lives in host memory:
it costs no device memory, which matters to the batch-size finder.
"""

from __future__ import annotations

import copy
import dataclasses
from types import TracebackType
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from torchbolt.loggers.logger import DummyLogger
from torchbolt.trainer.hooks import HookDispatcher
from torchbolt.trainer.logging import MetricStore
from torchbolt.trainer.states import Progress
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

    def __init__(self, trainer: Trainer) -> None:
        model = trainer.lightning_module
        strategy = trainer.strategy
        self.model_state = _to_host(model.state_dict())
        self.training_modes = [(m, m.training) for m in model.modules()]
        self.fx_name = model.__dict__.get("_current_fx_name")
        self.optimizers = [_OptimizerSnapshot(opt) for opt in strategy.optimizers]
        self.scheduler_list = strategy.lr_scheduler_configs
        self.scheduler_configs = list(self.scheduler_list)
        self.scheduler_states = [_to_host(c.scheduler.state_dict()) for c in self.scheduler_configs]
        self.precision_state = copy.deepcopy(strategy.precision_plugin.state_dict())
        self.progress = copy.deepcopy(trainer._progress.state_dict())
        self.rng = _collect_rng_states()
        self.trainer_attrs = {name: getattr(trainer, name) for name in _TRAINER_ATTRS}
        self.stage = trainer.state.stage

    def restore(self, trainer: Trainer) -> None:
        model = trainer.lightning_module
        strategy = trainer.strategy
        for name, value in self.trainer_attrs.items():
            setattr(trainer, name, value)
        trainer.state.stage = self.stage
        model.zero_grad(set_to_none=True)
        model.load_state_dict(_from_host(self.model_state))
        for module, mode in self.training_modes:
            module.training = mode
        model.__dict__["_current_fx_name"] = self.fx_name
        for snapshot in self.optimizers:
            snapshot.restore()
        self.scheduler_list[:] = self.scheduler_configs
        strategy.lr_scheduler_configs = self.scheduler_list
        for config, state in zip(self.scheduler_configs, self.scheduler_states):
            config.scheduler.load_state_dict(_from_host(state))
        if self.precision_state:
            strategy.precision_plugin.load_state_dict(copy.deepcopy(self.precision_state))
        trainer._progress.load_state_dict(copy.deepcopy(self.progress))
        _set_rng_states(self.rng)


# Trainer attributes a search run swaps out (and the snapshot puts back)
_TRAINER_ATTRS = ("_config", "_hooks", "callbacks", "_loggers", "_fit_loop", "_metrics", "_active_results",
                  "_num_training_batches", "_num_val_batches", "_num_sanity_val_batches")


class SearchRun:
    """Context manager for tuner trials inside a running ``fit``.

    Args:
        trainer: the Trainer whose ``fit`` is running (call from ``on_fit_start`` or a later hook).
        callbacks: the only callbacks that receive hooks during the trials.
        config_overrides: Trainer settings for the trials (e.g. ``max_steps``), as ``TrainerConfig`` fields.

    Example::

        with SearchRun(trainer, [recorder], max_steps=10) as search:
            search.run()     # a fresh fit loop over the fit's training data; may be called repeatedly

    Raises:
        MisconfigurationException: when no ``fit`` is running.
    """

    def __init__(self, trainer: Trainer, callbacks: list[Callback], **config_overrides: Any) -> None:
        if trainer._fit_loop is None or trainer._lightning_module is None or trainer._hooks is None:
            raise MisconfigurationException(
                "The tuners run inside `trainer.fit`: use `Tuner(trainer)` or add the tuner callback to"
                " `Trainer(callbacks=...)` and call `trainer.fit(model)`."
            )
        self.trainer = trainer
        self.callbacks = list(callbacks)
        self.config_overrides = config_overrides
        self.source: DataSource = trainer._fit_loop.source
        self._snapshot: _Snapshot | None = None

    def __enter__(self) -> SearchRun:
        trainer = self.trainer
        self._snapshot = _Snapshot(trainer)
        trainer._config = dataclasses.replace(trainer._config, **self.config_overrides)
        trainer._hooks = HookDispatcher(trainer, trainer.lightning_module, self.callbacks, trainer.datamodule, None)
        trainer.callbacks = list(self.callbacks)
        # nothing is logged, but hooks that use `self.logger` keep working
        trainer._loggers = [DummyLogger()] if trainer._loggers else []
        trainer._metrics = MetricStore()
        return self

    def run(self) -> None:
        """One trial: a fresh fit loop from step 0 with the current model, optimizer and schedulers."""
        from torchbolt.trainer.fit_loop import FitLoop

        trainer = self.trainer
        trainer._progress.load_state_dict(Progress().state_dict())
        trainer.lightning_module.zero_grad(set_to_none=True)
        trainer._active_results = None
        trainer._fit_loop = loop = FitLoop(trainer, self.source)
        loop.run()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        assert self._snapshot is not None
        self._snapshot.restore(self.trainer)
        self._snapshot = None
