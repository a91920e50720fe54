"""``LightningModule``: the model, its steps, its optimizers and the hooks the Trainer calls."""

from __future__ import annotations

import builtins
import numbers
from collections.abc import Callable, Generator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Literal, Union

import torch
from torch import Tensor, nn
from torch.optim import Optimizer
from typing_extensions import Self

from torchbolt.core._fabric import _TrainerFabricShim, clip_gradients_through_fabric, log_dict_through_fabric
from torchbolt.core.hooks import CheckpointHooks, DataHooks, ModelHooks
from torchbolt.core.mixins.hparams_mixin import HyperparametersMixin
from torchbolt.core.optimizer import LightningOptimizer
from torchbolt.utilities.compile import register_compiled_key_hooks
from torchbolt.utilities.exceptions import MisconfigurationException
from torchbolt.utilities.rank_zero import WarningCache, rank_zero_warn

if TYPE_CHECKING:
    from torch.distributed.device_mesh import DeviceMesh

    from torchbolt.loggers.logger import Logger
    from torchbolt.trainer.trainer import Trainer

_warning_cache = WarningCache()

#: how ``self.log`` records a value on a module attached to a Trainer that is not running it; set by
#: ``torchbolt.trainer.logging`` when it is imported (the core layer does not import the trainer layer)
_log_without_run: Callable[..., None] | None = None

STEP_OUTPUT = Union[Tensor, Mapping[str, Any], None]
_PATH = Union[str, Path]
# what ``LightningModule.optimizers()`` can return
MODULE_OPTIMIZERS = Union[Optimizer, LightningOptimizer, list[Optimizer], list[LightningOptimizer]]


