"""``LightningOptimizer`` and the parsing of every ``configure_optimizers`` return form."""

from __future__ import annotations

from collections.abc import Callable, Generator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any

import torch
from torch.optim import Optimizer

from torchbolt.utilities.exceptions import MisconfigurationException, _MisconfiguredRun
from torchbolt.utilities.rank_zero import rank_zero_warn

if TYPE_CHECKING:
    from torchbolt.core.module import LightningModule

# (optimizer, closure, step kwargs) -> what optimizer.step returned
StepFn = Callable[[Optimizer, Callable[[], Any], dict[str, Any]], Any]


def _do_nothing_closure() -> None:
    return None


def _plain_step(optimizer: Optimizer, closure: Callable[[], Any], kwargs: dict[str, Any]) -> Any:
    return optimizer.step(closure=closure, **kwargs)


class LightningOptimizer:
    """Wraps a ``torch.optim.Optimizer`` so that ``step()`` goes through the strategy and precision.

    It is an instance of the wrapped optimizer's class (``isinstance(opt, torch.optim.SGD)`` holds)
    and reads its ``param_groups``, ``state`` and ``defaults`` live (also after ``load_state_dict``).
    In manual optimization ``self.optimizers()`` returns these; calling ``opt.step()`` applies gradient unscaling (mixed precision), calls
    ``on_before_optimizer_step`` and counts ``trainer.global_step``.
    """

    def __init__(self, optimizer: Optimizer) -> None:
        # the optimizer's other attributes, copied (param_groups/state/defaults are properties, read live)
        self.__dict__ = {k: v for k, v in optimizer.__dict__.items()
                         if k not in ("step", "__del__", "param_groups", "state", "defaults")}
        self._optimizer = optimizer
        self._step_fn: StepFn = _plain_step
        # called after each step (manual optimization counts `global_step` here); None: nothing to do
        self._on_after_step: Callable[[], None] | None = None
        self._toggle: Callable[[LightningOptimizer], Any] | None = None
        self._untoggle: Callable[[LightningOptimizer], Any] | None = None
        # make `isinstance(self, type(optimizer))` true without copying the optimizer
        self.__class__ = type("Lightning" + type(optimizer).__name__, (self.__class__, type(optimizer)), {})

    def __reduce__(self) -> tuple[Any, ...]:
        # the class is made per wrapped optimizer type and cannot be found by name: a pickled (or deep-copied)
        # wrapper is rebuilt around its optimizer; the run binds it again when it starts (`bind`)
        return LightningOptimizer, (self._optimizer,)

    @property
    def optimizer(self) -> Optimizer:
        """The wrapped ``torch.optim.Optimizer``."""
        return self._optimizer

    # `param_groups`, `state` and `defaults` are read from (and written to) the wrapped optimizer on each
    # access: `optimizer.load_state_dict` replaces its lists, and this wrapper must see the new ones
    @property
    def param_groups(self) -> list[dict[str, Any]]:
        return self._optimizer.param_groups

    @param_groups.setter
    def param_groups(self, param_groups: list[dict[str, Any]]) -> None:
        self._optimizer.param_groups = param_groups

    @property
    def state(self) -> Any:
        return self._optimizer.state

    @state.setter
    def state(self, state: Any) -> None:
        self._optimizer.state = state

    @property
    def defaults(self) -> dict[str, Any]:
        return self._optimizer.defaults

    @defaults.setter
    def defaults(self, defaults: dict[str, Any]) -> None:
        self._optimizer.defaults = defaults

    def bind(self, step_fn: StepFn, on_after_step: Callable[[], None] | None,
             toggle: Callable[[LightningOptimizer], Any] | None,
             untoggle: Callable[[LightningOptimizer], Any] | None) -> None:
        """Connect this optimizer to a run: how a step goes through the strategy, what counts it (manual
        optimization), and how the module toggles its parameters around a manual step."""
        self._step_fn = step_fn
        self._on_after_step = on_after_step
        self._toggle = toggle
        self._untoggle = untoggle

    @classmethod
    def _to_lightning_optimizer(cls, optimizer: Optimizer | LightningOptimizer) -> LightningOptimizer:
        return optimizer if isinstance(optimizer, LightningOptimizer) else cls(optimizer)

    def step(self, closure: Callable[[], Any] | None = None, **kwargs: Any) -> Any:
        """Run the optimizer step through the strategy and precision plugin.

        Args:
            closure: re-evaluates the loss (needed by e.g. LBFGS); in manual optimization it is
                called once before the step when given.
            kwargs: passed on to ``torch.optim.Optimizer.step``.
        """
        if closure is None:
            closure = _do_nothing_closure
        elif not callable(closure):
            raise MisconfigurationException("When `optimizer.step(closure)` is called, the closure should be callable")
        out = self._step_fn(self._optimizer, closure, kwargs)
        on_after_step = self._on_after_step
        if on_after_step is not None:
            on_after_step()
        return out

    def zero_grad(self, set_to_none: bool = True) -> None:
        self._optimizer.zero_grad(set_to_none=set_to_none)

    @contextmanager
    def toggle_model(self, sync_grad: bool = True) -> Generator[None, None, None]:
        """Within the block only this optimizer's parameters require gradients.

        Example::

            with opt.toggle_model():
                loss = self.compute_loss(batch)
                self.manual_backward(loss)
            opt.step()
        """
        if self._toggle is not None:
            self._toggle(self)
        try:
            yield
        finally:
            if self._untoggle is not None:
                self._untoggle(self)

    def state_dict(self) -> dict[str, Any]:
        return self._optimizer.state_dict()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._optimizer.load_state_dict(state_dict)

    def __repr__(self) -> str:
        # the class is named "Lightning<OptimizerClass>": "LightningSGD (\nParameter Group 0 ...)"
        return "Lightning" + repr(self._optimizer)


