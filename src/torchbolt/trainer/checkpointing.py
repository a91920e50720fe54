"""What a checkpoint contains, and restoring a run from one.

The top-level layout is Lightning's: ``epoch``, ``global_step``, ``pytorch-lightning_version``,
``state_dict``, ``loops``, ``callbacks``, ``optimizer_states``, ``lr_schedulers``, the precision
plug-in's state under its class name, ``hparams_name``/``hyper_parameters``, the datamodule's
``datamodule_hparams_name``/``datamodule_hyper_parameters`` and its ``state_dict`` under its class
name. ``loops`` carries Lightning's progress entries (so tools that read them find what they
expect) and, under ``loops.fit_loop.torchbolt``, what an exact resume needs (see ``resume.py``).
Everything is tensors and plain Python data, so a weights-only ``torch.load`` reads it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from torch import Tensor

import torchbolt
from torchbolt.core.saving import _to_checkpoint_hparams
from torchbolt.loops.progress import BatchCounter, EvalBatchCounts
from torchbolt.trainer.optimization import AutomaticOptimization
from torchbolt.trainer.resume import (
    ResumePoint,
    capture_rng,
    gather_rank_states,
    metric_states,
    rank_resume_state,
    rng_to_checkpoint,
)
from torchbolt.trainer.states import Progress, RunningStage, TrainerFn
from torchbolt.utilities.checkpoint_checks import (
    CHECKPOINT_FORMAT_VERSION,
    LIGHTNING_LAYOUT_VERSION,
    check_checkpoint_format,
    check_training_state,
)
from torchbolt.utilities.exceptions import MisconfigurationException
from torchbolt.utilities.rank_zero import rank_zero_info, rank_zero_warn

if TYPE_CHECKING:
    from torchbolt.strategies.strategy import Strategy
    from torchbolt.trainer.context import RunContext



@dataclass
class LoadedCheckpoint:
    """A checkpoint read for a run: its contents and where it came from (named in every error)."""

    path: str
    checkpoint: dict[str, Any]


# ---------------------------------------------------------------------- saving
def dump_checkpoint(ctx: RunContext, weights_only: bool | None = False) -> dict[str, Any]:
    """The checkpoint dict of the run's current state.

    ``Callback.state_dict``, ``Callback.on_save_checkpoint`` and the module's
    ``on_save_checkpoint`` run here, in that order (the last two can add entries).
    """
    strategy = ctx.strategy
    progress = ctx.progress
    # capture the random state before any hook below can draw from it
    resume_state = None if weights_only else _resume_state(ctx)
    checkpoint: dict[str, Any] = {
        "epoch": progress.current_epoch,
        "global_step": progress.global_step,
        "pytorch-lightning_version": LIGHTNING_LAYOUT_VERSION,
        "torchbolt_version": torchbolt.__version__,
        "torchbolt_format_version": CHECKPOINT_FORMAT_VERSION,
        "state_dict": strategy.lightning_module_state_dict(),
        "loops": _loops_state(progress, resume_state, ctx.eval_counts),
    }
    if not weights_only:
        checkpoint["callbacks"] = _callbacks_state(ctx.callbacks)
        checkpoint["optimizer_states"] = [strategy.optimizer_state(opt) for opt in strategy.optimizers]
        checkpoint["lr_schedulers"] = [config.scheduler.state_dict() for config in strategy.lr_scheduler_configs]
        precision_state = strategy.precision_plugin.state_dict()
        if precision_state:
            checkpoint[type(strategy.precision_plugin).__qualname__] = precision_state
    for obj in (ctx.module, ctx.datamodule):
        if obj is not None and getattr(obj, "_hparams", None) is not None and obj.hparams:
            checkpoint[obj.CHECKPOINT_HYPER_PARAMS_NAME] = getattr(obj, "_hparams_name", None) or "kwargs"
            checkpoint[obj.CHECKPOINT_HYPER_PARAMS_KEY] = _to_checkpoint_hparams(dict(obj.hparams))
    datamodule = ctx.datamodule
    if datamodule is not None:
        dm_state = ctx.hooks.datamodule("state_dict")  # timed by the profiler
        if dm_state:
            checkpoint[type(datamodule).__qualname__] = dm_state
    if not weights_only:
        ctx.hooks.callbacks("on_save_checkpoint", checkpoint)
    ctx.hooks.module("on_save_checkpoint", checkpoint)
    return checkpoint


def _callbacks_state(callbacks: list[Any]) -> dict[str, Any]:
    states: dict[str, Any] = {}
    for callback in callbacks:
        state = callback.state_dict()
        if state:
            states[callback.state_key] = state
    return states


def _resume_state(ctx: RunContext) -> dict[str, Any]:
    """What an exact resume needs beyond the weights, optimizers and callbacks."""
    p = ctx.progress
    progress = p.state_dict()
    if p.in_batch_tail and ctx.state.stage == RunningStage.VALIDATING:
        # written during the validation due after a batch (ModelCheckpoint/EarlyStopping act at
        # its end): the resume must not run that validation again
        progress["tail_validated"] = True
    state: dict[str, Any] = {
        "format": CHECKPOINT_FORMAT_VERSION,
        "progress": progress,
        "rng": rng_to_checkpoint(capture_rng()),
        "metrics": ctx.metrics.state_dict(),
    }
    loop = ctx.fit_loop
    if loop is not None:
        manual = not isinstance(loop.optimization, AutomaticOptimization)
        mid_window = (p.epoch_batches_done % ctx.config.accumulate_grad_batches != 0 and not p.last_batch_seen
                      and not p.epoch_ending)
        state.update(loop.checkpoint_state(include_grads=manual or mid_window))
        evaluation_metrics = loop.val_loop.results.metric_objects()
        state["metric_states"] = metric_states(ctx.module, skip=evaluation_metrics)
    gather_rank_states(ctx.trainer, state)
    return state


def _loops_state(progress: Progress, resume_state: dict[str, Any] | None,
                 counts: EvalBatchCounts | None = None) -> dict[str, Any]:
    counts = counts if counts is not None else EvalBatchCounts()
    fit_loop = _lightning_fit_loop_state(progress, counts.fit_val)
    if resume_state is not None:
        fit_loop["torchbolt"] = resume_state
    return {
        "fit_loop": fit_loop,
        "validate_loop": _lightning_eval_loop_state(counts.validate),
        "test_loop": _lightning_eval_loop_state(counts.test),
        "predict_loop": _lightning_eval_loop_state(counts.predict, predict=True),
    }


# ---------------------------------------------------------------------- loading
def load_checkpoint(strategy: Strategy, ckpt_path: str, weights_only: bool | None = None) -> LoadedCheckpoint:
    """Read the checkpoint at ``ckpt_path`` (weights-only unless ``weights_only=False``)."""
    rank_zero_info(f"Restoring states from the checkpoint path at {ckpt_path}")
    loaded = strategy.load_checkpoint(ckpt_path, weights_only=weights_only)
    check_checkpoint_format(loaded, ckpt_path)
    return LoadedCheckpoint(ckpt_path, loaded)


def restore_module_and_callbacks(ctx: RunContext, loaded: LoadedCheckpoint) -> None:
    """Module weights, datamodule state, then (when fitting) callbacks.

    Order: ``LightningModule.on_load_checkpoint``, the weights, the datamodule's
    ``load_state_dict``, ``Callback.on_load_checkpoint``, ``Callback.load_state_dict``; the two
    callback steps only for ``fit`` (validate/test/predict leave callback state alone).
    """
    checkpoint = loaded.checkpoint
    ctx.hooks.module("on_load_checkpoint", checkpoint)
    try:
        ctx.strategy.load_model_state_dict(checkpoint, strict=ctx.module.strict_loading)
    except KeyError as e:
        if e.args != ("state_dict",):
            raise
        raise KeyError(
            f"The checkpoint {loaded.path!r} has no 'state_dict' entry: it is not a Lightning/torchbolt"
            " checkpoint. Load plain state dicts with `model.load_state_dict(torch.load(path))`."
        ) from None
    datamodule = ctx.datamodule
    if datamodule is not None and type(datamodule).__qualname__ in checkpoint:
        ctx.hooks.datamodule("load_state_dict", checkpoint[type(datamodule).__qualname__])
    if ctx.fn != TrainerFn.FITTING:
        return  # as in Lightning, callback states are restored only to resume fitting
    ctx.hooks.callbacks("on_load_checkpoint", checkpoint)
    states = checkpoint.get("callbacks")
    if states is None:
        return
    if not isinstance(states, dict):
        raise ValueError(
            f"The checkpoint {loaded.path!r} has a 'callbacks' entry of type {type(states).__name__}; a dict"
            " of callback states was expected: the file was damaged or edited."
        )
    unknown = set(states) - {key for cb in ctx.callbacks for key in (cb.state_key, type(cb).__qualname__)}
    if unknown:
        rank_zero_warn(
            "Be aware that when using `ckpt_path`, callbacks used to create the checkpoint need to be provided"
            f" during `Trainer` instantiation. Please add the following callbacks: {sorted(map(str, unknown))}."
        )
    for callback in ctx.callbacks:
        # older files: Lightning 1.x keyed a state by the class; a callback whose key became argument-based
        # (ModelPruning) was keyed by its class name
        state = states.get(callback.state_key, states.get(str(callback._legacy_state_key),
                                                          states.get(type(callback).__qualname__)))
        if state:
            callback.load_state_dict(dict(state))


def restore_training_state(ctx: RunContext, loaded: LoadedCheckpoint) -> None:
    """Optimizers, schedulers, precision state, loop counters and the resume point (fit only).

    Every value restored into the run is checked first (types and ranges), naming the key and the file.

    Raises:
        MisconfigurationException: for a weights-only checkpoint, or one further than ``max_epochs``.
        ValueError: a damaged or edited entry (a negative epoch, a counter of the wrong type...).
    """
    checkpoint, path = loaded.checkpoint, loaded.path
    strategy = ctx.strategy
    if "optimizer_states" not in checkpoint:
        raise MisconfigurationException(
            f"Trying to resume fit from {path!r}, which holds only weights (saved with"
            " `save_weights_only=True`/`weights_only=True`). Load it with `Model.load_from_checkpoint`"
            " and start a new fit instead."
        )
    check_training_state(checkpoint, path)
    fit_loop_state = _mapping(checkpoint.get("loops") or {}, "loops", path).get("fit_loop") or {}
    fit_loop_state = _mapping(fit_loop_state, "loops.fit_loop", path)
    resume_state = fit_loop_state.get("torchbolt")
    if resume_state is not None:
        resume_state = _mapping(resume_state, "loops.fit_loop.torchbolt", path)
    resume_state = rank_resume_state(ctx.trainer, resume_state)  # this process's own part under DDP
    progress = Progress()
    if resume_state is not None:
        progress.restore(_mapping(resume_state.get("progress"), "loops.fit_loop.torchbolt.progress", path),
                         source=repr(path))
    else:
        _progress_from_other_tool(progress, checkpoint, fit_loop_state, path)
    precision_state = checkpoint.get(type(strategy.precision_plugin).__qualname__)
    if precision_state:
        strategy.precision_plugin.load_state_dict(precision_state)
    strategy.load_optimizer_state_dict(checkpoint)
    for config, state in zip(strategy.lr_scheduler_configs, checkpoint.get("lr_schedulers", [])):
        config.scheduler.load_state_dict(state)
    p = ctx.progress
    # a stop requested before this point (e.g. by a Timer in on_fit_start) still holds
    stop_requested = p.should_stop
    p.restore(progress.state_dict(), source=repr(path))
    if resume_state is not None:
        ctx.metrics.load_state_dict(resume_state.get("metrics") or {}, strategy.root_device)
    if p.should_stop and not stop_requested:
        # exact resume keeps the recorded stop; Lightning clears it and trains on, so say why nothing runs
        rank_zero_info(
            f"The checkpoint {path} was saved after a stop had been requested (`trainer.should_stop`,"
            " e.g. by EarlyStopping): the resumed fit ends where the original run ended. To train further, load"
            " the weights with `Model.load_from_checkpoint(...)` and start a new fit."
        )
    p.request_stop(p.should_stop or stop_requested)
    max_epochs = ctx.config.max_epochs
    if max_epochs is not None and max_epochs != -1 and p.current_epoch > max_epochs:
        raise MisconfigurationException(
            f"You restored a checkpoint with current_epoch={p.current_epoch}, but you have set"
            f" Trainer(max_epochs={max_epochs}). Raise `max_epochs` to train further."
        )
    if ctx.fit_loop is not None:
        ctx.fit_loop.resume_from(ResumePoint.from_checkpoint(resume_state))


def _mapping(value: Any, key: str, path: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ValueError(
            f"The checkpoint {path!r} has a {key!r} entry of type {type(value).__name__}; a dict was expected:"
            " the file was damaged or edited."
        )
    return value


# ---------------------------------------------------------------------- helpers
def _counts(n: int, keys: tuple[str, ...] = ("ready", "completed", "started", "processed")) -> dict[str, int]:
    return dict.fromkeys(keys, n)


def _progress_entry(total: int, current: int, keys: tuple[str, ...] = ("ready", "completed", "started", "processed")
                    ) -> dict[str, dict[str, int]]:
    return {"total": _counts(total, keys), "current": _counts(current, keys)}


def _lightning_fit_loop_state(p: Progress, val_batches: BatchCounter | None = None) -> dict[str, Any]:
    """Lightning's fit-loop progress entries, derived from :class:`Progress` (and the batch counter of the
    fit's validation); ``trainer.fit_loop.state_dict()`` returns them too."""
    batches_total = p.total_batch_idx + 1
    batch = _progress_entry(batches_total, p.epoch_batches_done)
    if p.in_batch_tail:  # Lightning counts a batch completed only after on_train_batch_end
        batch["total"]["completed"] -= 1
        batch["current"]["completed"] -= 1
    batch["is_last_batch"] = p.last_batch_seen  # type: ignore[assignment]
    started = p.current_epoch + int(p.epoch_started)
    epoch = {
        "total": {"ready": started, "started": started, "processed": p.current_epoch + int(p.epoch_ending),
                  "completed": p.current_epoch},
    }
    epoch["current"] = dict(epoch["total"])
    step_keys = ("ready", "completed")
    return {
        "state_dict": {},
        "epoch_loop.state_dict": {"_batches_that_stepped": p.batches_that_stepped},
        "epoch_loop.batch_progress": batch,
        "epoch_loop.scheduler_progress": _progress_entry(0, 0, step_keys),
        "epoch_loop.automatic_optimization.state_dict": {},
        "epoch_loop.automatic_optimization.optim_progress": {
            "optimizer": {
                "step": _progress_entry(p.global_step, p.global_step, step_keys),
                "zero_grad": _progress_entry(p.global_step, p.global_step, ("ready", "completed", "started")),
            },
        },
        "epoch_loop.manual_optimization.state_dict": {},
        "epoch_loop.manual_optimization.optim_step_progress": _progress_entry(0, 0, step_keys),
        "epoch_loop.val_loop.state_dict": {},
        "epoch_loop.val_loop.batch_progress": _lightning_eval_loop_state(val_batches)["batch_progress"],
        "epoch_progress": epoch,
    }


