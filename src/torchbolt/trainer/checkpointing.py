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

from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

import torchbolt
from torchbolt.core.saving import _to_checkpoint_hparams
from torchbolt.trainer.optimization import AutomaticOptimization
from torchbolt.trainer.resume import (
    ResumePoint,
    capture_rng,
    gather_rank_states,
    metric_states,
    rank_resume_state,
    rng_to_checkpoint,
)
from torchbolt.trainer.states import Progress
from torchbolt.utilities.exceptions import MisconfigurationException
from torchbolt.utilities.rank_zero import rank_zero_info, rank_zero_warn

if TYPE_CHECKING:
    from torchbolt.trainer.trainer import Trainer

CHECKPOINT_FORMAT_VERSION = 2
# the Lightning version whose layout this follows (Lightning's own loaders read this key)
LIGHTNING_LAYOUT_VERSION = "2.6.0"


class CheckpointConnector:
    """Builds checkpoint dicts from the Trainer's state and restores them."""

    def __init__(self, trainer: Trainer) -> None:
        self.trainer = trainer
        self._loaded: dict[str, Any] | None = None
        self._ckpt_path: str | None = None

    # ------------------------------------------------------------------ saving
    def dump_checkpoint(self, weights_only: bool | None = False) -> dict[str, Any]:
        """The checkpoint dict of the current state.

        ``Callback.state_dict``, ``Callback.on_save_checkpoint`` and the module's
        ``on_save_checkpoint`` run here, in that order (the last two can add entries).
        """
        trainer = self.trainer
        strategy = trainer.strategy
        # capture the random state before any hook below can draw from it
        resume_state = None if weights_only else self._resume_state()
        checkpoint: dict[str, Any] = {
            "epoch": trainer.current_epoch,
            "global_step": trainer.global_step,
            "pytorch-lightning_version": LIGHTNING_LAYOUT_VERSION,
            "torchbolt_version": torchbolt.__version__,
            "torchbolt_format_version": CHECKPOINT_FORMAT_VERSION,
            "state_dict": strategy.lightning_module_state_dict(),
            "loops": self._loops_state(resume_state),
        }
        if not weights_only:
            checkpoint["callbacks"] = self._callbacks_state()
            checkpoint["optimizer_states"] = [strategy.optimizer_state(opt) for opt in trainer.optimizers]
            checkpoint["lr_schedulers"] = [config.scheduler.state_dict() for config in trainer.lr_scheduler_configs]
            precision_state = strategy.precision_plugin.state_dict()
            if precision_state:
                checkpoint[type(strategy.precision_plugin).__qualname__] = precision_state
        for obj in (trainer.lightning_module, trainer.datamodule):
            if obj is not None and getattr(obj, "_hparams", None) is not None and obj.hparams:
                checkpoint[obj.CHECKPOINT_HYPER_PARAMS_NAME] = getattr(obj, "_hparams_name", None) or "kwargs"
                checkpoint[obj.CHECKPOINT_HYPER_PARAMS_KEY] = _to_checkpoint_hparams(dict(obj.hparams))
        datamodule = trainer.datamodule
        if datamodule is not None:
            dm_state = datamodule.state_dict()
            if dm_state:
                checkpoint[type(datamodule).__qualname__] = dm_state
        if not weights_only:
            trainer._hooks.callbacks("on_save_checkpoint", checkpoint)
        trainer._hooks.module("on_save_checkpoint", checkpoint)
        return checkpoint

    def _callbacks_state(self) -> dict[str, Any]:
        states: dict[str, Any] = {}
        for callback in self.trainer.callbacks:
            state = callback.state_dict()
            if state:
                states[callback.state_key] = state
        return states

    def _resume_state(self) -> dict[str, Any]:
        """What an exact resume needs beyond the weights, optimizers and callbacks."""
        trainer, p = self.trainer, self.trainer._progress
        progress = p.state_dict()
        if p.in_batch_tail and trainer.validating:
            # written during the validation due after a batch (ModelCheckpoint/EarlyStopping act at
            # its end): the resume must not run that validation again
            progress["tail_validated"] = True
        state: dict[str, Any] = {
            "format": CHECKPOINT_FORMAT_VERSION,
            "progress": progress,
            "rng": rng_to_checkpoint(capture_rng()),
            "metrics": {
                "callback": _cpu(trainer._metrics.callback),
                "logged": _cpu(trainer._metrics.logged),
                "pbar": _cpu(trainer._metrics.pbar),
            },
        }
        loop = trainer._fit_loop
        if loop is not None and trainer.lightning_module is not None:
            manual = not isinstance(loop.optimization, AutomaticOptimization)
            mid_window = (p.epoch_batches_done % trainer.accumulate_grad_batches != 0 and not p.last_batch_seen
                          and not p.epoch_ending)
            state.update(loop.checkpoint_state(include_grads=manual or mid_window))
            evaluation_metrics = loop.val_loop.results.metric_objects()
            state["metric_states"] = metric_states(trainer.lightning_module, skip=evaluation_metrics)
        gather_rank_states(trainer, state)
        return state

    def _loops_state(self, resume_state: dict[str, Any] | None) -> dict[str, Any]:
        fit_loop = _lightning_fit_loop_state(self.trainer._progress)
        if resume_state is not None:
            fit_loop["torchbolt"] = resume_state
        return {
            "fit_loop": fit_loop,
            "validate_loop": _lightning_eval_loop_state(),
            "test_loop": _lightning_eval_loop_state(),
            "predict_loop": _lightning_eval_loop_state(predict=True),
        }

    # ------------------------------------------------------------------ loading
    def load(self, ckpt_path: str, weights_only: bool | None = None) -> dict[str, Any]:
        """Read the checkpoint at ``ckpt_path`` (weights-only unless ``weights_only=False``)."""
        self._ckpt_path = ckpt_path
        rank_zero_info(f"Restoring states from the checkpoint path at {ckpt_path}")
        loaded = self.trainer.strategy.load_checkpoint(ckpt_path, weights_only=weights_only)
        check_checkpoint_format(loaded, ckpt_path)
        self._loaded = loaded
        return self._loaded

    def restore_module_and_callbacks(self) -> None:
        """Module weights, datamodule state, then (when fitting) callbacks.

        Order: ``LightningModule.on_load_checkpoint``, the weights, the datamodule's
        ``load_state_dict``, ``Callback.on_load_checkpoint``, ``Callback.load_state_dict``; the two
        callback steps only for ``fit`` (validate/test/predict leave callback state alone).
        """
        checkpoint = self._loaded
        if checkpoint is None:
            return
        trainer = self.trainer
        trainer._hooks.module("on_load_checkpoint", checkpoint)
        try:
            trainer.strategy.load_model_state_dict(checkpoint, strict=trainer.lightning_module.strict_loading)
        except KeyError as e:
            if e.args != ("state_dict",):
                raise
            raise KeyError(
                f"The checkpoint {self._ckpt_path!r} has no 'state_dict' entry: it is not a Lightning/torchbolt"
                " checkpoint. Load plain state dicts with `model.load_state_dict(torch.load(path))`."
            ) from None
        datamodule = trainer.datamodule
        if datamodule is not None and type(datamodule).__qualname__ in checkpoint:
            datamodule.load_state_dict(checkpoint[type(datamodule).__qualname__])
        if trainer.state.fn != "fit":
            return  # as in Lightning, callback states are restored only to resume fitting
        trainer._hooks.callbacks("on_load_checkpoint", checkpoint)
        states = checkpoint.get("callbacks")
        if states is None:
            return
        unknown = set(states) - {cb.state_key for cb in trainer.callbacks}
        if unknown:
            rank_zero_warn(
                "Be aware that when using `ckpt_path`, callbacks used to create the checkpoint need to be provided"
                f" during `Trainer` instantiation. Please add the following callbacks: {sorted(unknown)}."
            )
        for callback in trainer.callbacks:
            state = states.get(callback.state_key, states.get(str(callback._legacy_state_key)))
            if state:
                callback.load_state_dict(dict(state))

    def restore_training_state(self) -> None:
        """Optimizers, schedulers, precision state, loop counters and the resume point (fit only).

        Raises:
            MisconfigurationException: for a weights-only checkpoint, or one further than ``max_epochs``.
        """
        checkpoint = self._loaded
        if checkpoint is None:
            return
        trainer = self.trainer
        strategy = trainer.strategy
        if "optimizer_states" not in checkpoint:
            raise MisconfigurationException(
                f"Trying to resume fit from {self._ckpt_path!r}, which holds only weights (saved with"
                " `save_weights_only=True`/`weights_only=True`). Load it with `Model.load_from_checkpoint`"
                " and start a new fit instead."
            )
        precision_state = checkpoint.get(type(strategy.precision_plugin).__qualname__)
        if precision_state:
            strategy.precision_plugin.load_state_dict(precision_state)
        strategy.load_optimizer_state_dict(checkpoint)
        for config, state in zip(trainer.lr_scheduler_configs, checkpoint.get("lr_schedulers", [])):
            config.scheduler.load_state_dict(state)
        fit_loop_state = (checkpoint.get("loops") or {}).get("fit_loop") or {}
        resume_state = rank_resume_state(trainer, fit_loop_state.get("torchbolt"))
        # a stop requested before this point (e.g. by a Timer in on_fit_start) still holds
        stop_requested = trainer._progress.should_stop
        if resume_state is not None:
            trainer._progress.load_state_dict(dict(resume_state["progress"]))
            self._restore_metrics(resume_state.get("metrics") or {})
        else:
            _progress_from_other_tool(trainer._progress, checkpoint, fit_loop_state)
        if trainer._progress.should_stop and not stop_requested:
            # exact resume keeps the recorded stop; Lightning clears it and trains on, so say why nothing runs
            rank_zero_info(
                f"The checkpoint {self._ckpt_path} was saved after a stop had been requested (`trainer.should_stop`,"
                " e.g. by EarlyStopping): the resumed fit ends where the original run ended. To train further, load"
                " the weights with `Model.load_from_checkpoint(...)` and start a new fit."
            )
        trainer._progress.should_stop = trainer._progress.should_stop or stop_requested
        max_epochs = trainer.max_epochs
        if max_epochs is not None and max_epochs != -1 and trainer.current_epoch > max_epochs:
            raise MisconfigurationException(
                f"You restored a checkpoint with current_epoch={trainer.current_epoch}, but you have set"
                f" Trainer(max_epochs={max_epochs}). Raise `max_epochs` to train further."
            )
        if trainer._fit_loop is not None:
            trainer._fit_loop.resume_from(ResumePoint.from_checkpoint(resume_state))

    def _restore_metrics(self, metrics: dict[str, Any]) -> None:
        device = self.trainer.strategy.root_device
        store = self.trainer._metrics
        store.callback = _to_device(metrics.get("callback") or {}, device)
        store.logged = _to_device(metrics.get("logged") or {}, device)
        store.pbar = _to_device(metrics.get("pbar") or {}, device)

    def release(self) -> None:
        self._loaded = None


