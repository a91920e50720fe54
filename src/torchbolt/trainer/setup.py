"""What the ``Trainer`` resolves once: torch flags, plug-ins, the profiler, the
callback and logger lists; and the checks a model must pass before a run starts.

Everything here runs at construction or at the start of a run, never per batch.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import torch

from torchbolt.callbacks.callback import Callback
from torchbolt.callbacks.checkpoint import Checkpoint
from torchbolt.callbacks.model_summary import ModelSummary
from torchbolt.callbacks.progress.progress_bar import ProgressBar
from torchbolt.callbacks.progress.tqdm_progress import TQDMProgressBar
from torchbolt.callbacks.timer import Timer
from torchbolt.core.module import LightningModule
from torchbolt.loggers.logger import DummyLogger, Logger
from torchbolt.trainer.eval_loop import check_eval_step
from torchbolt.trainer.legacy import check_removed_hooks
from torchbolt.trainer.states import TrainerFn
from torchbolt.utilities.exceptions import MisconfigurationException
from torchbolt.utilities.parsing import is_overridden
from torchbolt.utilities.rank_zero import PossibleUserWarning, rank_zero_info, rank_zero_warn

if TYPE_CHECKING:
    from torchbolt.trainer.config import TrainerConfig
    from torchbolt.trainer.data import DataSource


# ---------------------------------------------------------------------- construction
def set_torch_flags(config: TrainerConfig) -> None:
    """Apply ``deterministic`` and ``benchmark`` to torch's global switches."""
    deterministic = config.deterministic
    if deterministic is not None and deterministic is not False:
        torch.use_deterministic_algorithms(True, warn_only=deterministic == "warn")
        # cuBLAS needs a fixed workspace to be deterministic (read when the first cuBLAS handle is made)
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.backends.cudnn.deterministic = True
    elif deterministic is False:
        torch.use_deterministic_algorithms(False)
    if config.benchmark is not None:
        torch.backends.cudnn.benchmark = config.benchmark
    elif deterministic:
        torch.backends.cudnn.benchmark = False


def resolve_plugins(args: dict[str, Any], config: TrainerConfig, legacy: dict[str, Any]) -> Any:
    """Accelerator, strategy, precision and cluster environment from the Trainer's arguments."""
    from torchbolt.trainer.resolve import resolve_plugins as _resolve

    return _resolve(
        accelerator=args["accelerator"], strategy=args["strategy"], devices=args["devices"],
        num_nodes=args["num_nodes"], precision=config.precision, plugins=args["plugins"],
        sync_batchnorm=config.sync_batchnorm, legacy=legacy,
    )


def resolve_profiler(profiler: Any, root_dir: str) -> Any:
    from torchbolt.profilers import resolve_profiler as _resolve

    return _resolve(profiler, root_dir)


def is_active_profiler(profiler: Any) -> bool:
    """Whether ``profiler`` records anything (the pass-through profiler does not)."""
    return profiler is not None and not getattr(profiler, "_passthrough", False)


def build_callbacks(config: TrainerConfig, callbacks: list[Callback] | Callback | None) -> list[Callback]:
    """The user's callbacks, checked, plus the defaults the flags ask for (progress bar, model summary,
    ``ModelCheckpoint``, ``Timer`` for ``max_time``), in the order they run."""
    items = _user_callbacks(callbacks)
    from torchbolt.trainer.external_callbacks import load_external_callbacks

    items.extend(load_external_callbacks())
    check_unique_state_keys(items)
    _add_progress_bar(config, items)
    if config.enable_model_summary and not any(isinstance(cb, ModelSummary) for cb in items):
        items.append(_default_model_summary(items))
    _add_checkpoint(config, items)
    if config.max_time is not None:
        if any(isinstance(cb, Timer) for cb in items):
            rank_zero_info("Ignoring `Trainer(max_time=...)`, callbacks list already contains a Timer.")
        else:
            items.append(Timer(duration=config.max_time, interval="step"))
    return reorder_callbacks(items)


def check_unique_state_keys(callbacks: list[Callback]) -> None:
    """Stateful callbacks (those that override ``state_dict``) need distinct ``state_key``s.

    A checkpoint stores each callback's state under its key: two with the same key would overwrite each
    other's state, which would then be missing on resume.

    Raises:
        RuntimeError: for the second stateful callback with an already used key.
    """
    seen: set[str] = set()
    for cb in callbacks:
        if not is_overridden("state_dict", cb, Callback):
            continue
        key = cb.state_key
        if key in seen:
            name = type(cb).__name__
            raise RuntimeError(
                f"Found more than one stateful callback of type `{name}` with the state key {key!r}: their states"
                " would overwrite each other in checkpoints. Give each instance different arguments (its"
                f" `state_key` is built from them), or see `{name}`'s documentation for settings that can be"
                " checkpointed together. HINT: The `callback.state_key` must be unique among all callbacks in the"
                " Trainer."
            )
        seen.add(key)