@dataclass
class LRSchedulerConfig:
    """How and when a learning-rate scheduler is stepped.

    Attributes:
        scheduler: the scheduler.
        name: the name ``LearningRateMonitor`` logs it under.
        interval: ``"epoch"`` or ``"step"`` (optimizer steps).
        frequency: step it every ``frequency`` intervals.
        reduce_on_plateau: it takes a metric in ``step(metric)`` (``ReduceLROnPlateau``).
        monitor: the metric passed to ``step`` for plateau schedulers.
        strict: raise when ``monitor`` is not among the logged metrics (else warn and skip).
    """

    scheduler: Any
    name: str | None = None
    interval: str = "epoch"
    frequency: int = 1
    reduce_on_plateau: bool = False
    monitor: str | None = None
    strict: bool = True
    # which optimizer the scheduler updates (filled in by the Trainer; not part of the config's identity)
    opt_idx: int | None = field(default=None, repr=False, compare=False)


# `reduce_on_plateau` may be given to mark a custom scheduler that takes a metric in `step(metric)`
_SCHEDULER_KEYS = {f.name for f in fields(LRSchedulerConfig)} - {"opt_idx"}


def _is_plateau(scheduler: Any) -> bool:
    return isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau)


def _configure_schedulers(schedulers: Sequence[Any], monitor: str | None) -> list[LRSchedulerConfig]:
    configs: list[LRSchedulerConfig] = []
    for scheduler in schedulers:
        if isinstance(scheduler, Mapping):
            if "scheduler" not in scheduler:
                raise MisconfigurationException(
                    'The lr scheduler dict must have the key "scheduler" with its item being an lr scheduler'
                )
            extra = set(scheduler) - _SCHEDULER_KEYS
            if extra:
                rank_zero_warn(
                    f"Found unsupported keys in the lr scheduler dict: {_as_set(extra)}. They are ignored;"
                    f" supported keys are: {sorted(_SCHEDULER_KEYS)}",
                    category=RuntimeWarning,
                )
            config = {k: v for k, v in scheduler.items() if k in _SCHEDULER_KEYS}
            interval = config.get("interval", "epoch")
            if interval not in ("step", "epoch"):
                raise MisconfigurationException(
                    f"The \"interval\" key in lr scheduler dict must be 'step' or 'epoch', got {interval!r}."
                )
            if interval == "epoch" and isinstance(config["scheduler"], torch.optim.lr_scheduler.OneCycleLR):
                rank_zero_warn(
                    "A `OneCycleLR` scheduler with 'interval': 'epoch' steps once per epoch, but its schedule is"
                    " usually counted in optimizer steps. Are you sure you didn't mean 'interval': 'step'?",
                    category=RuntimeWarning,
                )
            frequency = config.get("frequency", 1)
            if not isinstance(frequency, int) or frequency < 1:
                raise MisconfigurationException(
                    f"The 'frequency' key in the lr scheduler dict must be a positive int, got {frequency!r}."
                )
            plateau = bool(config.pop("reduce_on_plateau", _is_plateau(config["scheduler"])))
            config.setdefault("monitor", monitor)
            if plateau and config.get("monitor") is None:
                raise MisconfigurationException(
                    "`configure_optimizers` must include a monitor when a `ReduceLROnPlateau` scheduler is used."
                    ' For example: {"optimizer": optimizer, "lr_scheduler":'
                    ' {"scheduler": scheduler, "monitor": "your_loss"}}'
                )
            configs.append(LRSchedulerConfig(reduce_on_plateau=plateau, **config))
        elif _is_plateau(scheduler):
            if monitor is None:
                raise MisconfigurationException(
                    "`configure_optimizers` must include a monitor when a `ReduceLROnPlateau` scheduler is used."
                    ' For example: {"optimizer": optimizer, "lr_scheduler": scheduler, "monitor": "your_loss"}'
                )
            configs.append(LRSchedulerConfig(scheduler, reduce_on_plateau=True, monitor=monitor))
        else:
            configs.append(LRSchedulerConfig(scheduler))
    return configs


