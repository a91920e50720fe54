"""Freezing and unfreezing parts of a model during training: ``BaseFinetuning`` and ``BackboneFinetuning``."""

from __future__ import annotations

import logging
from collections.abc import Callable, Generator, Iterable
from typing import TYPE_CHECKING, Any

from torch.nn import Module, ModuleDict, Parameter
from torch.nn.modules.batchnorm import _BatchNorm
from torch.optim import Optimizer

from torchbolt.callbacks.callback import Callback
from torchbolt.utilities.exceptions import MisconfigurationException
from torchbolt.utilities.rank_zero import rank_zero_warn

if TYPE_CHECKING:
    from torchbolt.core.module import LightningModule
    from torchbolt.trainer.trainer import Trainer

log = logging.getLogger(__name__)

_Modules = Module | Iterable[Any]


def multiplicative(epoch: int) -> float:
    """The default ``lambda_func`` of :class:`BackboneFinetuning`: double the backbone rate each epoch."""
    return 2.0


class BaseFinetuning(Callback):
    """Base class for callbacks that freeze modules before training and unfreeze them later.

    Override :meth:`freeze_before_training` (called in ``setup``, before ``configure_optimizers``) and
    :meth:`finetune_function` (called at every train epoch start with each optimizer), using the
    helpers :meth:`freeze`, :meth:`make_trainable` and :meth:`unfreeze_and_add_param_group`. The
    param groups added along the way are saved in checkpoints and rebuilt on resume.

    Example::

        class FeatureExtractorFreezeUnfreeze(BaseFinetuning):
            def __init__(self, unfreeze_at_epoch=10):
                super().__init__()
                self._unfreeze_at_epoch = unfreeze_at_epoch

            def freeze_before_training(self, pl_module):
                self.freeze(pl_module.feature_extractor)

            def finetune_function(self, pl_module, current_epoch, optimizer):
                if current_epoch == self._unfreeze_at_epoch:
                    self.unfreeze_and_add_param_group(pl_module.feature_extractor, optimizer, train_bn=True)

    The module's ``configure_optimizers`` should pass only trainable parameters
    (``filter(lambda p: p.requires_grad, self.parameters())``).
    """

    def __init__(self) -> None:
        self._internal_optimizer_metadata: dict[int, list[dict[str, Any]]] = {}
        self._restarting = False

    def state_dict(self) -> dict[str, Any]:
        return {"internal_optimizer_metadata": self._internal_optimizer_metadata}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._restarting = True
        self._internal_optimizer_metadata = {
            int(k): v for k, v in state_dict.get("internal_optimizer_metadata", state_dict).items()
        }

    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        # resuming: rebuild the param groups the interrupted run had added, before the optimizer state loads
        if not self._restarting:
            return
        named_parameters = dict(pl_module.named_parameters())
        trained: set[int] = set()
        for opt_idx, optimizer in enumerate(trainer.optimizers):
            groups = self._apply_mapping_to_param_groups(self._internal_optimizer_metadata[opt_idx], named_parameters)
            optimizer.param_groups[:] = groups  # in place: wrappers and schedulers share this list
            trained.update(id(p) for group in groups for p in group["params"])
        # modules unfrozen before the checkpoint train again (`freeze_before_training` froze them in setup)
        for module in self.flatten_modules(pl_module):
            own = list(module.parameters(recurse=False))
            if own and all(id(p) in trained for p in own):
                self.make_trainable(module)
        self._restarting = False

    @staticmethod
    def flatten_modules(modules: _Modules) -> list[Module]:
        """The leaf modules of ``modules`` plus parents that hold parameters themselves."""
        if isinstance(modules, ModuleDict):
            modules = modules.values()
        if isinstance(modules, Iterable):
            flat: list[Module] = []
            for module in modules:
                flat.extend(BaseFinetuning.flatten_modules(module))
            candidates: Iterable[Module] = flat
        else:
            candidates = modules.modules()
        return [m for m in candidates if not list(m.children()) or m._parameters]

    @staticmethod
    def filter_params(modules: _Modules, train_bn: bool = True,
                      requires_grad: bool = True) -> Generator[Parameter, None, None]:
        """The parameters of ``modules`` whose ``requires_grad`` equals ``requires_grad`` (BatchNorm ones
        only with ``train_bn``)."""
        for module in BaseFinetuning.flatten_modules(modules):
            if isinstance(module, _BatchNorm) and not train_bn:
                continue
            for param in module.parameters(recurse=False):
                if param.requires_grad == requires_grad:
                    yield param

    @staticmethod
    def make_trainable(modules: _Modules) -> None:
        """Unfreeze the parameters of ``modules`` (BatchNorm layers track running statistics again)."""
        for module in BaseFinetuning.flatten_modules(modules):
            if isinstance(module, _BatchNorm):
                module.track_running_stats = True
            for param in module.parameters(recurse=False):
                param.requires_grad = True

    @staticmethod
    def freeze_module(module: Module) -> None:
        """Freeze ``module``'s own parameters (BatchNorm layers stop updating running statistics)."""
        if isinstance(module, _BatchNorm):
            module.track_running_stats = False
        for param in module.parameters(recurse=False):
            param.requires_grad = False

    @staticmethod
    def freeze(modules: _Modules, train_bn: bool = True) -> None:
        """Freeze ``modules``; with ``train_bn`` their BatchNorm layers stay trainable."""
        for module in BaseFinetuning.flatten_modules(modules):
            if isinstance(module, _BatchNorm) and train_bn:
                BaseFinetuning.make_trainable(module)
            else:
                BaseFinetuning.freeze_module(module)

    @staticmethod
    def filter_on_optimizer(optimizer: Optimizer, params: Iterable[Parameter]) -> list[Parameter]:
        """``params`` minus those already in one of ``optimizer``'s param groups (warning about them)."""
        present = {id(p) for group in optimizer.param_groups for p in group["params"]}
        out: list[Parameter] = []
        removed: list[Parameter] = []
        for param in params:
            (removed if id(param) in present else out).append(param)
        if removed:
            rank_zero_warn(
                "The provided params to be frozen already exist within another group of this optimizer. Those"
                " parameters will be skipped.\nHINT: Did you init your optimizer in `configure_optimizer` as such:\n"
                f" {type(optimizer)}(filter(lambda p: p.requires_grad, self.parameters()), ...) "
            )
        return out

    @staticmethod
    def unfreeze_and_add_param_group(modules: _Modules, optimizer: Optimizer, lr: float | None = None,
                                     initial_denom_lr: float = 10.0, train_bn: bool = True) -> None:
        """Unfreeze ``modules`` and add their parameters to ``optimizer`` as a new param group.

        Args:
            modules: the modules to train from now on.
            optimizer: receives the new param group.
            lr: its learning rate; default: the first group's rate divided by ``initial_denom_lr``.
            initial_denom_lr: see ``lr``.
            train_bn: also train the BatchNorm layers of ``modules``.
        """
        BaseFinetuning.make_trainable(modules)
        params_lr = optimizer.param_groups[0]["lr"] if lr is None else float(lr)
        denom_lr = initial_denom_lr if lr is None else 1.0
        params = BaseFinetuning.filter_params(modules, train_bn=train_bn, requires_grad=True)
        new = BaseFinetuning.filter_on_optimizer(optimizer, params)
        if new:
            optimizer.add_param_group({"params": new, "lr": params_lr / denom_lr})

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        self.freeze_before_training(pl_module)
        if trainer.strategy.handles_gradient_accumulation:
            raise NotImplementedError(
                "The Finetuning callback does not support running with the DeepSpeed strategy. Choose a different"
                " strategy or disable the callback."
            )

    @staticmethod
    def _apply_mapping_to_param_groups(param_groups: list[dict[str, Any]], mapping: dict[Any, Any]) -> list[dict]:
        out = []
        for group in param_groups:
            state = {k: v for k, v in group.items() if k != "params"}
            state["params"] = [mapping[p] for p in group["params"]]
            out.append(state)
        return out

    def _store(self, pl_module: LightningModule, opt_idx: int, num_param_groups: int,
               current_param_groups: list[dict[str, Any]]) -> None:
        # param groups are saved by parameter name, so they can be rebuilt on a fresh model
        mapping = {p: n for n, p in pl_module.named_parameters()}
        if opt_idx not in self._internal_optimizer_metadata:
            self._internal_optimizer_metadata[opt_idx] = self._apply_mapping_to_param_groups(
                current_param_groups, mapping)
        elif num_param_groups != len(current_param_groups):
            self._internal_optimizer_metadata[opt_idx].extend(
                self._apply_mapping_to_param_groups(current_param_groups[num_param_groups:], mapping))

    def on_train_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        for opt_idx, optimizer in enumerate(trainer.optimizers):
            num_param_groups = len(optimizer.param_groups)
            self.finetune_function(pl_module, trainer.current_epoch, optimizer)
            self._store(pl_module, opt_idx, num_param_groups, optimizer.param_groups)

    def finetune_function(self, pl_module: LightningModule, epoch: int, optimizer: Optimizer) -> None:
        """Override: unfreeze what should train from ``epoch`` on."""
        raise NotImplementedError

    def freeze_before_training(self, pl_module: LightningModule) -> None:
        """Override: freeze what should not train at first."""
        raise NotImplementedError


