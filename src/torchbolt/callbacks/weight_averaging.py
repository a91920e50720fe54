"""Weight averaging during training: ``WeightAveraging`` (SWA-style by default) and ``EMAWeightAveraging``."""

from __future__ import annotations

import itertools
from copy import deepcopy
from typing import TYPE_CHECKING, Any

import torch
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from torchbolt.callbacks.callback import Callback
from torchbolt.utilities.parsing import is_overridden
from torchbolt.utilities.rank_zero import rank_zero_info, rank_zero_warn

if TYPE_CHECKING:
    from torchbolt.core.module import LightningModule
    from torchbolt.trainer.trainer import Trainer


class WeightAveraging(Callback):
    """Keep an averaged copy of the model, updated after optimizer steps (or epochs), and use it.

    The average is a ``torch.optim.swa_utils.AveragedModel``; keyword arguments such as ``avg_fn`` or
    ``multi_avg_fn`` go to it (default: equal-weight mean of all updates). During validation the
    model temporarily holds the averaged weights; when training ends it keeps them. Checkpoints store
    the averaged weights under ``state_dict`` (so any checkpoint loads the averaged model) and the
    current weights under ``current_model_state``, from which a resumed run continues.

    Override :meth:`should_update` to choose when the average is updated.

    Example::

        class SWAFromStep100(WeightAveraging):
            def should_update(self, step_idx=None, epoch_idx=None):
                return step_idx is not None and step_idx >= 100

        trainer = Trainer(callbacks=[SWAFromStep100()])

    Args:
        device: where the averaged copy lives; ``None``: the model's device (moved along with it at fit start).
        use_buffers: also average the buffers (BatchNorm statistics); otherwise they are copied.
        kwargs: passed to ``AveragedModel``.
    """

    def __init__(self, device: torch.device | str | int | None = "cpu", use_buffers: bool = True,
                 **kwargs: Any) -> None:
        self._device: torch.device | int | None = torch.device(device) if isinstance(device, str) else device
        self._use_buffers = use_buffers
        self._kwargs = kwargs
        self._average_model: AveragedModel | None = None
        # optimizer steps taken when the average was last updated; 0 means the first update comes after
        # the first optimizer step (after N batches with accumulate_grad_batches=N)
        self._latest_update_step = 0
        # the epoch after which the average was last updated (-1: none yet)
        self._latest_update_epoch = -1

    def should_update(self, step_idx: int | None = None, epoch_idx: int | None = None) -> bool:
        """Whether to update the average after the optimizer step ``step_idx`` or the epoch ``epoch_idx``
        (0-based; one of them is ``None``). Default: after every optimizer step."""
        return step_idx is not None

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        if is_overridden("configure_model", pl_module):
            rank_zero_warn(
                "You're using the WeightAveraging callback with a model that overrides the configure_model callback."
                " WeightAveraging doesn't support sharding model layers, so you may run out of memory."
            )
            pl_module.configure_model()
        self._average_model = AveragedModel(model=pl_module, device=self._device, use_buffers=self._use_buffers,
                                            **self._kwargs)

    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        # `setup` ran before the model moved to its device; without an explicit device, follow it
        if self._device is None and self._average_model is not None:
            self._average_model.to(pl_module.device)

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        # zero-based index of the last optimizer step, consistent with epoch_idx
        step_idx = trainer.global_step - 1
        if trainer.global_step > self._latest_update_step and self.should_update(step_idx=step_idx):
            assert self._average_model is not None
            self._average_model.update_parameters(pl_module)
            self._latest_update_step = trainer.global_step

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        epoch = trainer.current_epoch
        if epoch > self._latest_update_epoch and self.should_update(epoch_idx=epoch):
            assert self._average_model is not None
            self._average_model.update_parameters(pl_module)
            self._latest_update_epoch = epoch

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        assert self._average_model is not None
        rank_zero_info("Loading the average model parameters to the final model.")
        self._copy_average_to_current(pl_module)

    def on_validation_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self._average_model is not None:
            self._swap_models(pl_module)

    def on_validation_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self._average_model is not None:
            self._swap_models(pl_module)

    def state_dict(self) -> dict[str, Any]:
        return {"latest_update_step": self._latest_update_step, "latest_update_epoch": self._latest_update_epoch}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._latest_update_step = state_dict["latest_update_step"]
        self._latest_update_epoch = state_dict.get("latest_update_epoch", -1)

    def on_save_checkpoint(self, trainer: Trainer, pl_module: LightningModule, checkpoint: dict[str, Any]) -> None:
        if self._average_model is None:
            rank_zero_info(
                "You're using the WeightAveraging callback, but saving a checkpoint outside the 'fit' stage. The state"
                " of the WeightAveraging callback won't be saved in the checkpoint."
            )
            return
        average_state = self._average_model.state_dict()
        checkpoint["current_model_state"] = checkpoint["state_dict"]
        checkpoint["state_dict"] = {k[len("module."):]: v for k, v in average_state.items() if k.startswith("module.")}
        checkpoint["averaging_state"] = {k: v for k, v in average_state.items() if not k.startswith("module.")}

    def on_load_checkpoint(self, trainer: Trainer, pl_module: LightningModule, checkpoint: dict[str, Any]) -> None:
        if self._average_model is None:
            rank_zero_warn(
                "You're using the WeightAveraging callback, but loading a checkpoint outside the 'fit' stage. The"
                " WeightAveraging state cannot be restored. If you're using the checkpoint for prediction or testing,"
                " you can ignore this warning. To disable the warning, remove the WeightAveraging callback."
            )
        elif "current_model_state" in checkpoint and "averaging_state" in checkpoint:
            average_state = {"module." + k: v for k, v in checkpoint["state_dict"].items()}
            average_state.update(checkpoint["averaging_state"])
            self._average_model.load_state_dict(average_state)
            # the model continues from its own weights, not the average; whether the Trainer loaded
            # `state_dict` before or after this hook, the model ends up with the current weights
            checkpoint["state_dict"] = checkpoint["current_model_state"]
            pl_module.load_state_dict(checkpoint["current_model_state"], strict=pl_module.strict_loading)
        else:
            rank_zero_warn(
                "The checkpoint was not created with WeightAveraging. Both the current and the average model will be"
                " initialized with state_dict."
            )
            self._average_model.module.load_state_dict(deepcopy(checkpoint["state_dict"]), strict=False)

    def _swap_models(self, pl_module: LightningModule) -> None:
        assert self._average_model is not None
        average = itertools.chain(self._average_model.module.parameters(), self._average_model.module.buffers())
        current = itertools.chain(pl_module.parameters(), pl_module.buffers())
        for avg, cur in zip(average, current):
            tmp = avg.data.clone()
            avg.data.copy_(cur.data)
            cur.data.copy_(tmp)

    def _copy_average_to_current(self, pl_module: LightningModule) -> None:
        assert self._average_model is not None
        average = itertools.chain(self._average_model.module.parameters(), self._average_model.module.buffers())
        current = itertools.chain(pl_module.parameters(), pl_module.buffers())
        for avg, cur in zip(average, current):
            cur.data.copy_(avg.data)


