"""Optimization of one training batch: automatic (closure + accumulation) and manual, and LR schedulers.

Automatic optimization on a step batch::

    module.optimizer_step(epoch, batch_idx, optimizer, closure)      # user-overridable
      -> optimizer.step(closure)                                     # LightningOptimizer
        -> strategy.optimizer_step -> precision.optimizer_step
          -> closure(): training_step, [zero_grad], backward          (see _Closure)
          -> on_before_optimizer_step, configure_gradient_clipping    (gradients final and unscaled)
          -> the optimizer update
    global_step += 1

On an accumulation batch only the closure runs, with gradient synchronization off.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from functools import partial
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import Tensor
from torch.optim import Optimizer
from torch.optim.optimizer import _global_optimizer_pre_hooks as _STEP_PRE_HOOKS

from torchbolt.core.optimizer import LightningOptimizer, LRSchedulerConfig
from torchbolt.strategies.strategy import Strategy
from torchbolt.trainer.dataloader_iter import WithoutBatchIdx
from torchbolt.utilities.exceptions import MisconfigurationException
from torchbolt.utilities.rank_zero import WarningCache, rank_zero_warn
from torchbolt.utilities.signature_utils import is_param_in_hook_signature

if TYPE_CHECKING:
    from torchbolt.trainer.context import RunContext
    from torchbolt.trainer.hooks import HookDispatcher
    from torchbolt.trainer.states import SchedulerInterval

_warning_cache = WarningCache()


def _takes_batch_idx(module: Any) -> bool:
    """Whether ``training_step`` receives ``batch_idx``: it is optional, passed when the method names it or
    has room for a second positional argument (``training_step(self, batch)`` gets the batch only)."""
    return is_param_in_hook_signature(module.training_step, "batch_idx", min_args=2)


def _parse_training_step_output(output: Any, normalize: int) -> tuple[Tensor | None, dict[str, Any]]:
    """Split what ``training_step`` returned into the (normalized) loss and the other entries.

    Raises:
        MisconfigurationException: for a dict without ``"loss"``, a non-scalar loss, or another type.
    """
    if output is None:
        _warning_cache.warn(
            "`training_step` returned `None`. If this was on purpose, ignore this warning..."
        )
        return None, {}
    if isinstance(output, Tensor):  # checked first: `isinstance(x, Mapping)` is a slow ABC check
        loss, extra = output, {}
    elif isinstance(output, Mapping):
        if output.get("loss") is None:  # as in Lightning, {"loss": None} is an error, not a skipped batch
            got = "'loss': None" if "loss" in output else f"keys {sorted(map(str, output))}"
            raise MisconfigurationException(
                "In automatic optimization, when `training_step` returns a dict, the 'loss' key needs to be"
                f" present; got {got}. Return `{{'loss': loss, ...}}`, the loss tensor, or `None` to skip the batch."
            )
        loss = output["loss"]
        extra = {k: (v.detach() if isinstance(v, Tensor) else v) for k, v in output.items() if k != "loss"}
    else:
        raise MisconfigurationException(
            f"In automatic optimization, `training_step` must return a Tensor, a dict with a 'loss' key, or None"
            f" (to skip the batch); got {type(output).__name__}."
        )
    if loss is None:
        return None, extra
    if not isinstance(loss, Tensor):
        raise MisconfigurationException(
            f"`training_step` returned a loss of type {type(loss).__name__}; it must be a scalar tensor."
        )
    if loss.numel() != 1:
        raise MisconfigurationException(
            f"`training_step` returned a loss of shape {tuple(loss.shape)}; it must be a scalar tensor."
            " Reduce it first, e.g. `return loss.mean()`."
        )
    if not loss.requires_grad:
        raise MisconfigurationException(
            "`training_step` returned a loss that does not require grad: it was detached or computed under"
            " `torch.no_grad()`, so backward would fail. Return the loss built from the model's output."
        )
    if normalize > 1:
        loss = loss / normalize
    return loss, extra


class _Closure:
    """Computes loss and gradients of one batch; the optimizer calls it (possibly several times, e.g. LBFGS).

    One closure serves a whole run: :meth:`AutomaticOptimization.run` points it at each batch (``begin``).
    """

    __slots__ = ("_batch", "_batch_idx", "_graph", "_loop", "_optimizer", "_zero_grad", "called", "loss", "outputs")
    #: the "`training_step` returned `None`" warning is shown once; ``clear()`` shows it again
    warning_cache: ClassVar[WarningCache] = _warning_cache

    def __init__(self, loop: AutomaticOptimization) -> None:
        self._loop = loop
        self.begin(None, 0, _NO_OPTIMIZER, False)
        self._graph: Tensor | None = None
        #: the loss of the last call (detached; ``None`` when ``training_step`` returned ``None``)
        self.loss: Tensor | None = None
        #: what ``on_train_batch_end`` receives: ``{"loss": ..., **extra}``, ``{}`` when the batch was skipped
        self.outputs: dict[str, Any] = {}

    def __reduce__(self) -> tuple[Any, ...]:
        # a pickled Trainer (spawned processes receive one) carries a fresh closure, not the last batch
        return _Closure, (self._loop,)

    def begin(self, batch: Any, batch_idx: int, optimizer: Optimizer, zero_grad: bool) -> None:
        """Point the closure at ``batch``: ``called`` is false until it runs (``loss`` and ``outputs`` keep the
        previous batch's until then)."""
        self._batch = batch
        self._batch_idx = batch_idx
        self._optimizer = optimizer
        self._zero_grad = zero_grad
        self.called = False

    def __call__(self) -> Tensor | None:
        loop = self._loop
        ctx = loop.ctx
        hooks = ctx.hooks
        output = hooks.run_as("training_step", loop.training_step, self._batch, self._batch_idx)
        accumulate = ctx.config.accumulate_grad_batches
        loss: Tensor | None
        extra: Mapping[str, Any]
        if isinstance(output, Tensor) and output.requires_grad and output.numel() == 1:
            # the common case, fully checked: no call into the general parser
            loss = output if accumulate == 1 else output / accumulate
            extra = _NO_EXTRA
        else:
            loss, extra = _parse_training_step_output(output, accumulate)
        if loop.plain_closure:
            # no hook listens around zero_grad/backward and both are the defaults: what they amount to
            if self._zero_grad:
                self._optimizer.zero_grad()
            if loss is not None:
                loss.backward()  # type: ignore[no-untyped-call]
                # what a hand-written loop's `loss` variable does: the graph (its buffers already freed by
                # backward) lives until the next batch's forward has run, so that forward reuses the
                # parameters' gradient accumulators instead of building new ones
                self._graph = loss
        else:
            self._zero_grad_and_backward(loss)
        if loss is None:
            self.outputs = {}
        else:
            loss = loss.detach()
            self.outputs = {"loss": loss, **extra} if extra else {"loss": loss}
        self.loss = loss
        self.called = True
        return loss

    def release(self) -> None:
        """Drop the last batch's graph (at the end of the training epochs)."""
        self._graph = None

    def _zero_grad_and_backward(self, loss: Tensor | None) -> None:
        """``optimizer_zero_grad`` (at a window's start) and ``backward``, with the hooks around them."""
        loop = self._loop
        ctx = loop.ctx
        hooks = ctx.hooks
        active = hooks.active
        if self._zero_grad:
            optimizer = self._optimizer
            if "on_before_zero_grad" in active:
                hooks.callbacks("on_before_zero_grad", optimizer)
                hooks.module("on_before_zero_grad", optimizer)
            if loop.zero_grad is None:
                optimizer.zero_grad()  # what the default `optimizer_zero_grad` hook does
            else:
                loop.zero_grad(ctx.progress.current_epoch, self._batch_idx, optimizer)
        if loss is not None:
            if "on_before_backward" in active:
                hooks.callbacks("on_before_backward", loss)
                hooks.module("on_before_backward", loss)
            if loop.backward is Tensor.backward:
                loss.backward()  # type: ignore[no-untyped-call]
                self._graph = loss  # torch's own backward retains no buffers: kept as in the plain path
            elif loop.backward is not None:
                loop.backward(loss)
            else:
                hooks.run_as("backward", ctx.strategy.backward, loss, self._optimizer)
            if "on_after_backward" in active:
                hooks.callbacks("on_after_backward")
                hooks.module("on_after_backward")


class AutomaticOptimization:
    """Runs one batch under automatic optimization (one optimizer)."""

    def __init__(self, ctx: RunContext) -> None:
        self.ctx = ctx
        clip = ctx.config.gradient_clip_val
        self._clip = clip is not None and clip > 0
        # the step plan: each piece of a training batch as one callable, decided once per run
        hooks, module, strategy = ctx.hooks, ctx.module, ctx.strategy
        #: ``training_step``: the module's own when the strategy would only forward to it
        self.training_step = module.training_step if "training_step" in hooks.plain_steps else strategy.training_step
        if not _takes_batch_idx(module):
            # `training_step(self, batch)`: called with the batch alone (a class, not a closure: the loop pickles)
            self.training_step = WithoutBatchIdx(self.training_step)
        #: ``optimizer_zero_grad(epoch, batch_idx, optimizer)``: the module's hook (``None``: the default, which
        #: is ``optimizer.zero_grad()``, called as such) and ``optimizer_step(epoch, batch_idx, optimizer,
        #: closure)``
        self.zero_grad: Callable[..., Any] | None = (
            None if "optimizer_zero_grad" in hooks.inline_defaults else _bound_hook(hooks, module, "optimizer_zero_grad"))
        self.optimizer_step = _bound_hook(hooks, module, "optimizer_step")
        #: ``backward(loss)``: the module's hook when the strategy and precision plug-in add nothing to it
        #: (``None``: the strategy's ``backward(loss, optimizer)`` runs, e.g. with gradient scaling or sharding);
        #: the default hook under a Trainer is ``loss.backward()``, called as ``Tensor.backward(loss)``
        self.backward: Callable[[Tensor], Any] | None = None
        if hooks.plain_backward:
            inline = "backward" in hooks.inline_defaults and module._fabric is None
            self.backward = Tensor.backward if inline else _bound_hook(hooks, module, "backward")
        #: the closure is `training_step`, `optimizer.zero_grad()` and `loss.backward()`, nothing else
        self.plain_closure = (self.zero_grad is None and self.backward is Tensor.backward
                              and not {"on_before_zero_grad", "on_before_backward", "on_after_backward"} & hooks.active)
        #: the closure of every batch (pointed at each one in turn: no object built per step)
        self._closure = _Closure(self)

    def release(self) -> None:
        """Drop what the closure keeps of the last batch (its graph): the training epochs are over."""
        self._closure.release()

    def on_gradients_ready(self, optimizer: Optimizer) -> None:
        """``on_before_optimizer_step`` then clipping: called by the precision plug-in once the gradients
        of a step batch are final (and unscaled)."""
        ctx = self.ctx
        hooks = ctx.hooks
        if "on_before_optimizer_step" in hooks.active:
            hooks.callbacks("on_before_optimizer_step", optimizer)
            hooks.module("on_before_optimizer_step", optimizer)
        if self._clip or "configure_gradient_clipping" not in hooks.inline_defaults:
            hooks.module("configure_gradient_clipping", optimizer,
                         gradient_clip_val=ctx.config.gradient_clip_val,
                         gradient_clip_algorithm=ctx.config.gradient_clip_algorithm)

    def run(self, batch: Any, batch_idx: int, is_step: bool, window_start: bool) -> dict[str, Any]:
        """Process ``batch``; step the optimizer when ``is_step``. Returns the outputs for
        ``on_train_batch_end`` (``{"loss": ..., **extra}``, or ``{}`` when the batch was skipped)."""
        ctx = self.ctx
        lightning_optimizers = ctx.strategy._lightning_optimizers  # read per step: a callback may replace them
        closure = self._closure
        if not lightning_optimizers:
            # `configure_optimizers` returned None: forward and backward only; the step still counts (as in
            # Lightning, which steps a stand-in optimizer), so `max_steps` ends the fit
            closure.begin(batch, batch_idx, _NO_OPTIMIZER, window_start)
            with ctx.strategy.no_backward_sync(enabled=not is_step):
                closure()
            if is_step:
                ctx.progress.optimizer_stepped()
            return closure.outputs
        lightning_optimizer = lightning_optimizers[0]
        optimizer = lightning_optimizer._optimizer
        closure.begin(batch, batch_idx, optimizer, window_start)
        hooks = ctx.hooks
        if not is_step:
            if hooks.plain_no_backward_sync:
                closure()  # the base strategy has no gradient synchronization to skip
            else:
                with ctx.strategy.no_backward_sync(enabled=True):
                    closure()
            return closure.outputs
        if hooks.plain_optimizer_step:
            # all that `LightningModule.optimizer_step` -> `LightningOptimizer.step` -> the precision's
            # `optimizer_step` amount to when none of them is customized and no hook runs before the update
            if _calls_closure_first(optimizer):
                # what `step(closure)` does first, done here: forward and backward then run outside the
                # optimizer's profiling and compile-disabling wrappers (~1% of a small model's step)
                closure()
                optimizer.step()
            else:
                optimizer.step(closure=closure)  # type: ignore[arg-type]
        else:
            self.optimizer_step(ctx.progress.current_epoch, batch_idx, lightning_optimizer, closure)
        if not closure.called:
            raise MisconfigurationException(
                "The closure hasn't been executed. HINT: did you call `optimizer_closure()` in your"
                " `optimizer_step` hook? It could also happen because the `optimizer.step(optimizer_closure)`"
                " call did not execute it internally."
            )
        ctx.progress.optimizer_stepped()
        return closure.outputs


# torch's optimizers whose `step(closure)` starts with `with torch.enable_grad(): loss = closure()` and then
# updates the parameters: for them, calling the closure and then `step()` is the same computation, in the same
# order (LBFGS, which calls the closure several times, is not one of them)
_CLOSURE_FIRST_OPTIMIZERS = frozenset({
    torch.optim.SGD, torch.optim.Adam, torch.optim.AdamW, torch.optim.Adamax, torch.optim.Adagrad,
    torch.optim.Adadelta, torch.optim.RMSprop, torch.optim.Rprop, torch.optim.NAdam, torch.optim.RAdam,
    torch.optim.ASGD,
})


def _calls_closure_first(optimizer: Optimizer) -> bool:
    """Whether ``optimizer.step(closure)`` can be run as ``closure(); optimizer.step()``: a torch optimizer
    listed above (not a subclass, which may override ``step``) whose ``step`` is torch's own (``hooked``: the
    profiling wrapper torch puts on it, not a mock or a patch), no step pre-hook (it would run before the
    closure), ``step`` not replaced on the instance (a learning-rate scheduler's call counter excepted), and
    gradients enabled (``step`` would enable them for the closure)."""
    cls = type(optimizer)
    if (cls not in _CLOSURE_FIRST_OPTIMIZERS or getattr(cls.step, "hooked", None) is not True
            or optimizer._optimizer_step_pre_hooks or _STEP_PRE_HOOKS):
        return False
    step = optimizer.__dict__.get("step")
    if step is not None and getattr(step, "_wrapped_by_lr_sched", None) is not True:
        return False
    return torch.is_grad_enabled()


def _bound_hook(hooks: HookDispatcher, module: Any, name: str) -> Callable[..., Any]:
    """The module's hook ``name`` as one callable: its own (default) method, called directly, when nobody
    overrides it and no profiler records it (the defaults do not log, so they need no hook name); else the
    dispatcher's call (hook name set, profiled)."""
    if name in hooks.inline_defaults:
        return getattr(module, name)  # type: ignore[no-any-return]
    return partial(hooks.module, name)


class _NoOptimizer(Optimizer):
    """Stands in for the optimizer when ``configure_optimizers`` returned ``None``."""

    def __init__(self) -> None:
        self.param_groups = []
        self.state = {}  # type: ignore[assignment]

    def zero_grad(self, set_to_none: bool = True) -> None:
        pass

    def step(self, closure: Any = None) -> None:  # type: ignore[override]
        pass


_NO_OPTIMIZER = _NoOptimizer()
#: the extra outputs of a ``training_step`` that returned the bare loss (shared: never written to)
_NO_EXTRA: Mapping[str, Any] = MappingProxyType({})


class ManualOptimization:
    """Runs one batch under manual optimization: the user calls ``optimizer.step()`` themselves."""

    def __init__(self, ctx: RunContext) -> None:
        self.ctx = ctx
        self._takes_batch_idx = _takes_batch_idx(ctx.module)
        #: ``training_step(batch, batch_idx)`` in place of the strategy's (``None``: the strategy's, looked up per call)
        self.training_step: Callable[..., Any] | None = None

    def on_gradients_ready(self, optimizer: Optimizer) -> None:
        hooks = self.ctx.hooks
        hooks.callbacks("on_before_optimizer_step", optimizer)
        hooks.module("on_before_optimizer_step", optimizer)

    def run(self, batch: Any, batch_idx: int) -> dict[str, Any]:
        ctx = self.ctx
        step = self.training_step or ctx.strategy.training_step
        args = (batch, batch_idx) if self._takes_batch_idx else (batch,)
        output = ctx.hooks.run_as("training_step", step, *args)
        if output is None:
            return {}
        if isinstance(output, Tensor):
            return {"loss": output.detach()}
        if isinstance(output, Mapping):
            return {k: (v.detach() if isinstance(v, Tensor) else v) for k, v in output.items()}
        raise MisconfigurationException(
            f"In manual optimization, `training_step` must return a Tensor, a dict, or None; got"
            f" {type(output).__name__}."
        )


def bind_optimizers(ctx: RunContext, automatic: bool, on_gradients_ready: Any) -> None:
    """Route every ``LightningOptimizer.step`` through the strategy, with the run's hooks."""
    strategy = ctx.strategy
    if getattr(type(strategy), "optimizer_step", None) is Strategy.optimizer_step:
        # the base strategy only forwards to its precision plug-in: call that directly (two calls less per step)
        precision_step = strategy.precision_plugin.optimizer_step

        def step_fn(optimizer: Optimizer, closure: Any, kwargs: dict[str, Any]) -> Any:
            return precision_step(optimizer, closure, on_gradients_ready, **kwargs)
    else:

        def step_fn(optimizer: Optimizer, closure: Any, kwargs: dict[str, Any]) -> Any:
            return strategy.optimizer_step(optimizer, closure, on_gradients_ready, **kwargs)

    module = ctx.module
    for opt in strategy.lightning_optimizers:
        opt.bind(step_fn, None if automatic else ctx.progress.optimizer_stepped, module.toggle_optimizer,
                 module.untoggle_optimizer)


def update_lr_schedulers(ctx: RunContext, interval: SchedulerInterval, update_plateau: bool, batch_idx: int) -> None:
    """Step the schedulers of ``interval`` ("step"/"epoch") that are due; plateau ones get their metric.

    Raises:
        MisconfigurationException: when a strict plateau scheduler's monitor was never logged.
    """
    configs: list[LRSchedulerConfig] = ctx.strategy.lr_scheduler_configs
    if not configs or not ctx.module.automatic_optimization:
        return
    callback_metrics = ctx.metrics.store.callback
    for config in configs:
        if update_plateau != config.reduce_on_plateau or config.interval != interval:
            continue
        current_idx = (batch_idx if interval == "step" else ctx.progress.current_epoch) + 1
        if current_idx % config.frequency != 0:
            continue
        monitor_val = None
        if config.reduce_on_plateau:
            assert config.monitor is not None
            monitor_val = callback_metrics.get(config.monitor)
            if monitor_val is None:
                if config.strict:
                    raise MisconfigurationException(
                        f"ReduceLROnPlateau conditioned on metric {config.monitor!r} which is not available."
                        f" Available metrics are: {sorted(callback_metrics)}. Condition can be set using"
                        " the `monitor` key in the lr scheduler dict"
                    )
                rank_zero_warn(
                    f"ReduceLROnPlateau conditioned on metric {config.monitor!r} which is not available but strict"
                    " is set to `False`. Skipping learning rate update.",
                    category=RuntimeWarning,
                )
                continue
        ctx.hooks.module("lr_scheduler_step", config.scheduler, monitor_val)


__all__ = ["AutomaticOptimization", "LightningOptimizer", "ManualOptimization", "bind_optimizers",
           "update_lr_schedulers"]
