"""``NonFiniteGuard``: skip optimizer steps whose loss or gradients are NaN/Inf instead of corrupting the model."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from torchbolt.callbacks.callback import Callback
from torchbolt.plugins.io.async_io import wait_for_checkpoint_writes
from torchbolt.utilities.exceptions import MisconfigurationException
from torchbolt.utilities.rank_zero import rank_zero_info, rank_zero_warn

if TYPE_CHECKING:
    from torch.optim import Optimizer

    from torchbolt.core.module import LightningModule
    from torchbolt.trainer.trainer import Trainer


class NonFiniteTrainingError(RuntimeError):
    """Raised by :class:`NonFiniteGuard` after too many consecutive non-finite optimizer steps."""


class NonFiniteGuard(Callback):
    """Skip every optimizer step whose loss or gradients contain NaN or Inf; stop (or roll back) if it persists.

    Before each optimizer step the guard checks the losses of the step's batches (every batch of an
    accumulation window) and the gradients. When any is non-finite, the step's gradients are dropped
    (set to ``None``), so the optimizer leaves those parameters and its own state alone: Adam's step
    count and moments, SGD's momentum buffers and the weights are exactly as if the batches had not
    been seen. Loop counters and LR schedulers advance as for any step (like a step skipped by a
    mixed-precision gradient scaler). Each skip is counted (``skipped_steps``, logged as
    ``nonfinite_skipped_steps``) and warned about. After ``max_consecutive`` skipped steps in a row it
    raises :class:`NonFiniteTrainingError`, or, with ``rollback``, reloads the weights, optimizer,
    scheduler and precision state of the last checkpoint and carries on with the next batches.

    Under ``"16-mixed"`` precision the gradient scaler already skips steps with overflowing
    gradients (and lowers its scale); the guard then checks only the loss, so those routine skips
    are not counted. Under several processes the decision is agreed: if any rank sees a non-finite
    value, every rank skips. Checking costs one device-to-host synchronization per optimizer step;
    without the callback there is no cost at all.

    BatchNorm running statistics updated by a NaN *input* in the forward pass are not undone by
    skipping the step; use ``rollback`` for that.

    Example::

        trainer = Trainer(callbacks=[NonFiniteGuard(max_consecutive=10)])
        trainer = Trainer(callbacks=[ModelCheckpoint(save_last=True), NonFiniteGuard(rollback=True)])

    Args:
        max_consecutive: how many skipped steps in a row are tolerated.
        check_loss: check the loss of every batch.
        check_grads: check the gradients before each step.
        rollback: ``False``: raise after ``max_consecutive``; ``True``: reload the newest checkpoint
            written by the Trainer's checkpoint callbacks; a path: reload that checkpoint.
        max_rollbacks: how many rollbacks are tolerated before raising anyway.
        log: log the number of skipped steps with ``self.log`` (not under ``Trainer(barebones=True)``).

    Raises:
        MisconfigurationException: for invalid arguments.
    """

    def __init__(
        self,
        max_consecutive: int = 5,
        check_loss: bool = True,
        check_grads: bool = True,
        rollback: bool | str | os.PathLike = False,
        max_rollbacks: int = 3,
        log: bool = True,
    ) -> None:
        if not isinstance(max_consecutive, int) or max_consecutive < 1:
            raise MisconfigurationException(
                f"`NonFiniteGuard(max_consecutive={max_consecutive!r})` is invalid: expected an int >= 1."
            )
        if not isinstance(max_rollbacks, int) or max_rollbacks < 0:
            raise MisconfigurationException(
                f"`NonFiniteGuard(max_rollbacks={max_rollbacks!r})` is invalid: expected an int >= 0."
            )
        if not (check_loss or check_grads):
            raise MisconfigurationException(
                "`NonFiniteGuard(check_loss=False, check_grads=False)` checks nothing; enable at least one."
            )
        self.max_consecutive = max_consecutive
        self.check_loss = check_loss
        self.check_grads = check_grads
        self.rollback = rollback
        self.max_rollbacks = max_rollbacks
        self.log = log
        self.skipped_steps = 0
        self.consecutive = 0
        self.rollbacks = 0
        # "any loss of the current accumulation window was non-finite", kept on the device until the step
        self._window_bad: Tensor | None = None

    def on_before_backward(self, trainer: Trainer, pl_module: LightningModule, loss: Tensor) -> None:
        if self.check_loss:
            bad = ~torch.isfinite(loss.detach()).all()
            self._window_bad = bad if self._window_bad is None else self._window_bad | bad

    def on_before_optimizer_step(self, trainer: Trainer, pl_module: LightningModule, optimizer: Optimizer) -> None:
        flag = self._window_bad
        self._window_bad = None
        if self.check_grads and not _scaler_checks_gradients(trainer):
            grads_bad = _nonfinite_grads(optimizer)
            if grads_bad is not None:
                flag = grads_bad if flag is None else flag | grads_bad.to(flag.device)
        is_bad = bool(flag) if flag is not None else False  # the one host sync per step
        is_bad = trainer.strategy.reduce_boolean_decision(is_bad, all=False)
        if is_bad:
            self._skip(trainer, optimizer)
        else:
            self.consecutive = 0
        if self.log and not trainer.barebones:
            pl_module.log("nonfinite_skipped_steps", float(self.skipped_steps), on_step=True, on_epoch=False)

    def _skip(self, trainer: Trainer, optimizer: Optimizer) -> None:
        for group in optimizer.param_groups:
            for param in group["params"]:
                param.grad = None  # optimizers leave parameters without gradients (and their state) untouched
        self.skipped_steps += 1
        self.consecutive += 1
        rank_zero_warn(
            f"Non-finite loss or gradients at global step {trainer.global_step}: skipped the optimizer step"
            f" ({self.consecutive} in a row, {self.skipped_steps} in total)."
        )
        if self.consecutive < self.max_consecutive:
            return
        if self.rollback is False or self.rollbacks >= self.max_rollbacks:
            raise NonFiniteTrainingError(
                f"Training stopped: {self.consecutive} consecutive optimizer steps had a non-finite loss or"
                f" non-finite gradients (last at global step {trainer.global_step}; {self.skipped_steps} skipped in"
                f" total, {self.rollbacks} rollbacks). Lower the learning rate, clip gradients"
                " (`Trainer(gradient_clip_val=...)`), check the data for NaN/Inf, or pass"
                " `NonFiniteGuard(rollback=True)` to reload the last checkpoint instead."
            )
        self._rollback(trainer)

    def _rollback(self, trainer: Trainer) -> None:
        strategy = trainer.strategy
        # a checkpoint still written in the background (`AsyncCheckpointIO`) must be complete, for every rank
        wait_for_checkpoint_writes(strategy.checkpoint_io)
        strategy.barrier("NonFiniteGuard.rollback")
        path = _rollback_path(trainer, self.rollback)
        checkpoint = strategy.load_checkpoint(path)
        strategy.load_model_state_dict(checkpoint, strict=trainer.lightning_module.strict_loading)
        for optimizer, state in zip(trainer.optimizers, checkpoint.get("optimizer_states", [])):
            _load_optimizer_state_in_place(optimizer, state)
        for config, state in zip(trainer.lr_scheduler_configs, checkpoint.get("lr_schedulers", [])):
            config.scheduler.load_state_dict(state)
        precision_state = checkpoint.get(type(strategy.precision_plugin).__qualname__)
        if precision_state:
            strategy.precision_plugin.load_state_dict(precision_state)
        self.rollbacks += 1
        self.consecutive = 0
        rank_zero_info(
            f"NonFiniteGuard: rolled back the model and optimizer to {path!r} (rollback {self.rollbacks} of at most"
            f" {self.max_rollbacks}); training continues with the next batches."
        )

    def state_dict(self) -> dict[str, Any]:
        return {"skipped_steps": self.skipped_steps, "consecutive": self.consecutive, "rollbacks": self.rollbacks}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.skipped_steps = int(state_dict["skipped_steps"])
        self.consecutive = int(state_dict["consecutive"])
        self.rollbacks = int(state_dict["rollbacks"])


def _scaler_checks_gradients(trainer: Trainer) -> bool:
    """Whether a gradient scaler (``"16-mixed"``) already skips steps with non-finite gradients."""
    scaler = getattr(trainer.precision_plugin, "scaler", None)
    is_enabled = getattr(scaler, "is_enabled", None)
    return bool(is_enabled()) if callable(is_enabled) else False


def _nonfinite_grads(optimizer: Optimizer) -> Tensor | None:
    """A device bool: whether any gradient of ``optimizer``'s parameters holds NaN or Inf (no host sync)."""
    grads = [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
    if not grads:
        return None
    # the max-abs of each gradient is NaN or Inf exactly when the gradient holds one; one fused kernel
    norms = torch._foreach_norm(grads, float("inf"))
    device = norms[0].device
    return ~torch.isfinite(torch.stack([n.to(device, torch.float32) for n in norms])).all()


def _rollback_path(trainer: Trainer, rollback: bool | str | os.PathLike) -> str:
    if rollback is not True:
        path = os.fspath(rollback)  # type: ignore[arg-type]
        if not os.path.isfile(path):
            raise NonFiniteTrainingError(f"`NonFiniteGuard(rollback={path!r})`: there is no checkpoint at that path.")
        return path
    candidates: list[str] = []
    for callback in trainer.checkpoint_callbacks:
        for attr in ("last_model_path", "best_model_path"):
            candidate = getattr(callback, attr, None)
            if candidate and os.path.isfile(candidate):
                candidates.append(os.fspath(candidate))
    if trainer.ckpt_path and os.path.isfile(trainer.ckpt_path):
        candidates.append(trainer.ckpt_path)
    if not candidates:
        raise NonFiniteTrainingError(
            "Too many consecutive non-finite optimizer steps, and `NonFiniteGuard(rollback=True)` found no checkpoint"
            " to roll back to: no checkpoint callback has written one yet. Add `ModelCheckpoint(save_last=True)` or"
            " pass a checkpoint path as `rollback=`."
        )
    return max(candidates, key=os.path.getmtime)


def _load_optimizer_state_in_place(optimizer: Optimizer, state: dict[str, Any]) -> None:
    """``optimizer.load_state_dict(state)`` that keeps the ``param_groups`` list and ``state`` dict objects,
    which ``LightningOptimizer`` wrappers and LR schedulers share."""
    groups, per_param = optimizer.param_groups, optimizer.state
    optimizer.load_state_dict(state)
    groups[:] = optimizer.param_groups
    per_param.clear()
    per_param.update(optimizer.state)
    optimizer.param_groups = groups
    optimizer.state = per_param