# ---------------------------------------------------------------------- helpers
def check_checkpoint_format(checkpoint: Any, name: Any) -> None:
    """Refuse what is not a checkpoint dict, or one written in a newer torchbolt checkpoint format.

    Raises:
        TypeError: ``checkpoint`` is not a dict.
        MisconfigurationException: its ``torchbolt_format_version`` is unknown to this torchbolt.
    """
    if not isinstance(checkpoint, dict):
        raise TypeError(f"{str(name)!r} holds a {type(checkpoint).__name__}, not a checkpoint dict.")
    version = checkpoint.get("torchbolt_format_version")
    if version is None or (isinstance(version, int) and not isinstance(version, bool)
                           and version <= CHECKPOINT_FORMAT_VERSION):
        return  # a Lightning checkpoint (no torchbolt format entry), or one this version can read
    raise MisconfigurationException(
        f"{str(name)!r} uses torchbolt checkpoint format {version!r}, but this torchbolt"
        f" ({torchbolt.__version__}) reads formats up to {CHECKPOINT_FORMAT_VERSION}. It was written by a newer"
        " torchbolt: upgrade torchbolt to load it. The file was not modified."
    )


def _cpu(metrics: dict[str, Any]) -> dict[str, Any]:
    # checkpoint time only: copying device tensors to the host synchronizes, once per save
    return {k: v.detach().cpu() if isinstance(v, Tensor) else v for k, v in metrics.items()}