class LightningModule(HyperparametersMixin, ModelHooks, DataHooks, CheckpointHooks, nn.Module):
    """An ``nn.Module`` that also describes how it is trained, validated, tested and used.

    Override ``training_step`` and ``configure_optimizers`` (and ``validation_step``, ``test_step``,
    ``predict_step`` as needed); the :class:`~torchbolt.Trainer` runs the loops.

    Example::

        class LitModel(LightningModule):
            def __init__(self):
                super().__init__()
                self.layer = nn.Linear(28 * 28, 10)

            def forward(self, x):
                return self.layer(x.flatten(1))

            def training_step(self, batch, batch_idx):
                x, y = batch
                loss = F.cross_entropy(self(x), y)
                self.log("train_loss", loss)
                return loss

            def configure_optimizers(self):
                return torch.optim.Adam(self.parameters(), lr=1e-3)
    """

    # set while TorchScript compiles/traces the module: its property walk must not raise
    _jit_is_scripting: bool = False

    # where checkpoints keep the constructor arguments (Lightning's key names)
    CHECKPOINT_HYPER_PARAMS_KEY = "hyper_parameters"
    CHECKPOINT_HYPER_PARAMS_NAME = "hparams_name"
    CHECKPOINT_HYPER_PARAMS_TYPE = "hparams_type"

    # names TorchScript must not try to compile
    __jit_unused_properties__: list[str] = [
        "example_input_array", "on_gpu", "current_epoch", "global_step", "global_rank", "local_rank",
        "logger", "loggers", "automatic_optimization", "trainer", "device", "dtype", "hparams", "hparams_initial",
        "strict_loading", "device_mesh", "fabric",
    ]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # positional/keyword arguments are accepted (and ignored) so subclasses may forward theirs
        super().__init__()
        self._trainer: Trainer | None = None
        # set by Lightning Fabric's `setup` (it looks for `_fabric`): see `torchbolt.core._fabric`
        self._fabric = None
        self._fabric_optimizers: list[Any] = []
        self._example_input_array: Any = None
        self._automatic_optimization: bool = True
        self._strict_loading: bool | None = None
        self._current_fx_name: str | None = None
        self._current_dataloader_idx: int | None = None
        #: ``requires_grad`` of the parameters :meth:`toggle_optimizer` switched off (Lightning's name), empty
        #: when nothing is toggled
        self._param_requires_grad_state: dict[Tensor, bool] = {}
        self._device: torch.device = torch.device("cpu")
        self._dtype: torch.dtype = torch.get_default_dtype()
        # set by `ModelParallelStrategy.setup_environment` so `configure_model` can parallelize on it
        self._device_mesh: DeviceMesh | None = None
        # checkpoints of a module with `torch.compile`d submodules carry no `_orig_mod.` in their keys
        register_compiled_key_hooks(self)

    # ------------------------------------------------------------------ properties
    @property
    def trainer(self) -> Trainer:
        """The Trainer running this module.

        Raises:
            RuntimeError: when the module is not attached to a Trainer.
        """
        if self._fabric is not None:  # driven by Fabric: Trainer attributes are read from it
            return _TrainerFabricShim(self._fabric)  # type: ignore[return-value,unused-ignore]
        if self._trainer is None and not LightningModule._jit_is_scripting:
            raise RuntimeError(f"{type(self).__qualname__} is not attached to a `Trainer`.")
        return self._trainer  # type: ignore[return-value]

    @trainer.setter
    def trainer(self, trainer: Trainer | None) -> None:
        for child in self.modules():
            if isinstance(child, LightningModule):
                child.__dict__["_trainer"] = trainer

    @property
    def fabric(self) -> Any:
        """The Lightning Fabric object driving this module (set by ``fabric.setup(module)``), or ``None``.

        While set, ``self.trainer`` reads attributes from it, and ``log``/``log_dict``, ``logger(s)``,
        ``optimizers``, ``manual_backward``/``backward`` and ``clip_gradients`` go through it.
        """
        return self._fabric

    @fabric.setter
    def fabric(self, fabric: Any) -> None:
        import weakref

        # a weak reference: the module must not keep the Fabric object (and what it holds) alive
        if fabric is not None and not isinstance(fabric, weakref.ProxyTypes):
            fabric = weakref.proxy(fabric)
        for child in self.modules():
            if isinstance(child, LightningModule):
                child.__dict__["_fabric"] = fabric

    @property
    def example_input_array(self) -> Any:
        """An example input for ``forward``: used by the model summary (shapes) and ``log_graph``."""
        return self._example_input_array

    @example_input_array.setter
    def example_input_array(self, example: Any) -> None:
        self._example_input_array = example

    @property
    def automatic_optimization(self) -> bool:
        """``False`` to call ``optimizer.step()`` yourself in ``training_step`` (GANs, RL, ...)."""
        return self._automatic_optimization

    @automatic_optimization.setter
    def automatic_optimization(self, automatic_optimization: bool) -> None:
        self._automatic_optimization = automatic_optimization

    @property
    def strict_loading(self) -> bool:
        """Whether ``load_state_dict`` from a checkpoint must match every key."""
        return True if self._strict_loading is None else self._strict_loading

    @strict_loading.setter
    def strict_loading(self, strict: bool) -> None:
        self._strict_loading = strict

    @property
    def current_epoch(self) -> int:
        """The number of completed epochs (0 during the first epoch, or without a Trainer)."""
        return self._trainer.current_epoch if self._trainer is not None else 0

    @property
    def global_step(self) -> int:
        """The number of optimizer steps taken (0 without a Trainer)."""
        return self._trainer.global_step if self._trainer is not None else 0

    @property
    def global_rank(self) -> int:
        return self._trainer.global_rank if self._trainer is not None else 0

    @property
    def local_rank(self) -> int:
        return self._trainer.local_rank if self._trainer is not None else 0

    @property
    def on_gpu(self) -> bool:
        return self.device.type == "cuda"

    @property
    def logger(self) -> Logger | None:
        """The first logger of the Trainer (or of Fabric, see ``fabric``), or ``None``."""
        if self._fabric is not None:
            return self._fabric.logger
        return self._trainer.logger if self._trainer is not None else None

    @property
    def loggers(self) -> list[Logger]:
        """All loggers of the Trainer (or of Fabric, see ``fabric``)."""
        if self._fabric is not None:
            return self._fabric.loggers  # type: ignore[no-any-return,unused-ignore]
        return self._trainer.loggers if self._trainer is not None else []

    @property
    def device(self) -> torch.device:
        """The device the module was last moved to."""
        return self._device

    @property
    def device_mesh(self) -> DeviceMesh | None:
        """The device mesh of ``ModelParallelStrategy`` (``None`` under any other strategy).

        Its dimensions are ``("data_parallel", "tensor_parallel")``; ``configure_model`` parallelizes the
        layers on it."""
        return self.__dict__.get("_device_mesh")

    @property
    def dtype(self) -> torch.dtype:
        """The floating dtype the module was last cast to."""
        return self._dtype

    @dtype.setter
    def dtype(self, dtype: torch.dtype) -> None:
        self._dtype = dtype

    # track device and dtype on moves, so `self.device` costs nothing to read
    def to(self, *args: Any, **kwargs: Any) -> LightningModule:
        device, dtype = torch._C._nn._parse_to(*args, **kwargs)[:2]
        self._update_properties(device=device, dtype=dtype)
        return super().to(*args, **kwargs)

    def cuda(self, device: torch.device | int | None = None) -> LightningModule:
        if device is None:
            device = torch.device("cuda", torch.cuda.current_device())
        elif isinstance(device, int):
            device = torch.device("cuda", index=device)
        self._update_properties(device=device)
        return super().cuda(device=device)

    def cpu(self) -> LightningModule:
        self._update_properties(device=torch.device("cpu"))
        return super().cpu()

    def type(self, dst_type: str | torch.dtype) -> LightningModule:
        self._update_properties(dtype=dst_type if isinstance(dst_type, torch.dtype) else None)
        return super().type(dst_type=dst_type)

    def float(self) -> LightningModule:
        self._update_properties(dtype=torch.float)
        return super().float()

    def double(self) -> LightningModule:
        self._update_properties(dtype=torch.double)
        return super().double()

    def half(self) -> LightningModule:
        self._update_properties(dtype=torch.half)
        return super().half()

    def bfloat16(self) -> LightningModule:
        self._update_properties(dtype=torch.bfloat16)
        return super().bfloat16()

    def _update_properties(self, device: torch.device | None = None, dtype: torch.dtype | None = None) -> None:
        for module in self.modules():
            if isinstance(module, LightningModule):
                if device is not None:
                    if device.type == "cuda" and device.index is None:
                        device = torch.device("cuda", torch.cuda.current_device())
                    module.__dict__["_device"] = device
                if dtype is not None and dtype.is_floating_point:
                    module.__dict__["_dtype"] = dtype

    # ------------------------------------------------------------------ steps
    def forward(self, *args: Any, **kwargs: Any) -> Any:
        """Same as ``nn.Module.forward``: use it for inference."""
        return super().forward(*args, **kwargs)

    def training_step(self, *args: Any, **kwargs: Any) -> STEP_OUTPUT:
        """Compute and return the training loss (a scalar tensor, or a dict with a ``"loss"`` key).

        Returning ``None`` skips the batch (no backward, no optimizer step). Under manual
        optimization the return value is not used for optimization.
        """
        rank_zero_warn("`training_step` must be implemented to be used with the torchbolt Trainer")
        return None

    def validation_step(self, *args: Any, **kwargs: Any) -> STEP_OUTPUT:
        """Run one validation batch; log metrics with ``self.log``.

        Takes ``(batch, batch_idx)`` and, when there are several validation loaders, ``dataloader_idx``.
        """

    def test_step(self, *args: Any, **kwargs: Any) -> STEP_OUTPUT:
        """Run one test batch; log metrics with ``self.log``."""

    def predict_step(self, *args: Any, **kwargs: Any) -> Any:
        """Return the prediction for one batch. By default: ``self(batch)``."""
        batch = kwargs.get("batch", args[0] if args else None)
        return self(batch)

    def configure_callbacks(self) -> Any:
        """Return callbacks (a callback or a list) that the Trainer adds to its own.

        A returned callback replaces a Trainer callback of the same type.
        """
        return []

    def configure_optimizers(self) -> Any:
        """Return the optimizer(s) and optionally LR scheduler(s).

        Any of these forms:

        - an optimizer;
        - a list or tuple of optimizers (manual optimization);
        - ``([optimizers], [schedulers])``, the schedulers possibly as config dicts;
        - ``{"optimizer": opt, "lr_scheduler": scheduler_or_config, "monitor": "val_loss"}``;
        - a list of such dicts (manual optimization).

        A scheduler config dict has ``scheduler`` and optionally ``interval`` (``"epoch"`` or
        ``"step"``), ``frequency``, ``monitor``, ``strict`` and ``name``.
        """
        rank_zero_warn("`configure_optimizers` must be implemented to be used with the torchbolt Trainer")
        return None

    # ------------------------------------------------------------------ logging
    def log(
        self,
        name: str,
        value: Any,
        prog_bar: bool = False,
        logger: bool | None = None,
        on_step: bool | None = None,
        on_epoch: bool | None = None,
        reduce_fx: str | Callable[..., Any] = "mean",
        enable_graph: bool = False,
        sync_dist: bool = False,
        sync_dist_group: Any | None = None,
        add_dataloader_idx: bool = True,
        batch_size: int | None = None,
        metric_attribute: str | None = None,
        rank_zero_only: bool = False,
    ) -> None:
        """Log a scalar (tensor, number or torchmetrics ``Metric``) for loggers, callbacks and the progress bar.

        Defaults depend on where it is called: in ``training_step`` and the train batch hooks
        ``on_step=True, on_epoch=False``; in validation/test steps and all epoch-level hooks
        ``on_step=False, on_epoch=True``. With both, the keys ``name_step`` and ``name_epoch`` are
        logged. Epoch values are the batch-size-weighted mean of the step values (or ``reduce_fx``).
        Values stay on the device; nothing is synchronized with the host until a logger flushes.

        Args:
            name: the key.
            value: a single-element tensor, a Python number or a torchmetrics ``Metric``.
            prog_bar: show it in the progress bar.
            logger: send it to the loggers (default ``True``).
            on_step: log the value of this step.
            on_epoch: accumulate and log the epoch's reduction.
            reduce_fx: ``"mean"``, ``"sum"``, ``"max"``, ``"min"`` or the torch function.
            enable_graph: keep the autograd graph (default detaches).
            sync_dist: reduce across processes before use.
            sync_dist_group: the process group of the reduction.
            add_dataloader_idx: suffix ``/dataloader_idx_N`` when there are several eval loaders.
            batch_size: the batch size for the weighted mean (default: inferred from the batch).
            metric_attribute: the module attribute holding a ``Metric`` (for checkpoint restore).
            rank_zero_only: the value is only logged from rank 0 (never synchronized).

        A module attached to a Trainer that is not running it (``model.trainer = trainer``, with
        ``trainer.state.stage`` and ``model._current_fx_name`` set by hand) logs straight into the
        Trainer's ``callback_metrics`` (epoch-level values, as at the end of an epoch).

        Raises:
            MisconfigurationException: in a hook that cannot log, with ``on_step=False, on_epoch=False``, for an
                unsupported ``reduce_fx``, for a ``Metric`` that is not an attribute of the module (unless
                ``metric_attribute`` names it), or in predict.
            ValueError: for a value that is not a number, a single-element tensor or a ``Metric`` (``None``,
                strings, lists, tuples, dicts; a tensor with more than one element).
        """
        if self._fabric is not None:
            log_dict_through_fabric(self._fabric, {name: value}, logger)
            return
        trainer = self._trainer
        if trainer is None:
            _warning_cache.warn(
                "You are trying to `self.log()` but the `self.trainer` reference is not registered on the model yet."
                " This is most likely because the model hasn't been passed to the `Trainer`"
            )
            return
        ctx = trainer.run_context
        if ctx.metrics.barebones if ctx is not None else trainer.barebones:
            # as in Lightning: a warning and nothing logged, so code shared with logging runs keeps working
            rank_zero_warn(
                f"`self.log({name!r}, ...)` was called, but `Trainer(barebones=True)` is configured, so nothing is"
                " logged. Logging can be re-enabled by setting `Trainer(barebones=False)`."
            )
            return
        fx = self._current_fx_name
        if ctx is None:  # attached by hand, no run has started (a step method driven by a test, say)
            if _log_without_run is None:  # unreachable with a torchbolt Trainer, whose module sets it
                raise MisconfigurationException(
                    f"`self.log({name!r}, ...)` was called outside of a running loop: the module is attached to a"
                    " Trainer that is not running it."
                )
            _log_without_run(trainer, fx, name, value, prog_bar, logger, on_step, on_epoch, reduce_fx, batch_size)
            return
        sink = ctx.metrics
        results = sink.results
        if results is None or (logger and not sink.loggers):
            # no loop collecting, or a warning to give: the sink says what is wrong
            sink.log(fx, name, value, prog_bar, logger, on_step, on_epoch, reduce_fx, enable_graph, sync_dist,
                     sync_dist_group, add_dataloader_idx, batch_size, rank_zero_only, ctx.fn, metric_attribute)
            return
        # the per-step path: straight into the running loop's collection (the sink's checks all pass here)
        results.log(fx, name, value, prog_bar, logger, on_step, on_epoch, reduce_fx, enable_graph, sync_dist,
                    sync_dist_group, add_dataloader_idx, batch_size, rank_zero_only, metric_attribute)

    def log_dict(
        self,
        dictionary: Mapping[str, Any],
        prog_bar: bool = False,
        logger: bool | None = None,
        on_step: bool | None = None,
        on_epoch: bool | None = None,
        reduce_fx: str | Callable[..., Any] = "mean",
        enable_graph: bool = False,
        sync_dist: bool = False,
        sync_dist_group: Any | None = None,
        add_dataloader_idx: bool = True,
        batch_size: int | None = None,
        rank_zero_only: bool = False,
    ) -> None:
        """Log every entry of ``dictionary`` with the same options as :meth:`log`.

        A torchmetrics ``MetricCollection`` can be passed directly.
        """
        if self._fabric is not None:
            log_dict_through_fabric(self._fabric, dictionary, logger)
            return
        if hasattr(dictionary, "_enable_compute_groups"):
            # a torchmetrics MetricCollection: keys with its prefix/postfix; with compute groups, the members
            # of a group share state by reference, which copying would break
            if dictionary._enable_compute_groups:
                items = dictionary.items(keep_base=False, copy_state=False)  # type: ignore[call-arg]
            else:
                items = dictionary.items(keep_base=False)  # type: ignore[call-arg]
        else:
            items = dictionary.items()
        for name, value in items:
            self.log(
                name=name, value=value, prog_bar=prog_bar, logger=logger, on_step=on_step, on_epoch=on_epoch,
                reduce_fx=reduce_fx, enable_graph=enable_graph, sync_dist=sync_dist,
                sync_dist_group=sync_dist_group, add_dataloader_idx=add_dataloader_idx, batch_size=batch_size,
                rank_zero_only=rank_zero_only,
            )

    def print(self, *args: Any, **kwargs: Any) -> None:
        """``print`` from the global-zero process only, without breaking the progress bar."""
        trainer = self._trainer
        if trainer is None:
            print(*args, **kwargs)
            return
        if trainer.is_global_zero:
            bar = trainer.progress_bar_callback
            if bar is not None and bar.is_enabled:
                bar.print(*args, **kwargs)
            else:
                print(*args, **kwargs)

    def all_gather(self, data: Any, group: Any | None = None, sync_grads: bool = False) -> Any:
        """Gather tensors (or collections of tensors) from every process; adds a leading world-size dim
        when there are several processes."""
        from torchbolt.utilities.apply_func import apply_to_collection

        strategy = self.trainer.strategy
        return apply_to_collection(data, (Tensor, numbers.Number), lambda t: strategy.all_gather(
            t if isinstance(t, Tensor) else torch.tensor(t, device=self.device), group=group, sync_grads=sync_grads))

    # ------------------------------------------------------------------ optimization
    def optimizers(self, use_pl_optimizer: bool = True) -> Any:
        """The optimizer(s) from ``configure_optimizers``: one, or a list when there are several.

        Under Fabric, the optimizers passed to ``fabric.setup`` (as Fabric wrapped them).
        """
        if self._fabric is not None:
            fabric_opts = list(self._fabric_optimizers)
            return fabric_opts[0] if len(fabric_opts) == 1 else fabric_opts
        trainer = self.trainer
        opts: list[Any] = list(trainer.strategy._lightning_optimizers if use_pl_optimizer else trainer.optimizers)
        if len(opts) == 1:
            return opts[0]
        return opts

    def lr_schedulers(self) -> Any:
        """The scheduler(s) from ``configure_optimizers``: ``None``, one, or a list."""
        configs = self.trainer.lr_scheduler_configs
        if not configs:
            return None
        schedulers = [c.scheduler for c in configs]
        return schedulers[0] if len(schedulers) == 1 else schedulers

    def manual_backward(self, loss: Tensor, *args: Any, **kwargs: Any) -> None:
        """Call instead of ``loss.backward()`` under manual optimization: applies precision scaling
        and calls the backward hooks.

        Raises:
            MisconfigurationException: under automatic optimization.
        """
        if self._fabric is not None:
            self._fabric.backward(loss, *args, **kwargs)
            return
        if self.automatic_optimization:
            raise MisconfigurationException(
                "`manual_backward` is only for manual optimization. Set `self.automatic_optimization = False`"
                " in your LightningModule, or return the loss from `training_step` instead."
            )
        ctx = self.trainer.run_context
        if ctx is None:
            raise MisconfigurationException("`manual_backward` can only be called while the Trainer runs `fit`.")
        ctx.manual_backward(loss, *args, **kwargs)

    def backward(self, loss: Tensor, *args: Any, **kwargs: Any) -> None:
        """Compute gradients of ``loss`` (through ``fabric.backward`` under Fabric). Override to customize
        (e.g. ``retain_graph=True``)."""
        if self._fabric is not None:
            self._fabric.backward(loss, *args, **kwargs)
            return
        loss.backward(*args, **kwargs)  # type: ignore[no-untyped-call]

    def toggle_optimizer(self, optimizer: Optimizer | LightningOptimizer) -> None:
        """Make only ``optimizer``'s parameters require gradients; :meth:`untoggle_optimizer` restores
        the others. Prevents dangling gradients when several optimizers share a graph."""
        target = optimizer.optimizer if isinstance(optimizer, LightningOptimizer) else optimizer
        saved: dict[Tensor, bool] = {}
        for opt in self.trainer.optimizers:
            for group in opt.param_groups:
                for param in group["params"]:
                    saved.setdefault(param, param.requires_grad)
                    param.requires_grad = False
        for group in target.param_groups:
            for param in group["params"]:
                param.requires_grad = saved[param]
        self.__dict__["_param_requires_grad_state"] = saved

    def untoggle_optimizer(self, optimizer: Optimizer | LightningOptimizer) -> None:
        """Restore ``requires_grad`` of the parameters :meth:`toggle_optimizer` switched off."""
        saved: dict[Tensor, bool] = self.__dict__.get("_param_requires_grad_state") or {}
        for opt in self.trainer.optimizers:
            for group in opt.param_groups:
                for param in group["params"]:
                    if param in saved:
                        param.requires_grad = saved[param]
        self.__dict__["_param_requires_grad_state"] = {}

    @contextmanager
    def toggled_optimizer(self, optimizer: Optimizer | LightningOptimizer) -> Generator[None, None, None]:
        """``toggle_optimizer`` on entry and ``untoggle_optimizer`` on exit."""
        self.toggle_optimizer(optimizer)
        try:
            yield
        finally:
            self.untoggle_optimizer(optimizer)

    def clip_gradients(
        self,
        optimizer: Optimizer,
        gradient_clip_val: int | builtins.float | None = None,
        gradient_clip_algorithm: str | None = None,
    ) -> None:
        """Clip the gradients of ``optimizer``'s parameters by norm (default) or value.

        Gradients are unscaled first under mixed precision.

        Raises:
            MisconfigurationException: for an unknown algorithm or a negative value.
        """
        if self._fabric is not None:
            clip_gradients_through_fabric(self._fabric, self, optimizer, gradient_clip_val, gradient_clip_algorithm)
            return
        if gradient_clip_val is None:
            gradient_clip_val = self.trainer.gradient_clip_val or 0.0
        elif self.trainer.gradient_clip_val is not None and self.trainer.gradient_clip_val != gradient_clip_val:
            raise MisconfigurationException(
                f"You have set `Trainer(gradient_clip_val={self.trainer.gradient_clip_val!r})` and have passed"
                f" `clip_gradients(gradient_clip_val={gradient_clip_val!r})`. Please use only one of them."
            )
        if gradient_clip_algorithm is None:
            gradient_clip_algorithm = self.trainer.gradient_clip_algorithm or "norm"
        else:
            gradient_clip_algorithm = gradient_clip_algorithm.lower()
            if (
                self.trainer.gradient_clip_algorithm is not None
                and self.trainer.gradient_clip_algorithm != gradient_clip_algorithm
            ):
                raise MisconfigurationException(
                    f"You have set `Trainer(gradient_clip_algorithm={self.trainer.gradient_clip_algorithm!r})` and"
                    f" have passed `clip_gradients(gradient_clip_algorithm={gradient_clip_algorithm!r})`."
                    " Please use only one of them."
                )
        if not isinstance(gradient_clip_val, (int, float)) or gradient_clip_val < 0:
            raise MisconfigurationException(
                f"`gradient_clip_val` must be a non-negative number, got {gradient_clip_val!r}."
            )
        if gradient_clip_algorithm not in ("norm", "value"):
            raise MisconfigurationException(
                f"`gradient_clip_algorithm` {gradient_clip_algorithm!r} is invalid. Allowed algorithms: 'norm', 'value'."
            )
        if gradient_clip_val == 0:
            return
        self.trainer.strategy.precision_plugin.clip_gradients(
            optimizer, float(gradient_clip_val), gradient_clip_algorithm
        )

    def configure_gradient_clipping(
        self,
        optimizer: Optimizer,
        gradient_clip_val: int | builtins.float | None = None,
        gradient_clip_algorithm: str | None = None,
    ) -> None:
        """Called before each optimizer step to clip gradients; by default applies the Trainer's settings.

        Override to clip differently, e.g. only after some epochs.
        """
        self.clip_gradients(
            optimizer, gradient_clip_val=gradient_clip_val, gradient_clip_algorithm=gradient_clip_algorithm
        )

    def lr_scheduler_step(self, scheduler: Any, metric: Any | None) -> None:
        """Step ``scheduler``; ``metric`` is the monitored value for plateau schedulers."""
        if metric is None:
            scheduler.step()
        else:
            scheduler.step(metric)

    def optimizer_step(
        self,
        epoch: int,
        batch_idx: int,
        optimizer: Optimizer | LightningOptimizer,
        optimizer_closure: Callable[[], Any] | None = None,
    ) -> None:
        """Step the optimizer. ``optimizer_closure`` runs ``training_step``, ``zero_grad`` and
        ``backward``: it must be called (``optimizer.step(closure=optimizer_closure)`` does).

        Example: learning-rate warm-up::

            def optimizer_step(self, epoch, batch_idx, optimizer, optimizer_closure):
                optimizer.step(closure=optimizer_closure)
                if self.trainer.global_step < 500:
                    for pg in optimizer.param_groups:
                        pg["lr"] = min(1.0, (self.trainer.global_step + 1) / 500) * self.hparams.lr
        """
        optimizer.step(closure=optimizer_closure)

    def optimizer_zero_grad(self, epoch: int, batch_idx: int, optimizer: Optimizer) -> None:
        """Zero the gradients (``set_to_none=True``). Override to change how."""
        optimizer.zero_grad()

    # ------------------------------------------------------------------ utilities
    def freeze(self) -> Self:
        """Stop gradients for every parameter and switch to eval mode; returns the module (for chaining)."""
        for param in self.parameters():
            param.requires_grad = False
        return self.eval()

    def unfreeze(self) -> Self:
        """Let every parameter require gradients again and switch to train mode; returns the module."""
        for param in self.parameters():
            param.requires_grad = True
        return self.train()

    def on_exception(self, exception: BaseException) -> None:
        """Called when fit/validate/test/predict raises (including ``KeyboardInterrupt``), before teardown."""

    @torch.no_grad()
    def to_onnx(self, file_path: _PATH | IO[bytes], input_sample: Any | None = None, **kwargs: Any) -> None:
        """Export to ONNX with ``torch.onnx.export``; ``input_sample`` defaults to ``example_input_array``.

        Raises:
            ValueError: when neither ``input_sample`` nor ``example_input_array`` is set.
        """
        mode = self.training
        if input_sample is None:
            if self.example_input_array is None:
                raise ValueError(
                    "Could not export to ONNX since neither `input_sample` nor"
                    " `model.example_input_array` attribute is set."
                )
            input_sample = self.example_input_array
        from torchbolt.utilities.apply_func import move_data_to_device

        input_sample = move_data_to_device(input_sample, self.device)
        if not isinstance(input_sample, tuple):
            input_sample = (input_sample,)
        kwargs.setdefault("dynamo", False)
        torch.onnx.export(self, input_sample, file_path, **kwargs)  # type: ignore[arg-type]
        self.train(mode)

    @torch.no_grad()
    def to_torchscript(
        self,
        file_path: _PATH | None = None,
        method: Literal["script", "trace"] = "script",
        example_inputs: Any | None = None,
        **kwargs: Any,
    ) -> torch.jit.ScriptModule:
        """Compile with ``torch.jit.script`` (default) or ``torch.jit.trace`` in eval mode; save when
        ``file_path`` is given.

        Raises:
            ValueError: for an unknown ``method``, or tracing without example inputs.
        """
        mode = self.training
        if method == "script":
            with _jit_is_scripting():
                module = torch.jit.script(self.eval(), **kwargs)
        elif method == "trace":
            if example_inputs is None:
                if self.example_input_array is None:
                    raise ValueError(
                        "Choosing method=`trace` requires either `example_inputs`"
                        " or `model.example_input_array` to be defined."
                    )
                example_inputs = self.example_input_array
            from torchbolt.utilities.apply_func import move_data_to_device

            example_inputs = move_data_to_device(example_inputs, self.device)
            with _jit_is_scripting():
                module = torch.jit.trace(func=self.eval(), example_inputs=example_inputs, **kwargs)  # type: ignore[no-untyped-call]
        else:
            raise ValueError(f"The 'method' parameter only supports 'script' or 'trace', but value given was: {method}")
        self.train(mode)
        if file_path is not None:
            torch.jit.save(module, str(file_path))
        return module  # type: ignore[no-any-return]

    @classmethod
    def load_from_checkpoint(
        cls,
        checkpoint_path: _PATH | IO[bytes],
        map_location: Any = None,
        hparams_file: _PATH | None = None,
        strict: bool | None = None,
        weights_only: bool | None = None,
        **kwargs: Any,
    ) -> Any:
        """Build the module from a checkpoint's saved hyperparameters and load its weights.

        Works with checkpoints written by torchbolt and by PyTorch Lightning 2.x.

        Args:
            checkpoint_path: a local path, an fsspec URL or a file-like object.
            map_location: as in ``torch.load`` (default: CPU).
            hparams_file: a ``hparams.yaml`` to read hyperparameters from instead (read with ``yaml.safe_load``).
            strict: require every state-dict key to match (default: ``strict_loading``).
            weights_only: ``None``/``True`` (default) reads tensors and plain data only, so loading can
                never run code; pass ``False`` only for a file you trust that holds other objects.
            kwargs: hyperparameters that override the saved ones.

        Raises:
            pickle.UnpicklingError: the file needs arbitrary unpickling (the message says how to trust it).
            CorruptCheckpointError: the file is truncated or not a checkpoint.

        Example::

            model = LitModel.load_from_checkpoint("lightning_logs/version_0/checkpoints/last.ckpt")
        """
        from torchbolt.core.saving import _load_from_checkpoint

        return _load_from_checkpoint(cls, checkpoint_path, map_location, hparams_file, strict, weights_only,
                                     **kwargs)

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_trainer"] = None
        state["_fabric"] = None  # a weak proxy (and not this process's business once pickled)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)  # type: ignore[no-untyped-call,unused-ignore]
        # modules pickled before these attributes existed
        self.__dict__.setdefault("_fabric", None)
        self.__dict__.setdefault("_fabric_optimizers", [])


@contextmanager
def _jit_is_scripting() -> Generator[None, None, None]:
    """TorchScript inspects every attribute; properties that need a Trainer must not raise meanwhile."""
    LightningModule._jit_is_scripting = True
    try:
        yield
    finally:
        LightningModule._jit_is_scripting = False
