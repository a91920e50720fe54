"""What a checkpoint contains, and restoring a run from one.

The layout is Lightning's: ``epoch``, ``global_step``, ``state_dict``, ``optimizer_states``,
``lr_schedulers``, ``callbacks``, ``loops``, ``hparams_name``, ``hyper_parameters``, the datamodule's
hyperparameters and state, and the precision plug-in's state under its class name.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

import torchbolt
from torchbolt.core.saving import _to_plain
from torchbolt.utilities.exceptions import MisconfigurationException
from torchbolt.utilities.rank_zero import rank_zero_info
from torchbolt.utilities.seed import _collect_rng_states

if TYPE_CHECKING:
    from torchbolt.trainer.trainer import Trainer

CHECKPOINT_FORMAT_VERSION = 1


class CheckpointConnector:
    """Builds checkpoint dicts from the Trainer's state and restores them."""

    def __init__(self, trainer: Trainer) -> None:
        self.trainer = trainer
        self._loaded: dict[str, Any] | None = None
        self._ckpt_path: str | None = None

    # ------------------------------------------------------------------ saving
    def dump_checkpoint(self, weights_only: bool = False) -> dict[str, Any]:
        """The checkpoint dict of the current state (hooks ``state_dict``/``on_save_checkpoint`` run here)."""
        trainer = self.trainer
        module = trainer.lightning_module
        strategy = trainer.strategy
        checkpoint: dict[str, Any] = {
            "epoch": trainer.current_epoch,
            "global_step": trainer.global_step,
            "pytorch-lightning_version": "2.6.0",
            "torchbolt_version": torchbolt.__version__,
            "torchbolt_format_version": CHECKPOINT_FORMAT_VERSION,
            "state_dict": strategy.lightning_module_state_dict(),
            "loops": self._loops_state(),
        }
        if not weights_only:
            checkpoint["callbacks"] = self._callbacks_state()
            checkpoint["optimizer_states"] = [strategy.optimizer_state(opt) for opt in trainer.optimizers]
            checkpoint["lr_schedulers"] = [config.scheduler.state_dict() for config in trainer.lr_scheduler_configs]
            precision_state = strategy.precision_plugin.state_dict()
            if precision_state:
                checkpoint[type(strategy.precision_plugin).__qualname__] = precision_state
        if getattr(module, "_hparams", None) is not None and module.hparams:
            checkpoint["hparams_name"] = getattr(module, "_hparams_name", "kwargs")
            checkpoint["hyper_parameters"] = _to_plain(dict(module.hparams))
        datamodule = trainer.datamodule
        if datamodule is not None:
            if getattr(datamodule, "_hparams", None) is not None and datamodule.hparams:
                checkpoint["datamodule_hparams_name"] = getattr(datamodule, "_hparams_name", "kwargs")
                checkpoint["datamodule_hyper_parameters"] = _to_plain(dict(datamodule.hparams))
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

    def _loops_state(self) -> dict[str, Any]:
        progress = self.trainer._progress.state_dict()
        return {"fit_loop": {"torchbolt_progress": progress, "rng_states": _plain_rng_states()}}

    # ------------------------------------------------------------------ loading
    def load(self, ckpt_path: str, weights_only: bool | None = None) -> dict[str, Any]:
        """Read the checkpoint at ``ckpt_path`` (safely: tensors and plain data only)."""
        self._ckpt_path = ckpt_path
        rank_zero_info(f"Restoring states from the checkpoint path at {ckpt_path}")
        self._loaded = self.trainer.strategy.load_checkpoint(ckpt_path, weights_only=weights_only)
        return self._loaded

    def restore_module_and_callbacks(self) -> None:
        """Load module weights and callback states (``on_load_checkpoint`` hooks run here)."""
        checkpoint = self._loaded
        if checkpoint is None:
            return
        trainer = self.trainer
        trainer._hooks.module("on_load_checkpoint", checkpoint)
        trainer.strategy.load_model_state_dict(checkpoint, strict=trainer.lightning_module.strict_loading)
        datamodule = trainer.datamodule
        if datamodule is not None and type(datamodule).__qualname__ in checkpoint:
            datamodule.load_state_dict(checkpoint[type(datamodule).__qualname__])
        trainer._hooks.callbacks("on_load_checkpoint", checkpoint)
        states = checkpoint.get("callbacks") or {}
        for callback in trainer.callbacks:
            state = states.get(callback.state_key, states.get(str(callback._legacy_state_key)))
            if state:
                callback.load_state_dict(dict(state))

    def restore_training_state(self) -> None:
        """Restore optimizers, schedulers, precision state and loop counters (fit only)."""
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
        loops = checkpoint.get("loops") or {}
        progress = (loops.get("fit_loop") or {}).get("torchbolt_progress")
        if progress is not None:
            trainer._progress.load_state_dict(dict(progress))
        else:
            # a checkpoint written by another tool: only the epoch and step counters are known
            trainer._progress.global_step = int(checkpoint.get("global_step", 0))
            trainer._progress.current_epoch = int(checkpoint.get("epoch", 0)) + 1
            trainer._progress.batches_that_stepped = trainer._progress.global_step
        trainer._progress.should_stop = False

    def release(self) -> None:
        self._loaded = None


def _plain_rng_states() -> dict[str, Any]:
    states = _collect_rng_states()
    numpy_state = states["numpy"]
    states["numpy"] = (numpy_state[0], torch.from_numpy(numpy_state[1].copy()), *numpy_state[2:])
    states["python"] = (states["python"][0], list(states["python"][1]), states["python"][2])
    return states