def _is_scheduler(obj: Any) -> bool:
    return hasattr(obj, "step") and hasattr(obj, "optimizer") and not isinstance(obj, Optimizer)


def _parse_optim_conf(optim_conf: Any) -> tuple[list[Optimizer], list[Any], str | None]:
    """Split a ``configure_optimizers`` return value into optimizers, scheduler entries and a monitor."""
    monitor: str | None = None
    if isinstance(optim_conf, Optimizer):
        return [optim_conf], [], None
    if isinstance(optim_conf, Mapping):
        _check_optim_dict(optim_conf)
        monitor = optim_conf.get("monitor")
        scheduler = optim_conf.get("lr_scheduler")
        return [optim_conf["optimizer"]], ([scheduler] if scheduler is not None else []), monitor
    if isinstance(optim_conf, (list, tuple)):
        items = list(optim_conf)
        # ([optimizers], [schedulers])
        if (
            len(items) == 2
            and isinstance(items[0], (list, tuple))
            and all(isinstance(o, Optimizer) for o in items[0])
        ):
            schedulers = items[1] if isinstance(items[1], (list, tuple)) else [items[1]]
            return list(items[0]), list(schedulers), None
        if all(isinstance(o, Mapping) for o in items):
            optimizers, schedulers = [], []
            for d in items:
                _check_optim_dict(d)
                optimizers.append(d["optimizer"])
                scheduler = d.get("lr_scheduler")
                if scheduler is not None:
                    if not isinstance(scheduler, Mapping):
                        scheduler = {"scheduler": scheduler}
                    if "monitor" in d and "monitor" not in scheduler:
                        scheduler = {**scheduler, "monitor": d["monitor"]}
                    schedulers.append(scheduler)
            return optimizers, schedulers, None
        if all(isinstance(o, Optimizer) for o in items):
            return items, [], None
        # (optimizer, scheduler) written as a flat pair
        if len(items) == 2 and isinstance(items[0], Optimizer) and _is_scheduler(items[1]):
            return [items[0]], [items[1]], None
    raise MisconfigurationException(
        f"`configure_optimizers` returned an unsupported value: {type(optim_conf).__name__} (Unknown configuration"
        " for model optimizers). Return one of:"
        " an optimizer; a list of optimizers; a tuple `([optimizers], [schedulers])`; a dict"
        ' `{"optimizer": opt, "lr_scheduler": scheduler_or_config, "monitor": "metric"}`; or a list of such dicts.'
    )