def _lightning_eval_loop_state(batches: BatchCounter | None = None, predict: bool = False) -> dict[str, Any]:
    """Lightning's entries of an evaluation (or prediction) loop: its batch counts (``is_last_batch`` is not
    tracked for these loops: always ``False``)."""
    batch: dict[str, Any] = (_progress_entry(batches.total, batches.current) if batches is not None
                             else _progress_entry(0, 0))
    if not predict:
        batch["is_last_batch"] = False
    return {"state_dict": {}, "batch_progress": batch}


def _progress_from_other_tool(p: Progress, checkpoint: dict[str, Any], fit_loop: dict[str, Any], path: str) -> None:
    """Counters from a checkpoint without torchbolt's resume state (e.g. written by Lightning).

    Epoch, step and batch position are restored; the random state is not (such a resume is not exact).

    Raises:
        ValueError: an entry of the wrong type or out of range (naming it).
    """
    global_step = _count(checkpoint.get("global_step", 0), "global_step", path)
    epoch_loop = _mapping(fit_loop.get("epoch_loop.state_dict") or {}, "loops.fit_loop.epoch_loop.state_dict", path)
    state: dict[str, Any] = {
        "global_step": global_step,
        "batches_that_stepped": _count(epoch_loop.get("_batches_that_stepped", global_step),
                                       "loops.fit_loop.epoch_loop.state_dict._batches_that_stepped", path),
        "should_stop": False,
    }
    epoch = _mapping(fit_loop.get("epoch_progress") or {}, "loops.fit_loop.epoch_progress", path).get("current")
    batch = _mapping(fit_loop.get("epoch_loop.batch_progress") or {}, "loops.fit_loop.epoch_loop.batch_progress",
                     path)
    if not epoch:
        state["current_epoch"] = _count(checkpoint.get("epoch", 0), "epoch", path) + 1
        p.restore(state, source=repr(path))
        return
    epoch = _mapping(epoch, "loops.fit_loop.epoch_progress.current", path)
    processed = _count(epoch.get("processed", 0), "loops.fit_loop.epoch_progress.current.processed", path)
    completed = _count(epoch.get("completed", 0), "loops.fit_loop.epoch_progress.current.completed", path)
    if processed > completed:  # written at the end of an epoch: start the next one
        state["current_epoch"] = processed
        p.restore(state, source=repr(path))
        return
    state["current_epoch"] = completed
    current = _mapping(batch.get("current") or {}, "loops.fit_loop.epoch_loop.batch_progress.current", path)
    total = _mapping(batch.get("total") or {}, "loops.fit_loop.epoch_loop.batch_progress.total", path)
    done = _count(current.get("processed", 0), "loops.fit_loop.epoch_loop.batch_progress.current.processed", path)
    state["total_batch_idx"] = _count(total.get("processed", 0),
                                      "loops.fit_loop.epoch_loop.batch_progress.total.processed", path) - 1
    if done > 0 and not batch.get("is_last_batch", False):
        state.update(epoch_batches_done=done, batch_idx=done - 1, epoch_started=True)
    p.restore(state, source=repr(path))


def _count(value: Any, key: str, path: str) -> int:
    """A non-negative int read from a checkpoint (numbers saved as tensors too)."""
    if isinstance(value, Tensor) and value.numel() == 1 and not value.is_floating_point():
        value = int(value.item())
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(
            f"The checkpoint {path!r} has {key}={value!r}; a non-negative int was expected: the file was damaged"
            " or edited."
        )
    return value
