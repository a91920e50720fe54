"""The hooks a LightningModule, LightningDataModule and Callback can override, and their order.

Every hook here is a no-op by default. The Trainer decides once per run which hooks an object
overrides and calls only those, so an unused hook costs nothing per batch.

Order of a ``trainer.fit(model)`` (callbacks are called before the module at each point, except
that ``ModelCheckpoint`` and ``EarlyStopping`` see ``on_train_epoch_end`` after the module so they
can monitor what the module logged there)::

    configure_callbacks()
    prepare_data()                         # datamodule, then module; once per node (local rank 0)
    setup("fit")                           # datamodule, callbacks, module
    configure_model()
    configure_optimizers()
    on_fit_start()
    # sanity check (num_sanity_val_steps batches of every val loader, random state isolated)
    on_sanity_check_start()
        on_validation_start() ... on_validation_end()     # as in the validation loop below
    on_sanity_check_end()
    on_train_start()
    for epoch in epochs:
        on_train_epoch_start()
        for batch_idx, batch in enumerate(train_dataloader):
            on_before_batch_transfer(batch, 0)
            transfer_batch_to_device(batch, device, 0)
            on_after_batch_transfer(batch, 0)
            on_train_batch_start(batch, batch_idx)        # returning -1 ends the epoch
            # automatic optimization; on a step batch all of this runs inside
            # optimizer_step(epoch, batch_idx, optimizer, optimizer_closure):
            training_step(batch, batch_idx)
            on_before_zero_grad(optimizer)                # first batch of an accumulation window
            optimizer_zero_grad(epoch, batch_idx, optimizer)
            on_before_backward(loss)
            backward(loss)
            on_after_backward()
            on_before_optimizer_step(optimizer)           # step batches only; grads are unscaled here
            configure_gradient_clipping(optimizer, gradient_clip_val, gradient_clip_algorithm)
            # the optimizer update itself ends optimizer_step(...)
            lr_scheduler_step(scheduler, metric)          # "step" schedulers, and "epoch" ones on the last batch
            on_train_batch_end(outputs, batch, batch_idx)
            if validation is due:
                on_validation_model_zero_grad()
                # validation loop: on_validation_model_eval(), on_validation_start(),
                # on_validation_epoch_start(), per batch: transfer hooks,
                # on_validation_batch_start(), validation_step(), on_validation_batch_end(),
                # then on_validation_epoch_end(), on_validation_end(), on_validation_model_train()
        on_train_epoch_end()                              # then ModelCheckpoint / EarlyStopping
        lr_scheduler_step(plateau_scheduler, metric)      # ReduceLROnPlateau with an "epoch" interval
    on_train_end()
    on_fit_end()
    teardown("fit")                                       # datamodule, callbacks, module

``validate``/``test`` run ``prepare_data``, ``setup(stage)``, ``configure_model``, then the evaluation
loop above with ``test_*`` names for test, then ``teardown(stage)``. ``predict`` is the same with
``on_predict_start``, ``on_predict_epoch_start``, per batch ``on_predict_batch_start``,
``predict_step``, ``on_predict_batch_end``, then ``on_predict_epoch_end`` and ``on_predict_end``.
``on_exception`` is called (callbacks, module, datamodule) when a run raises, before ``teardown``.
The full timeline, with the checkpoint hooks, is in ``docs/hooks.md`` and pinned by
``tests/integration/test_hook_order.py``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torch.optim import Optimizer

from torchbolt.utilities.apply_func import move_data_to_device
from torchbolt.utilities.exceptions import _LoaderHookNotImplemented


class ModelHooks:
    """Hooks of the run's lifecycle that a LightningModule can override."""

    def on_fit_start(self) -> None:
        """Called at the very beginning of fit, after ``configure_optimizers``."""

    def on_fit_end(self) -> None:
        """Called at the very end of fit."""

    def on_train_start(self) -> None:
        """Called at the beginning of training, after the sanity check."""

    def on_train_end(self) -> None:
        """Called at the end of training, before logger experiments are finalized."""

    def on_validation_start(self) -> None:
        """Called at the beginning of validation."""

    def on_validation_end(self) -> None:
        """Called at the end of validation."""

    def on_test_start(self) -> None:
        """Called at the beginning of testing."""

    def on_test_end(self) -> None:
        """Called at the end of testing."""

    def on_predict_start(self) -> None:
        """Called at the beginning of predicting."""

    def on_predict_end(self) -> None:
        """Called at the end of predicting."""

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> int | None:
        """Called before ``training_step``. Return ``-1`` to skip the rest of the current epoch."""
        return None

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        """Called after the training batch, with what ``training_step`` returned (as a dict)."""

    def on_validation_batch_start(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
        """Called before ``validation_step``."""

    def on_validation_batch_end(self, outputs: Any, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
        """Called after ``validation_step`` with its return value."""

    def on_test_batch_start(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
        """Called before ``test_step``."""

    def on_test_batch_end(self, outputs: Any, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
        """Called after ``test_step`` with its return value."""

    def on_predict_batch_start(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
        """Called before ``predict_step``."""

    def on_predict_batch_end(self, outputs: Any, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
        """Called after ``predict_step`` with its return value."""

    def on_validation_model_zero_grad(self) -> None:
        """Called before a validation that runs inside training: drop gradients to free memory."""
        self.zero_grad()  # type: ignore[attr-defined]  # torch's default frees the gradients

    def on_validation_model_eval(self) -> None:
        """Put the model in eval mode for validation."""
        self.trainer.model.eval()  # type: ignore[attr-defined]

    def on_validation_model_train(self) -> None:
        """Called after validation inside fit, once the loop has restored every submodule's mode
        (a frozen submodule in eval mode stays in eval mode). Override to change modes further."""

    def on_test_model_eval(self) -> None:
        """Put the model in eval mode for testing."""
        self.trainer.model.eval()  # type: ignore[attr-defined]

    def on_test_model_train(self) -> None:
        """Called after testing, once the loop has restored every submodule's mode."""

    def on_predict_model_eval(self) -> None:
        """Put the model in eval mode for predicting."""
        self.trainer.model.eval()  # type: ignore[attr-defined]

    def on_train_epoch_start(self) -> None:
        """Called at the start of every training epoch."""

    def on_train_epoch_end(self) -> None:
        """Called at the end of every training epoch, after any validation at the epoch's end."""

    def on_validation_epoch_start(self) -> None:
        """Called at the start of every validation epoch."""

    def on_validation_epoch_end(self) -> None:
        """Called at the end of every validation epoch."""

    def on_test_epoch_start(self) -> None:
        """Called at the start of a test epoch."""

    def on_test_epoch_end(self) -> None:
        """Called at the end of a test epoch."""

    def on_predict_epoch_start(self) -> None:
        """Called at the start of a predict epoch."""

    def on_predict_epoch_end(self) -> None:
        """Called at the end of a predict epoch."""

    def on_before_zero_grad(self, optimizer: Optimizer) -> None:
        """Called before gradients are zeroed (at the first batch of an accumulation window)."""

    def on_before_backward(self, loss: Tensor) -> None:
        """Called before ``backward`` with the (scaled-by-accumulation) loss."""

    def on_after_backward(self) -> None:
        """Called after ``backward``, before the optimizer step. Gradients are still scaled under AMP."""

    def on_before_optimizer_step(self, optimizer: Optimizer) -> None:
        """Called before the optimizer step and before clipping; gradients are unscaled here."""

    def configure_sharded_model(self) -> None:
        """Deprecated alias of ``configure_model``."""

    def configure_model(self) -> None:
        """Create modules here when they should be built on the target device or sharded.

        Called in every fit/validate/test/predict; must be idempotent (check whether the layers
        already exist before creating them).
        """


class DataHooks:
    """Hooks for data that a LightningModule or LightningDataModule can override."""

    def __init__(self) -> None:
        super().__init__()
        self.prepare_data_per_node: bool = True
        self.allow_zero_length_dataloader_with_multiple_devices: bool = False

    def prepare_data(self) -> None:
        """Download or write data to disk. Runs once per node (or once in all when
        ``prepare_data_per_node=False``), in a single process: do not set state here."""

    def setup(self, stage: str) -> None:
        """Called on every process at the start of fit/validate/test/predict (``stage`` names it)."""

    def teardown(self, stage: str) -> None:
        """Called on every process at the end of fit/validate/test/predict."""

    def train_dataloader(self) -> Any:
        """Return the training dataloader (or a collection of them)."""
        raise _LoaderHookNotImplemented("`train_dataloader` must be implemented to be used with the Trainer")

    def test_dataloader(self) -> Any:
        """Return one or several test dataloaders."""
        raise _LoaderHookNotImplemented("`test_dataloader` must be implemented to be used with the Trainer")

    def val_dataloader(self) -> Any:
        """Return one or several validation dataloaders."""
        raise _LoaderHookNotImplemented("`val_dataloader` must be implemented to be used with the Trainer")

    def predict_dataloader(self) -> Any:
        """Return one or several prediction dataloaders."""
        raise _LoaderHookNotImplemented("`predict_dataloader` must be implemented to be used with the Trainer")

    def transfer_batch_to_device(self, batch: Any, device: torch.device, dataloader_idx: int) -> Any:
        """Move ``batch`` to ``device``. Override for custom batch types without a ``.to`` method."""
        return move_data_to_device(batch, device)

    def on_before_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """Alter or augment the batch before it is moved to the device."""
        return batch

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """Alter or augment the batch after it has been moved to the device."""
        return batch


class CheckpointHooks:
    """Hooks to add to or read from a checkpoint dict."""

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Called when loading a checkpoint, with the whole checkpoint dict."""

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Called when saving a checkpoint; add entries to ``checkpoint`` to store them."""