def _default_model_summary(items: list[Callback]) -> ModelSummary:
    """A rich table next to a rich progress bar (as Lightning does), the plain text table otherwise."""
    from torchbolt.callbacks.progress.rich_progress import RichProgressBar
    from torchbolt.callbacks.rich_model_summary import RichModelSummary

    if any(isinstance(cb, RichProgressBar) for cb in items):
        return RichModelSummary()
    return ModelSummary()


def _user_callbacks(callbacks: list[Callback] | Callback | None) -> list[Callback]:
    """``Trainer(callbacks=...)`` as a new list, every item checked to be a ``Callback``.

    Raises:
        MisconfigurationException: for a value that is neither a callback nor an iterable, or a non-callback item.
    """
    if callbacks is None:
        items: list[Callback] = []
    elif isinstance(callbacks, Callback):
        items = [callbacks]
    elif isinstance(callbacks, Iterable):
        items = list(callbacks)
    else:
        raise MisconfigurationException(
            f"`Trainer(callbacks={callbacks!r})` must be a Callback or a list of Callbacks."
        )
    for cb in items:
        if not isinstance(cb, Callback):
            raise MisconfigurationException(
                f"`Trainer(callbacks=...)` got {type(cb).__name__}, which is not a `torchbolt.Callback`."
                " Subclass `torchbolt.Callback` (or `torchbolt.callbacks.Callback`)."
            )
    return items


def _add_progress_bar(config: TrainerConfig, items: list[Callback]) -> None:
    """Append the default progress bar to ``items`` when enabled and none was given.

    Raises:
        MisconfigurationException: when the bar is disabled but ``items`` holds one, or ``items`` holds several.
    """
    bars = [cb for cb in items if isinstance(cb, ProgressBar)]
    if config.enable_progress_bar:
        if len(bars) > 1:
            raise MisconfigurationException(
                "You added multiple progress bar callbacks to the Trainer, but only one progress bar is supported:"
                f" {[type(bar).__name__ for bar in bars]}. Keep one of them in `callbacks`."
            )
        if not bars:
            items.append(TQDMProgressBar(mode="auto"))  # the default display fits where it is written
        return
    if bars:
        raise MisconfigurationException(
            f"Trainer was configured with `enable_progress_bar=False` but found `{type(bars[0]).__name__}` in"
            " callbacks list. Remove it or set `enable_progress_bar=True`."
        )


def _add_checkpoint(config: TrainerConfig, items: list[Callback]) -> None:
    """Append the default ``ModelCheckpoint`` to ``items`` when checkpointing is enabled and none was given.

    Raises:
        MisconfigurationException: when checkpointing is disabled but ``items`` holds a checkpoint callback.
    """
    has_checkpoint = any(isinstance(cb, Checkpoint) for cb in items)
    if config.enable_checkpointing:
        if not has_checkpoint:
            checkpoint_cls = _model_checkpoint_cls()
            if checkpoint_cls is not None:
                items.append(checkpoint_cls())
    elif has_checkpoint:
        raise MisconfigurationException(
            "Trainer was configured with `enable_checkpointing=False` but found `ModelCheckpoint` in callbacks"
            " list. Remove the callback or set `enable_checkpointing=True`."
        )


def build_loggers(config: TrainerConfig, logger: Logger | Iterable[Logger] | bool | None) -> list[Logger]:
    """The loggers ``Trainer(logger=...)`` asks for: none, the default one, or the user's (checked)."""
    if config.fast_dev_run:
        return [DummyLogger()] if logger not in (False,) else []
    if logger is False or (logger is None and config.barebones):
        return []
    if logger is None or logger is True:
        from torchbolt.loggers import _default_logger

        return [_default_logger(config.default_root_dir)]
    if _is_logger_like(logger):
        return [logger]  # type: ignore[list-item]
    if isinstance(logger, Iterable) and not isinstance(logger, (str, bytes)):
        loggers = list(logger)
        for item in loggers:
            if not _is_logger_like(item):
                raise MisconfigurationException(
                    f"`Trainer(logger=...)` got {type(item).__name__}; pass torchbolt loggers"
                    " (e.g. `TensorBoardLogger`, `CSVLogger`), True, False or a list of loggers."
                )
        return loggers
    raise MisconfigurationException(
        f"`Trainer(logger={logger!r})`: pass True, False, a Logger or a list of loggers."
    )


def _is_logger_like(obj: object) -> bool:
    """A ``Logger`` subclass, or an object that answers the logger calls the Trainer makes.

    Duck-typed objects (an adapter, a test double) are accepted as in Lightning; strings and other
    values without ``log_metrics``/``log_hyperparams`` are rejected so a typo fails early.
    """
    if isinstance(obj, Logger):
        return True
    if isinstance(obj, (str, bytes, int, float, type)):
        return False
    return callable(getattr(obj, "log_metrics", None)) and callable(getattr(obj, "log_hyperparams", None))


def _model_checkpoint_cls() -> type[Checkpoint] | None:
    try:
        from torchbolt.callbacks.model_checkpoint import ModelCheckpoint
    except ImportError:
        return None
    return ModelCheckpoint