class EMAWeightAveraging(WeightAveraging):
    """An exponential moving average of the weights: ``ema = decay * ema + (1 - decay) * weights``.

    The first update copies the weights. Updates happen after every ``update_every_n_steps``-th
    optimizer step, from step ``update_starting_at_step`` (or at the end of every epoch from
    ``update_starting_at_epoch``).

    Example::

        trainer = Trainer(callbacks=[EMAWeightAveraging(decay=0.999)])

    Args:
        device: where the average lives (``None``: the model's device).
        use_buffers: also average the buffers.
        decay: the EMA decay.
        update_every_n_steps: update after every n-th optimizer step (0: never by step).
        update_starting_at_step: first optimizer step (0-based) that updates.
        update_starting_at_epoch: update at the end of each epoch from this one on (``None``: never by epoch).
        kwargs: passed to ``AveragedModel``.
    """

    def __init__(
        self,
        device: torch.device | str | int | None = None,
        use_buffers: bool = True,
        decay: float = 0.999,
        update_every_n_steps: int = 1,
        update_starting_at_step: int | None = None,
        update_starting_at_epoch: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(device=device, use_buffers=use_buffers, multi_avg_fn=get_ema_multi_avg_fn(decay=decay),
                         **kwargs)
        self.decay = decay
        self.update_every_n_steps = update_every_n_steps
        self.update_starting_at_step = update_starting_at_step
        self.update_starting_at_epoch = update_starting_at_epoch

    def should_update(self, step_idx: int | None = None, epoch_idx: int | None = None) -> bool:
        if step_idx is not None:
            started = self.update_starting_at_step is None or step_idx >= self.update_starting_at_step
            due = self.update_every_n_steps > 0 and step_idx % self.update_every_n_steps == 0
            if started and due:
                return True
        if epoch_idx is not None:
            start = self.update_starting_at_epoch
            if start is not None and epoch_idx >= start:
                return True
        return False