def _check_optim_dict(d: Mapping[str, Any]) -> None:
    if "optimizer" not in d:
        raise MisconfigurationException(
            'A dict returned by `configure_optimizers` must have the key "optimizer", got keys'
            f" {sorted(map(str, d))}."
        )
    extra = set(d) - {"optimizer", "lr_scheduler", "monitor"}
    if extra:
        rank_zero_warn(f"Found unsupported keys in the optimizer configuration: {_as_set(extra)}",
                       category=RuntimeWarning)


def _as_set(keys: set[Any]) -> str:
    """``{'a', 'b'}``, sorted, so the message is the same on every run."""
    return "{" + ", ".join(repr(k) for k in sorted(keys, key=str)) + "}"


_CALL_HOOK: Any = object()


def _init_optimizers_and_lr_schedulers(
    model: LightningModule, optim_conf: Any = _CALL_HOOK
) -> tuple[list[Optimizer], list[LRSchedulerConfig]]:
    """Validate what ``configure_optimizers`` returned and build the scheduler configs.

    ``optim_conf`` is that return value; when omitted, ``model.configure_optimizers()`` is called here.
    Under manual optimization scheduler configs are only recorded (the user steps the schedulers), so a
    ``ReduceLROnPlateau`` needs no monitor and keys that only automatic stepping uses are ignored with
    a warning.

    Raises:
        MisconfigurationException: for any unsupported form, a scheduler whose optimizer was not
            returned, several optimizers (or a ``training_step(..., optimizer_idx)``) under automatic
            optimization (also a ``RuntimeError``), or a scheduler that automatic optimization cannot step.
        TypeError: for a scheduler without ``state_dict``/``load_state_dict`` (it could not be checkpointed).
    """
    if optim_conf is _CALL_HOOK:
        optim_conf = model.configure_optimizers()
    _check_no_optimizer_idx(model)
    if optim_conf is None:
        rank_zero_warn(
            "`LightningModule.configure_optimizers` returned `None`, this fit will run with no optimizer",
        )
        return [], []
    optimizers, schedulers, monitor = _parse_optim_conf(optim_conf)
    for opt in optimizers:
        if not isinstance(opt, Optimizer):
            raise MisconfigurationException(
                f"`configure_optimizers` returned {type(opt).__name__} where a `torch.optim.Optimizer` was expected."
            )
    if model.automatic_optimization:
        configs = _configure_schedulers(schedulers, monitor)
    else:
        configs = _configure_schedulers_manual(schedulers)
    for config in configs:
        sched_opt = getattr(config.scheduler, "optimizer", None)
        matches = [i for i, opt in enumerate(optimizers) if opt is sched_opt]
        if not matches:
            raise MisconfigurationException(
                "Some schedulers are attached with an optimizer that wasn't returned from `configure_optimizers`."
            )
        config.opt_idx = matches[0]
    if model.automatic_optimization and len(optimizers) > 1:
        raise _MisconfiguredRun(
            "Training with multiple optimizers is only supported with manual optimization. Set"
            " `self.automatic_optimization = False`, then access your optimizers in `training_step` with"
            " `opt1, opt2, ... = self.optimizers()`."
        )
    _check_scheduler_api(configs, model)
    return optimizers, configs


