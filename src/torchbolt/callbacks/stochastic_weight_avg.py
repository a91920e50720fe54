"""``StochasticWeightAveraging``: average the weights of the last epochs (Izmailov et al., 2018)."""

from __future__ import annotations

from collections.abc import Callable
from copy import deepcopy
from typing import TYPE_CHECKING, Any, cast

import torch
from torch import Tensor, nn
from torch.optim.swa_utils import SWALR

from torchbolt.callbacks.callback import Callback
from torchbolt.core.optimizer import LRSchedulerConfig
from torchbolt.utilities.exceptions import MisconfigurationException
from torchbolt.utilities.rank_zero import rank_zero_info, rank_zero_warn

if TYPE_CHECKING:
    from torch.optim import Optimizer

    from torchbolt.core.module import LightningModule
    from torchbolt.trainer.trainer import Trainer

_AVG_FN = Callable[[Tensor, Tensor, Tensor], Tensor]


class StochasticWeightAveraging(Callback):
    r"""Average the model's weights over the last epochs; the average becomes the final model.

    From epoch ``swa_epoch_start`` on, the learning rate anneals to ``swa_lrs`` (``SWALR``) and, at the
    start of every epoch up to the last, the current weights are added to a running average. When
    training ends the model receives the averaged weights. A model with BatchNorm layers gets one
    extra epoch (``max_epochs + 1``) that only recomputes the BatchNorm statistics for the averaged
    weights: its batches run forward and backward but the optimizer does not step.

    Example::

        trainer = Trainer(max_epochs=20, callbacks=[StochasticWeightAveraging(swa_lrs=1e-2)])

    Args:
        swa_lrs: the SWA learning rate, for every param group (float) or per group (list of floats).
        swa_epoch_start: the epoch (1-based int) at which averaging starts, or the fraction of
            ``max_epochs`` after which it starts (float in [0, 1]).
        annealing_epochs: epochs over which the learning rate anneals to ``swa_lrs``.
        annealing_strategy: ``"cos"`` or ``"linear"``.
        avg_fn: ``(averaged, current, num_averaged) -> new averaged``; default: equal-weight mean.
        device: where the averaged copy lives (``None``: the model's device).

    Raises:
        MisconfigurationException: for invalid arguments; at fit start for several optimizers or
            schedulers, or without ``max_epochs``.
    """

    def __init__(
        self,
        swa_lrs: float | list[float],
        swa_epoch_start: int | float = 0.8,
        annealing_epochs: int = 10,
        annealing_strategy: str = "cos",
        avg_fn: _AVG_FN | None = None,
        device: torch.device | str | None = torch.device("cpu"),
    ) -> None:
        _check_args(swa_lrs, swa_epoch_start, annealing_strategy, avg_fn, device)
        self.n_averaged: Tensor | None = None
        self._swa_epoch_start = swa_epoch_start
        self._swa_lrs = swa_lrs
        self._annealing_epochs = annealing_epochs
        self._annealing_strategy = annealing_strategy
        self._avg_fn: _AVG_FN = avg_fn or self.avg_fn
        self._device = device
        self._model_contains_batch_norm: bool | None = None
        self._average_model: nn.Module | None = None
        self._initialized = False
        self._swa_scheduler: Any = None
        self._scheduler_state: dict[str, Any] | None = None
        self._init_n_averaged = 0
        self._latest_update_epoch = -1
        self._max_epochs = 0
        self._bn_update_epoch = False
        self._accumulate_grad_batches = 1
        self.momenta: dict[nn.modules.batchnorm._BatchNorm, float | None] = {}

    @property
    def swa_start(self) -> int:
        """The first epoch (0-based) whose start weights enter the average."""
        return max(int(self._swa_epoch_start) - 1, 0)

    @property
    def swa_end(self) -> int:
        """The last epoch (0-based) whose start weights enter the average."""
        return self._max_epochs - 1

    @staticmethod
    def pl_module_contains_batch_norm(pl_module: LightningModule) -> bool:
        return any(isinstance(module, nn.modules.batchnorm._BatchNorm) for module in pl_module.modules())

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if trainer.strategy.restore_checkpoint_after_setup:
            raise MisconfigurationException("SWA does not currently support sharded models.")
        # the copy is made before the model moves to its device (a LightningModule copies without its Trainer)
        self._average_model = deepcopy(pl_module)

    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if len(trainer.optimizers) != 1:
            raise MisconfigurationException("SWA currently works with 1 `optimizer`.")
        if len(trainer.lr_scheduler_configs) > 1:
            raise MisconfigurationException("SWA currently not supported for more than 1 `lr_scheduler`.")
        if trainer.max_epochs in (None, -1):
            raise MisconfigurationException(
                "StochasticWeightAveraging needs `Trainer(max_epochs=...)`: averaging starts at an epoch counted"
                " from the end of training."
            )
        if isinstance(self._swa_epoch_start, float):
            self._swa_epoch_start = int(trainer.max_epochs * self._swa_epoch_start)
        self._model_contains_batch_norm = self.pl_module_contains_batch_norm(pl_module)
        self._max_epochs = trainer.max_epochs
        if self._model_contains_batch_norm:
            # one more epoch, in which the BatchNorm statistics are recomputed for the averaged weights;
            # the fit loop's limit (owned by the run's config)
            trainer.fit_loop.max_epochs = self._max_epochs + 1
        if self._scheduler_state is not None:
            # resuming: the SWA scheduler is rebuilt (and its state loaded) at the next epoch start; drop the
            # configured one so the checkpoint's scheduler state is not loaded into the wrong type
            trainer.lr_scheduler_configs.clear()

    def on_train_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        epoch = trainer.current_epoch
        if not self._initialized and self.swa_start <= epoch <= self.swa_end:
            self._initialize(trainer, pl_module)
        if self.swa_start <= epoch <= self.swa_end and epoch > self._latest_update_epoch:
            assert self.n_averaged is not None and self._average_model is not None
            self.update_parameters(self._average_model, pl_module, self.n_averaged, self._avg_fn)
            self._latest_update_epoch = epoch
        if epoch == self.swa_end + 1 and self._model_contains_batch_norm:
            self._start_batch_norm_update(trainer, pl_module)

    def _initialize(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._initialized = True
        assert self._average_model is not None
        self._average_model = self._average_model.to(self._device or pl_module.device)
        optimizer = trainer.optimizers[0]
        if isinstance(self._swa_lrs, float):
            self._swa_lrs = [self._swa_lrs] * len(optimizer.param_groups)
        for lr, group in zip(self._swa_lrs, optimizer.param_groups):
            group["initial_lr"] = lr
        self._swa_scheduler = SWALR(
            optimizer, swa_lr=cast(Any, self._swa_lrs), anneal_epochs=self._annealing_epochs,
            anneal_strategy=cast(Any, self._annealing_strategy),
            last_epoch=trainer.max_epochs if self._annealing_strategy == "cos" else -1,
        )
        if self._scheduler_state is not None:
            self._swa_scheduler.load_state_dict(self._scheduler_state)
        elif trainer.current_epoch != self.swa_start:
            rank_zero_warn(
                "SWA is initializing after swa_start without any checkpoint data. This may be caused by loading a"
                " checkpoint from an older version."
            )
        swa_config = LRSchedulerConfig(self._swa_scheduler)  # every epoch
        configs = trainer.lr_scheduler_configs
        if configs:
            current = configs[0]
            if current.interval != "epoch" or current.frequency != 1:
                rank_zero_warn(f"SWA is currently only supported every epoch. Found {current}")
            rank_zero_info(
                f"Swapping scheduler `{type(current.scheduler).__name__}` for `{type(self._swa_scheduler).__name__}`"
            )
            configs[0] = swa_config
        else:
            configs.append(swa_config)
        if self.n_averaged is None:
            self.n_averaged = torch.tensor(self._init_n_averaged, dtype=torch.long, device=pl_module.device)

    def _start_batch_norm_update(self, trainer: Trainer, pl_module: LightningModule) -> None:
        assert self._average_model is not None
        self.transfer_weights(self._average_model, pl_module)
        self.reset_batch_norm_and_save_state(pl_module)
        batches = trainer.num_training_batches
        if not isinstance(batches, int):
            raise MisconfigurationException(
                "StochasticWeightAveraging's BatchNorm update epoch needs a training dataloader with a length."
            )
        # one accumulation window covering the whole epoch, and its single step skipped (see
        # on_before_optimizer_step): the batches only run forward to collect the statistics
        self._bn_update_epoch = True
        self._accumulate_grad_batches = trainer.accumulate_grad_batches
        trainer.accumulate_grad_batches = max(batches, 1)

    def on_before_optimizer_step(self, trainer: Trainer, pl_module: LightningModule, optimizer: Optimizer) -> None:
        if self._bn_update_epoch:
            # no update: optimizers skip parameters without gradients
            for group in optimizer.param_groups:
                for param in group["params"]:
                    param.grad = None

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self._bn_update_epoch:
            self._bn_update_epoch = False
            trainer.accumulate_grad_batches = self._accumulate_grad_batches

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        # the fit loop has already counted the last epoch
        if self._model_contains_batch_norm and trainer.current_epoch - 1 == self.swa_end + 1:
            max_epochs = trainer.fit_loop.max_epochs
            assert max_epochs is not None, "the fit gave `max_epochs` its value"
            trainer.fit_loop.max_epochs = max_epochs - 1
            self.reset_momenta()
        elif trainer.current_epoch - 1 == self.swa_end:
            assert self._average_model is not None
            self.transfer_weights(self._average_model, pl_module)

    @staticmethod
    def transfer_weights(src_pl_module: nn.Module, dst_pl_module: nn.Module) -> None:
        """Copy the parameters of ``src_pl_module`` into ``dst_pl_module``."""
        for src, dst in zip(src_pl_module.parameters(), dst_pl_module.parameters()):
            dst.detach().copy_(src.to(dst.device))

    def reset_batch_norm_and_save_state(self, pl_module: LightningModule) -> None:
        """Zero the BatchNorm statistics and switch them to a cumulative average (``momentum=None``)."""
        self.momenta = {}
        for module in pl_module.modules():
            if not isinstance(module, nn.modules.batchnorm._BatchNorm):
                continue
            assert module.running_mean is not None and module.running_var is not None
            module.running_mean = torch.zeros_like(module.running_mean)
            module.running_var = torch.ones_like(module.running_var)
            self.momenta[module] = module.momentum
            module.momentum = None  # type: ignore[assignment]
            assert module.num_batches_tracked is not None
            module.num_batches_tracked *= 0

    def reset_momenta(self) -> None:
        """Give the BatchNorm layers their momentum back."""
        for module, momentum in self.momenta.items():
            module.momentum = momentum  # type: ignore[assignment]

    @staticmethod
    def update_parameters(average_model: nn.Module, model: nn.Module, n_averaged: Tensor, avg_fn: _AVG_FN) -> None:
        """Add ``model``'s parameters to the running average held by ``average_model``."""
        for p_swa, p_model in zip(average_model.parameters(), model.parameters()):
            device = p_swa.device
            p_swa_ = p_swa.detach()
            p_model_ = p_model.detach().to(device)
            src = p_model_ if n_averaged == 0 else avg_fn(p_swa_, p_model_, n_averaged.to(device))
            p_swa_.copy_(src)
        n_averaged += 1

    @staticmethod
    def avg_fn(averaged_model_parameter: Tensor, model_parameter: Tensor, num_averaged: Tensor) -> Tensor:
        """The equal-weight running mean."""
        return averaged_model_parameter + (model_parameter - averaged_model_parameter) / (num_averaged + 1)

    def state_dict(self) -> dict[str, Any]:
        return {
            "n_averaged": 0 if self.n_averaged is None else int(self.n_averaged),
            "latest_update_epoch": self._latest_update_epoch,
            "scheduler_state": None if self._swa_scheduler is None else self._swa_scheduler.state_dict(),
            "average_model_state": None if self._average_model is None else self._average_model.state_dict(),
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._init_n_averaged = state_dict["n_averaged"]
        self._latest_update_epoch = state_dict["latest_update_epoch"]
        self._scheduler_state = state_dict["scheduler_state"]
        average_state = state_dict["average_model_state"]
        if self._average_model is not None and average_state is not None:
            self._average_model.load_state_dict(average_state)


def _check_args(swa_lrs: Any, swa_epoch_start: Any, annealing_strategy: str, avg_fn: Any, device: Any) -> None:
    err_msg = "swa_epoch_start should be a >0 integer or a float between 0 and 1."
    if isinstance(swa_epoch_start, int) and swa_epoch_start < 1:
        raise MisconfigurationException(err_msg)
    if isinstance(swa_epoch_start, float) and not (0 <= swa_epoch_start <= 1):
        raise MisconfigurationException(err_msg)
    wrong_type = not isinstance(swa_lrs, (float, list))
    wrong_float = isinstance(swa_lrs, float) and swa_lrs <= 0
    wrong_list = isinstance(swa_lrs, list) and not all(isinstance(lr, float) and lr > 0 for lr in swa_lrs)
    if wrong_type or wrong_float or wrong_list:
        raise MisconfigurationException("The `swa_lrs` should a positive float, or a list of positive floats")
    if annealing_strategy not in ("cos", "linear"):
        raise MisconfigurationException(
            f"`annealing_strategy={annealing_strategy!r}` is invalid: use 'cos' or 'linear'."
        )
    if avg_fn is not None and not callable(avg_fn):
        raise MisconfigurationException("The `avg_fn` should be callable.")
    if device is not None and not isinstance(device, (torch.device, str)):
        raise MisconfigurationException(f"device is expected to be a torch.device or a str. Found {device}")