def _to_device(metrics: dict[str, Any], device: torch.device) -> dict[str, Any]:
    return {k: v.to(device) if isinstance(v, Tensor) else v for k, v in metrics.items()}


def _counts(n: int, keys: tuple[str, ...] = ("ready", "completed", "started", "processed")) -> dict[str, int]:
    return dict.fromkeys(keys, n)


def _progress_entry(total: int, current: int, keys: tuple[str, ...] = ("ready", "completed", "started", "processed")
                    ) -> dict[str, dict[str, int]]:
    return {"total": _counts(total, keys), "current": _counts(current, keys)}


def _lightning_fit_loop_state(p: Progress) -> dict[str, Any]:
    """Lightning's fit-loop progress entries, derived from :class:`Progress`."""
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
        "epoch_loop.val_loop.batch_progress": {**_progress_entry(0, 0), "is_last_batch": False},
        "epoch_progress": epoch,
    }


def _lightning_eval_loop_state(predict: bool = False) -> dict[str, Any]:
    batch: dict[str, Any] = _progress_entry(0, 0)
    if not predict:
        batch["is_last_batch"] = False
    return {"state_dict": {}, "batch_progress": batch}


def _progress_from_other_tool(p: Progress, checkpoint: dict[str, Any], fit_loop: dict[str, Any]) -> None:
    """Counters from a checkpoint without torchbolt's resume state (e.g. written by Lightning).

    Epoch, step and batch position are restored; the random state is not (such a resume is not exact).
    """
    p.global_step = int(checkpoint.get("global_step", 0))
    p.batches_that_stepped = int((fit_loop.get("epoch_loop.state_dict") or {}).get("_batches_that_stepped",
                                                                                   p.global_step))
    epoch = (fit_loop.get("epoch_progress") or {}).get("current")
    batch = fit_loop.get("epoch_loop.batch_progress") or {}
    p.should_stop = False
    if not epoch:
        p.current_epoch = int(checkpoint.get("epoch", 0)) + 1
        return
    processed, completed = int(epoch.get("processed", 0)), int(epoch.get("completed", 0))
    if processed > completed:  # written at the end of an epoch: start the next one
        p.current_epoch = processed
        return
    p.current_epoch = completed
    done = int((batch.get("current") or {}).get("processed", 0))
    p.total_batch_idx = int((batch.get("total") or {}).get("processed", 0)) - 1
    if done > 0 and not batch.get("is_last_batch", False):
        p.epoch_batches_done = done
        p.batch_idx = done - 1
        p.epoch_started = True
