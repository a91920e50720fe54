"""Hook dispatch: decide once per run which callbacks and module hooks are overridden.

The loops call ``hooks.callbacks(name, ...)`` and ``hooks.module(name, ...)``. Tables are built when
a run starts, so a hook nobody overrides costs one dictionary lookup and an empty loop per batch.
With a profiler, each entry is wrapped once in ``profiler.profile(action)``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial
from typing import TYPE_CHECKING, Any, Literal

from torchbolt.callbacks.callback import Callback
from torchbolt.core.datamodule import LightningDataModule
from torchbolt.core.hooks import ModelHooks
from torchbolt.core.module import LightningModule
from torchbolt.utilities.apply_func import batch_mover
from torchbolt.utilities.parsing import has_own_hook, is_overridden
from torchbolt.utilities.rank_zero import rank_zero_warn
from torchbolt.utilities.signature_utils import is_param_in_hook_signature

if TYPE_CHECKING:
    from torchbolt.profilers.profiler import Profiler
    from torchbolt.trainer.trainer import Trainer

# module hooks whose default does nothing (or returns its input): skipped unless overridden
_SKIPPABLE_MODULE_HOOKS = frozenset(
    name for name, fn in vars(ModelHooks).items() if callable(fn) and not name.startswith("_")
) - {"on_validation_model_zero_grad", "on_validation_model_eval", "on_test_model_eval", "on_predict_model_eval"}
_SKIPPABLE_MODULE_HOOKS |= {
    "on_before_batch_transfer", "on_after_batch_transfer", "setup", "teardown", "prepare_data",
    "on_save_checkpoint", "on_load_checkpoint", "on_exception",
}
_DATA_HOOKS = ("on_before_batch_transfer", "transfer_batch_to_device", "on_after_batch_transfer")
# hooks called for every training batch: whether anything listens is decided once per run (see `active`)
_BATCH_HOOKS = (
    "on_train_batch_start", "on_train_batch_end", "on_before_zero_grad", "on_before_backward", "on_after_backward",
    "on_before_optimizer_step", "on_validation_batch_start", "on_validation_batch_end", "on_test_batch_start",
    "on_test_batch_end", "on_predict_batch_start", "on_predict_batch_end",
)
_STEP_METHODS = ("training_step", "validation_step", "test_step", "predict_step")


def _steps_without_batch_idx(module: LightningModule) -> frozenset[str]:
    """The module's ``*_step`` methods that take no ``batch_idx`` (``def training_step(self, batch)``).

    The loops then call them without it, as Lightning does; a step with a ``batch_idx`` parameter, ``*args``
    or two or more positional parameters gets it.
    """
    names = []
    for name in _STEP_METHODS:
        fn = getattr(module, name, None)
        if fn is None:
            continue
        try:
            if not is_param_in_hook_signature(fn, "batch_idx", min_args=2):
                names.append(name)
        except TypeError:  # no inspectable signature: pass everything, as before
            pass
    return frozenset(names)


# module hooks whose default does not log (`optimizer.step(closure)`, `optimizer.zero_grad()`, the Trainer's
# clipping, `loss.backward()`): when the module keeps the default, the loops call it directly (no hook name to
# set), or skip it when it has nothing to do (clipping without `gradient_clip_val`)
_INLINABLE_MODULE_HOOKS = ("optimizer_step", "optimizer_zero_grad", "configure_gradient_clipping", "backward")


def _profiled(fn: Callable[..., Any], action: str, profiler: Profiler) -> Callable[..., Any]:
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with profiler.profile(action):
            return fn(*args, **kwargs)

    return wrapper


class HookDispatcher:
    """Calls callback and module hooks in Lightning's order, setting ``_current_fx_name`` for ``self.log``."""

    def __init__(
        self,
        trainer: Trainer,
        module: LightningModule,
        callbacks: Sequence[Callback],
        datamodule: LightningDataModule | None,
        profiler: Profiler | None,
    ) -> None:
        self._trainer = trainer
        self._module = module
        # the module's __dict__, written directly: nn.Module.__setattr__ is too slow for a per-hook store
        self._module_dict = module.__dict__
        self._callbacks = list(callbacks)
        self._datamodule = datamodule
        self._profiler = profiler
        self._cb_table: dict[str, tuple[Callable[..., Any], ...]] = {}
        self._module_table: dict[str, Callable[..., Any] | None] = {}
        self._both_table: dict[str, tuple[tuple[Callable[..., Any], ...], Callable[..., Any] | None]] = {}
        self._overrides: dict[str, bool] = {}
        self._data_hooks: dict[str, Callable[..., Any] | None] = {name: self._resolve_data_hook(name) for name in _DATA_HOOKS}
        self._before_transfer, self._transfer, self._after_transfer = (self._data_hooks[n] for n in _DATA_HOOKS)
        strategy = trainer.strategy
        precision = strategy.precision_plugin
        # shortcuts for the plain case (one device, fp32, no profiler timing the strategy's methods): the
        # strategy and precision add nothing around the transfer, `training_step` or `backward`, so the
        # loops call the module directly
        unprofiled = profiler is None
        self._default_batch_to_device = unprofiled and _is_base(strategy, "batch_to_device", "strategy")
        self._precision_converts_input = not _is_base(precision, "convert_input", "precision")
        #: a batch goes to the device with `move_data_to_device` and nothing else (no hook, no precision cast)
        self._plain_transfer = (self._default_batch_to_device and not self._precision_converts_input
                                and all(fn is None for fn in self._data_hooks.values()))
        #: `*_step` methods the strategy only forwards to the module, with no precision context around them
        self.plain_steps: frozenset[str] = frozenset(
            name for name in _STEP_METHODS if unprofiled and _is_base(strategy, name, "strategy")
            and _is_base(strategy, "_call_step", "strategy") and _is_base(precision, "forward_context", "precision")
        )
        self._steps_without_batch_idx = _steps_without_batch_idx(module)
        self.plain_no_backward_sync: bool = _is_base(strategy, "no_backward_sync", "strategy")
        self.plain_backward: bool = unprofiled and _is_base(strategy, "backward", "strategy") and all(
            _is_base(precision, name, "precision") for name in ("pre_backward", "backward", "post_backward"))
        #: per-batch hooks that some callback or the module overrides; the loops skip the others
        #: without a call (a set lookup instead of two function calls per hook and batch)
        self.active: frozenset[str] = frozenset(
            name for name in _BATCH_HOOKS if self.has_callbacks(name) or self._module_fn(name) is not None
        )
        #: module hooks whose default method the loops may call directly, without the dispatcher (not
        #: overridden, no profiler to record them)
        self.inline_defaults: frozenset[str] = frozenset() if profiler is not None else frozenset(
            name for name in _INLINABLE_MODULE_HOOKS if not self.module_overrides(name)
        )
        clip = trainer.gradient_clip_val
        #: an optimizer step is exactly `optimizer.step(closure)`: `optimizer_step` is the default, the
        #: strategy and precision only forward to the optimizer, and nothing runs between the closure and
        #: the update (no `on_before_optimizer_step`, no clipping)
        self.plain_optimizer_step: bool = (
            {"optimizer_step", "optimizer_zero_grad", "configure_gradient_clipping"} <= self.inline_defaults
            and "on_before_optimizer_step" not in self.active
            and not (clip is not None and clip > 0) and _is_base(strategy, "optimizer_step", "strategy")
            and _is_base(precision, "optimizer_step", "precision")
        )

    # ------------------------------------------------------------------ table building
    def _callback_fns(self, name: str, monitoring: bool | None = None) -> tuple[Callable[..., Any], ...]:
        fns = []
        for cb in self._callbacks:
            if type(cb).__module__ == "unittest.mock":
                # a `Mock(spec=Callback)` records every hook call, as Lightning makes them; it has none of
                # a Callback's own attributes to ask (it gets the epoch-end call with the non-monitoring ones)
                if monitoring is not True:
                    fns.append(getattr(cb, name))
                continue
            if monitoring is not None and cb._monitors_epoch_end_metrics != monitoring:
                continue
            if not has_own_hook(name, cb, Callback) or name in cb._idle_hooks():
                continue
            fn = getattr(cb, name)
            if self._profiler is not None:
                fn = _profiled(fn, f"[Callback]{cb.state_key}.{name}", self._profiler)
            fns.append(fn)
        return tuple(fns)

    def _module_fn(self, name: str) -> Callable[..., Any] | None:
        module = self._module
        if name in _SKIPPABLE_MODULE_HOOKS and not has_own_hook(name, module, LightningModule):
            return None
        fn = getattr(module, name)
        if self._profiler is not None:
            fn = _profiled(fn, f"[LightningModule]{type(module).__name__}.{name}", self._profiler)
        return fn  # type: ignore[no-any-return]

    def _resolve_data_hook(self, name: str) -> Callable[..., Any] | None:
        """The datamodule's batch hook when it overrides it, else the module's; ``None`` for the default."""
        dm = self._datamodule
        # whose implementation wins is decided by real overrides (a wrapper that records calls to the inherited
        # hook is not one); the module's hook is then called whenever something may observe it
        dm_overrides = dm is not None and is_overridden(name, dm, LightningDataModule)
        module_overrides = is_overridden(name, self._module, LightningModule)
        if dm_overrides and module_overrides:
            rank_zero_warn(
                f"You have overridden `{name}` in both `LightningModule` and `LightningDataModule`."
                " It will use the implementation from `LightningDataModule` instance."
            )
        if dm_overrides:
            return getattr(dm, name)  # type: ignore[no-any-return]
        if has_own_hook(name, self._module, LightningModule):
            return getattr(self._module, name)  # type: ignore[no-any-return]
        return None

    # ------------------------------------------------------------------ calls
    def callbacks(self, name: str, *args: Any, monitoring: bool | None = None, **kwargs: Any) -> None:
        """Call ``name`` on every callback that overrides it (optionally only (non-)monitoring ones)."""
        if monitoring is None:
            fns = self._cb_table.get(name)
            if fns is None:
                fns = self._cb_table[name] = self._callback_fns(name)
        else:
            key = f"{name}:{monitoring}"
            fns = self._cb_table.get(key)
            if fns is None:
                fns = self._cb_table[key] = self._callback_fns(name, monitoring)
        if not fns:
            return
        d = self._module_dict
        prev = d.get("_current_fx_name")
        trainer, module = self._trainer, self._module
        for fn in fns:
            d["_current_fx_name"] = name
            fn(trainer, module, *args, **kwargs)
        d["_current_fx_name"] = prev

    def has_callbacks(self, name: str) -> bool:
        fns = self._cb_table.get(name)
        if fns is None:
            fns = self._cb_table[name] = self._callback_fns(name)
        return bool(fns)

    def module(self, name: str, *args: Any, **kwargs: Any) -> Any:
        """Call the module's ``name`` hook (skipped, returning ``None``, when it is a default no-op)."""
        try:
            fn = self._module_table[name]
        except KeyError:
            fn = self._module_table[name] = self._module_fn(name)
        if fn is None:
            return None
        d = self._module_dict
        prev = d.get("_current_fx_name")
        d["_current_fx_name"] = name
        try:
            return fn(*args, **kwargs)
        finally:
            d["_current_fx_name"] = prev

    def module_overrides(self, name: str) -> bool:
        """Whether the module's class overrides ``name`` (cached)."""
        result = self._overrides.get(name)
        if result is None:
            result = self._overrides[name] = has_own_hook(name, self._module, LightningModule)
        return result

    def datamodule(self, name: str, *args: Any, **kwargs: Any) -> Any:
        dm = self._datamodule
        if dm is None:
            return None
        fn = getattr(dm, name, None)
        if fn is None:
            return None
        if self._profiler is not None:
            with self._profiler.profile(f"[LightningDataModule]{type(dm).__name__}.{name}"):
                return fn(*args, **kwargs)
        return fn(*args, **kwargs)

    def run_as(self, name: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Call ``fn`` with ``name`` as the module's current hook (what ``self.log`` checks and records).

        The loops call ``*_step`` methods and ``backward`` through this, so the dispatcher stays the one
        writer of the hook name.
        """
        d = self._module_dict
        prev = d.get("_current_fx_name")
        d["_current_fx_name"] = name
        if name in self._steps_without_batch_idx:
            args = args[:1] + args[2:]  # `(batch, batch_idx, *rest)` -> `(batch, *rest)`
        try:
            return fn(*args, **kwargs)
        finally:
            d["_current_fx_name"] = prev

    def clear_current_hook(self) -> None:
        """No hook is running any more (the run ended)."""
        self._module_dict["_current_fx_name"] = None

    def both(self, name: str, *args: Any) -> None:
        """Callbacks, then the module (what :meth:`callbacks` and :meth:`module` do, in one call: the loops
        call this for every batch)."""
        try:
            fns, module_fn = self._both_table[name]
        except KeyError:
            if name not in self._cb_table:
                self._cb_table[name] = self._callback_fns(name)
            if name not in self._module_table:
                self._module_table[name] = self._module_fn(name)
            fns, module_fn = self._both_table[name] = self._cb_table[name], self._module_table[name]
        if not fns and module_fn is None:
            return
        d = self._module_dict
        prev = d.get("_current_fx_name")
        trainer, module = self._trainer, self._module
        try:
            for fn in fns:
                d["_current_fx_name"] = name
                fn(trainer, module, *args)
            if module_fn is not None:
                d["_current_fx_name"] = name
                module_fn(*args)
        finally:
            d["_current_fx_name"] = prev

    def batch_transfer(self, dataloader_idx: int) -> Callable[[Any], Any]:
        """:meth:`transfer_batch` for the batches of loader ``dataloader_idx``, as a function of the batch,
        resolved when a loop starts on the loader: in a plain run (no batch hook, no precision cast, the
        strategy's own transfer) it is the device's batch mover, one call per batch."""
        if self._plain_transfer:  # the strategy's device is final once a loop runs
            return batch_mover(self._trainer.strategy.root_device)
        return partial(self.transfer_batch, dataloader_idx=dataloader_idx)

    def transfer_batch(self, batch: Any, dataloader_idx: int) -> Any:
        """``precision.convert_input`` -> ``on_before_batch_transfer`` -> ``transfer_batch_to_device`` ->
        ``on_after_batch_transfer`` (Lightning's order: the precision casts the batch before the hooks see it)."""
        strategy = self._trainer.strategy
        if self._precision_converts_input:
            batch = strategy.precision_plugin.convert_input(batch)
        before, transfer, after = self._before_transfer, self._transfer, self._after_transfer
        if before is None and transfer is None and after is None:
            return strategy.batch_to_device(batch, dataloader_idx=dataloader_idx)
        d = self._module_dict
        prev = d.get("_current_fx_name")
        if before is not None:
            d["_current_fx_name"] = "on_before_batch_transfer"
            batch = before(batch, dataloader_idx)
        if transfer is not None:
            d["_current_fx_name"] = "transfer_batch_to_device"
            batch = transfer(batch, strategy.root_device, dataloader_idx)
        else:
            batch = strategy.batch_to_device(batch, dataloader_idx=dataloader_idx)
        if after is not None:
            d["_current_fx_name"] = "on_after_batch_transfer"
            batch = after(batch, dataloader_idx)
        d["_current_fx_name"] = prev
        return batch


def _is_base(obj: Any, name: str, kind: Literal["strategy", "precision"]) -> bool:
    """Whether ``obj.name`` is the base ``Strategy``'s / ``Precision``'s own method (not overridden)."""
    from torchbolt.plugins.precision.precision import Precision
    from torchbolt.strategies.strategy import Strategy

    base = Strategy if kind == "strategy" else Precision
    return getattr(type(obj), name, None) is getattr(base, name) and name not in getattr(obj, "__dict__", {})