def reorder_callbacks(callbacks: list[Callback]) -> list[Callback]:
    """Tuner callbacks first, checkpoint callbacks last (they save the final state of the others)."""
    tuner, other, checkpoints = [], [], []
    for cb in callbacks:
        if getattr(cb, "_is_tuner_callback", False):
            tuner.append(cb)
        elif isinstance(cb, Checkpoint):
            checkpoints.append(cb)
        else:
            other.append(cb)
    return tuner + other + checkpoints


# ---------------------------------------------------------------------- start of a run
def merge_model_callbacks(callbacks: list[Callback], model: LightningModule) -> list[Callback]:
    """``callbacks`` with ``model.configure_callbacks()`` merged in: a returned callback replaces the
    Trainer's callbacks of its type."""
    previous = model.__dict__.get("_current_fx_name")
    model.__dict__["_current_fx_name"] = "configure_callbacks"  # what `self.log` sees (it cannot log there)
    try:
        model_callbacks = model.configure_callbacks()
    finally:
        model.__dict__["_current_fx_name"] = previous
    if not model_callbacks:
        return callbacks
    if isinstance(model_callbacks, Callback):
        model_callbacks = [model_callbacks]
    model_types = {type(c) for c in model_callbacks}
    kept = [c for c in callbacks if type(c) not in model_types]
    overridden = sorted({type(c).__name__ for c in callbacks if type(c) in model_types})
    if overridden:
        rank_zero_info(
            "The following callbacks returned in `LightningModule.configure_callbacks` will override"
            f" existing callbacks passed to Trainer: {', '.join(overridden)}"
        )
    return reorder_callbacks(kept + list(model_callbacks))


def attach_module_logging(callbacks: list[Callback], model: LightningModule) -> None:
    """Give each callback ``log`` and ``log_dict``: the module's, so that ``self.log(...)`` in a callback hook
    logs as ``pl_module.log(...)`` would (as in Lightning). A callback class that defines its own ``log`` or
    ``log_dict`` keeps it."""
    for callback in callbacks:
        cls = type(callback)
        if not hasattr(cls, "log"):
            callback.log = model.log  # type: ignore[attr-defined]
        if not hasattr(cls, "log_dict"):
            callback.log_dict = model.log_dict  # type: ignore[attr-defined]


_MINIMUM = (" Lightning `Trainer` expects as minimum a `training_step()`, `train_dataloader()` and"
            " `configure_optimizers()` to be defined.")


def verify_model(config: TrainerConfig, callbacks: list[Callback], model: LightningModule, fn: TrainerFn,
                 source: DataSource) -> None:
    """Refuse a run the model cannot do (a missing ``training_step``, manual optimization with automatic
    clipping, ...) before any hook runs, naming the fix."""
    check_removed_hooks(model, callbacks, fn.value)
    if fn == TrainerFn.FITTING:
        if not is_overridden("training_step", model, LightningModule):
            raise MisconfigurationException("No `training_step()` method defined." + _MINIMUM)
        if not is_overridden("configure_optimizers", model, LightningModule):
            raise MisconfigurationException("No `configure_optimizers()` method defined." + _MINIMUM)
        if not source.is_defined("train"):
            raise MisconfigurationException(
                "No `train_dataloader()` method defined." + _MINIMUM
                + " Pass `trainer.fit(model, train_dataloaders=...)` or a datamodule."
            )
        if not model.automatic_optimization and config.gradient_clip_val:
            raise MisconfigurationException(
                "Automatic gradient clipping is not supported for manual optimization. Remove"
                f" `Trainer(gradient_clip_val={config.gradient_clip_val})`, or switch to automatic"
                " optimization and call `self.clip_gradients` yourself."
            )
        if not model.automatic_optimization and config.accumulate_grad_batches != 1:
            raise MisconfigurationException(
                "Automatic gradient accumulation is not supported for manual optimization. Remove"
                f" `Trainer(accumulate_grad_batches={config.accumulate_grad_batches})` or switch to"
                " automatic optimization."
            )
        has_val_step = is_overridden("validation_step", model, LightningModule)
        if source.is_defined("val") and not has_val_step and config.limit_val_batches != 0:
            rank_zero_warn("You passed in a `val_dataloader` but have no `validation_step`. Skipping val loop.")
        elif has_val_step and not source.is_defined("val"):
            rank_zero_warn("You defined a `validation_step` but have no `val_dataloader`. Skipping val loop.",
                           category=PossibleUserWarning)
    elif fn in (TrainerFn.VALIDATING, TrainerFn.TESTING):
        check_eval_step(model, fn.value)
    elif fn == TrainerFn.PREDICTING:
        _check_predict_step(model)


def _check_predict_step(model: LightningModule) -> None:
    if model.predict_step is None:
        raise MisconfigurationException("`predict_step` cannot be None. Define a `predict_step` method (or remove"
                                        " the assignment of None).")
    if not is_overridden("predict_step", model, LightningModule) and not callable(model.forward):
        # the default `predict_step` calls `self(batch)`
        raise MisconfigurationException("`Trainer.predict` requires `forward` method to run: define `forward` or a"
                                        " `predict_step`.")