def _check_no_optimizer_idx(model: LightningModule) -> None:
    """``training_step(batch, batch_idx, optimizer_idx)`` is Lightning 1.x's multi-optimizer loop, removed in 2.0."""
    from torchbolt.utilities.signature_utils import is_param_in_hook_signature

    if is_param_in_hook_signature(model.training_step, "optimizer_idx", explicit=True):
        raise _MisconfiguredRun(
            "`training_step` takes an `optimizer_idx` argument, but the Trainer no longer loops over optimizers:"
            " Training with multiple optimizers is only supported with manual optimization. Remove the"
            " `optimizer_idx` argument from `training_step`, set `self.automatic_optimization = False` and access"
            " your optimizers in `training_step` with `opt1, opt2, ... = self.optimizers()`."
        )


_MANUAL_IGNORED_KEYS = ("reduce_on_plateau", "monitor", "strict")


def _configure_schedulers_manual(schedulers: Sequence[Any]) -> list[LRSchedulerConfig]:
    """Scheduler configs under manual optimization: recorded for ``lr_schedulers()`` and the LR monitor only.

    ``interval``, ``frequency`` and ``name`` are kept (``LearningRateMonitor`` reads them); the keys that only
    automatic stepping uses are dropped with a warning, since the user calls ``scheduler.step()``.
    """
    configs: list[LRSchedulerConfig] = []
    for scheduler in schedulers:
        if not isinstance(scheduler, Mapping):
            configs.append(LRSchedulerConfig(scheduler, reduce_on_plateau=_is_plateau(scheduler)))
            continue
        if "scheduler" not in scheduler:
            raise MisconfigurationException(
                'The lr scheduler dict must have the key "scheduler" with its item being an lr scheduler'
            )
        ignored = [k for k in scheduler if k in _MANUAL_IGNORED_KEYS]
        if ignored:
            rank_zero_warn(
                f"The lr scheduler dict contains the key(s) {ignored}, but the keys will be ignored."
                " You need to call `lr_scheduler.step()` manually in manual optimization.",
                category=RuntimeWarning,
            )
        extra = set(scheduler) - _SCHEDULER_KEYS - set(_MANUAL_IGNORED_KEYS)
        if extra:
            rank_zero_warn(
                f"Found unsupported keys in the lr scheduler dict: {_as_set(extra)}. They are ignored;"
                f" supported keys are: {sorted(_SCHEDULER_KEYS)}",
                category=RuntimeWarning,
            )
        kept = {k: v for k, v in scheduler.items() if k in _SCHEDULER_KEYS and k not in _MANUAL_IGNORED_KEYS}
        configs.append(LRSchedulerConfig(reduce_on_plateau=_is_plateau(kept["scheduler"]), **kept))
    return configs


def _check_scheduler_api(configs: Sequence[LRSchedulerConfig], model: LightningModule) -> None:
    """Every scheduler must be checkpointable; under automatic optimization the Trainer must know how to step it."""
    from torchbolt.utilities.parsing import is_overridden

    for config in configs:
        scheduler = config.scheduler
        name = type(scheduler).__name__
        if not (callable(getattr(scheduler, "state_dict", None))
                and callable(getattr(scheduler, "load_state_dict", None))):
            raise TypeError(
                f"The provided lr scheduler `{name}` is invalid: it has no `state_dict` and `load_state_dict`"
                " methods, so it could not be saved in or restored from checkpoints. Add both methods."
            )
        steppable = isinstance(scheduler, (torch.optim.lr_scheduler.LRScheduler,
                                           torch.optim.lr_scheduler.ReduceLROnPlateau))
        if model.automatic_optimization and not steppable and not is_overridden("lr_scheduler_step", model):
            raise MisconfigurationException(
                f"The provided lr scheduler `{name}` doesn't follow PyTorch's LRScheduler API, so the Trainer"
                " cannot step it. Override `LightningModule.lr_scheduler_step(scheduler, metric)` to step it"
                " yourself, or use manual optimization."
            )


def do_nothing_closure() -> None:
    """A closure for ``optimizer.step(closure)`` that does nothing (for steps whose loss was computed already)."""
    return None


# Lightning's names for the steps above (its tests and some user code call them directly)
_configure_optimizers = _parse_optim_conf
_configure_schedulers_automatic_opt = _configure_schedulers
_configure_schedulers_manual_opt = _configure_schedulers_manual