class BackboneFinetuning(BaseFinetuning):
    """Train ``pl_module.backbone`` only from a given epoch, at a learning rate that then grows.

    Until ``unfreeze_backbone_at_epoch`` the backbone is frozen. At that epoch its parameters join
    the optimizer as a new param group with ``backbone_initial_lr`` (default: the current rate times
    ``backbone_initial_ratio_lr``). Each later epoch multiplies that rate by ``lambda_func(epoch + 1)``;
    with ``should_align`` it never exceeds the rate of the rest of the model.

    Example::

        trainer = Trainer(callbacks=[BackboneFinetuning(unfreeze_backbone_at_epoch=5, lambda_func=lambda e: 1.5)])

    Args:
        unfreeze_backbone_at_epoch: the epoch (0-based) at which the backbone starts training.
        lambda_func: ``epoch -> factor`` for the backbone learning rate after unfreezing.
        backbone_initial_ratio_lr: the backbone's initial rate relative to the current one.
        backbone_initial_lr: the backbone's initial rate (overrides the ratio).
        should_align: cap the backbone rate at the current rate of the first param group.
        initial_denom_lr: kept for compatibility (used when no initial rate is computed).
        train_bn: train the backbone's BatchNorm layers too (also while frozen).
        verbose: log both learning rates every epoch.
        rounding: decimals in those log lines.

    Raises:
        MisconfigurationException: at fit start when the module has no ``backbone`` ``nn.Module``.
    """

    def __init__(
        self,
        unfreeze_backbone_at_epoch: int = 10,
        lambda_func: Callable[[int], float] = multiplicative,
        backbone_initial_ratio_lr: float = 10e-2,
        backbone_initial_lr: float | None = None,
        should_align: bool = True,
        initial_denom_lr: float = 10.0,
        train_bn: bool = True,
        verbose: bool = False,
        rounding: int = 12,
    ) -> None:
        super().__init__()
        self.unfreeze_backbone_at_epoch = unfreeze_backbone_at_epoch
        self.lambda_func = lambda_func
        self.backbone_initial_ratio_lr = backbone_initial_ratio_lr
        self.backbone_initial_lr = backbone_initial_lr
        self.should_align = should_align
        self.initial_denom_lr = initial_denom_lr
        self.train_bn = train_bn
        self.verbose = verbose
        self.rounding = rounding
        self.previous_backbone_lr: float | None = None

    def state_dict(self) -> dict[str, Any]:
        return {"internal_optimizer_metadata": self._internal_optimizer_metadata,
                "previous_backbone_lr": self.previous_backbone_lr}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.previous_backbone_lr = state_dict["previous_backbone_lr"]
        super().load_state_dict(state_dict)

    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not isinstance(getattr(pl_module, "backbone", None), Module):
            raise MisconfigurationException("The LightningModule should have a nn.Module `backbone` attribute")
        super().on_fit_start(trainer, pl_module)

    def freeze_before_training(self, pl_module: LightningModule) -> None:
        self.freeze(pl_module.backbone, train_bn=self.train_bn)

    def finetune_function(self, pl_module: LightningModule, epoch: int, optimizer: Optimizer) -> None:
        current_lr = optimizer.param_groups[0]["lr"]
        if epoch == self.unfreeze_backbone_at_epoch:
            initial = (self.backbone_initial_lr if self.backbone_initial_lr is not None
                       else current_lr * self.backbone_initial_ratio_lr)
            self.previous_backbone_lr = initial
            self.unfreeze_and_add_param_group(pl_module.backbone, optimizer, initial, train_bn=self.train_bn,
                                              initial_denom_lr=self.initial_denom_lr)
            backbone_lr = initial
        elif epoch > self.unfreeze_backbone_at_epoch and self.previous_backbone_lr is not None:
            backbone_lr = self.lambda_func(epoch + 1) * self.previous_backbone_lr
            if self.should_align and backbone_lr > current_lr:
                backbone_lr = current_lr
            optimizer.param_groups[-1]["lr"] = backbone_lr
            self.previous_backbone_lr = backbone_lr
        else:
            return
        if self.verbose:
            log.info(f"Current lr: {round(current_lr, self.rounding)}, Backbone lr: {round(backbone_lr, self.rounding)}")
