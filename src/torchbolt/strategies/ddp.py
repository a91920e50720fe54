"""``DDPStrategy``: ``torch.nn.parallel.DistributedDataParallel``, one process per device."""

from __future__ import annotations

from collections.abc import Callable, Generator
from contextlib import contextmanager
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from torch.optim import Optimizer

from torchbolt.accelerators.accelerator import Accelerator
from torchbolt.plugins.environments import ClusterEnvironment
from torchbolt.plugins.io.checkpoint_io import CheckpointIO
from torchbolt.plugins.layer_sync import LayerSync, TorchSyncBatchNorm
from torchbolt.plugins.precision.precision import Precision
from torchbolt.strategies.parallel import ParallelStrategy, _ForwardRedirection, _StartMethod
from torchbolt.strategies.registry import register_strategy
from torchbolt.utilities.exceptions import MisconfigurationException

if TYPE_CHECKING:
    from torchbolt.core.module import LightningModule

_STEPS = ("training_step", "validation_step", "test_step", "predict_step")


class DDPStrategy(ParallelStrategy):
    """Data parallel training: each process holds a full replica; gradients are averaged in backward.

    Gradient synchronization is skipped on accumulation batches (``no_sync``) and happens once per
    optimizer step. The default launcher runs the user's script again for each extra local rank,
    so ``Trainer(strategy="ddp", devices=4)`` works from any script; under ``torchrun``, ``srun`` or
    ``mpirun`` the processes are already there and nothing is started.

    Args:
        find_unused_parameters: let DDP handle parameters that get no gradient in a step (slower).
        static_graph: the set of used parameters never changes between steps (faster, see DDP docs).
        gradient_as_bucket_view: gradients are views into the communication buckets (less memory).
        process_group_backend: ``"gloo"``/``"nccl"`` (default: nccl on CUDA, gloo otherwise).
        timeout: how long a collective may wait for the other ranks (default 5 min gloo, 10 min nccl).
        start_method: ``"popen"`` (re-run the script; default), ``"spawn"``, ``"fork"`` or ``"forkserver"``.
        ddp_comm_state, ddp_comm_hook: a DDP communication hook and its state (e.g. gradient compression).
        **kwargs: more ``DistributedDataParallel`` arguments (``broadcast_buffers``, ``bucket_cap_mb``, ...).

    Example::

        trainer = Trainer(accelerator="gpu", devices=4, strategy=DDPStrategy(find_unused_parameters=True))
    """

    strategy_name = "ddp"

    def __init__(
        self,
        accelerator: Accelerator | None = None,
        parallel_devices: list[torch.device] | None = None,
        cluster_environment: ClusterEnvironment | None = None,
        checkpoint_io: CheckpointIO | None = None,
        precision_plugin: Precision | None = None,
        ddp_comm_state: object | None = None,
        ddp_comm_hook: Callable | None = None,
        process_group_backend: str | None = None,
        timeout: timedelta | None = None,
        start_method: _StartMethod = "popen",
        **kwargs: Any,
    ) -> None:
        super().__init__(accelerator=accelerator, parallel_devices=parallel_devices,
                         cluster_environment=cluster_environment, checkpoint_io=checkpoint_io,
                         precision_plugin=precision_plugin, process_group_backend=process_group_backend,
                         timeout=timeout, start_method=start_method)
        self._ddp_kwargs = kwargs
        self._ddp_comm_state = ddp_comm_state
        self._ddp_comm_hook = ddp_comm_hook
        self._applied_layer_sync: LayerSync | None = None  # what `teardown` reverts

    @property
    def _ddp_model(self) -> DistributedDataParallel | None:
        return self._model if isinstance(self._model, DistributedDataParallel) else None

    # ------------------------------------------------------------------ setup
    def setup(self, module: LightningModule, setup_optimizers: Callable[[], None] | None) -> None:
        """Move the module, convert BatchNorm (``sync_batchnorm``), wrap it in DDP when fitting, then
        create the optimizers (they see the same parameters the wrapper synchronizes)."""
        self.precision_plugin.convert_module(module)
        self.model_to_device()
        fitting = setup_optimizers is not None
        if fitting and self._layer_sync is not None:
            if self.root_device.type == "cpu" and isinstance(self._layer_sync, TorchSyncBatchNorm):
                raise MisconfigurationException(
                    "`Trainer(sync_batchnorm=True)` (`TorchSyncBatchNorm`) needs GPUs: `torch.nn.SyncBatchNorm`"
                    " does not run on the CPU. Remove `sync_batchnorm=True` for CPU runs (each process then"
                    " keeps its own batch statistics), or pass your own `LayerSync` plug-in."
                )
            self._applied_layer_sync = self._layer_sync
            self._layer_sync.apply(module)
        if fitting:
            self._model = self._wrap(module)
            setup_optimizers()  # type: ignore[misc]

    def _wrap(self, module: nn.Module) -> DistributedDataParallel:
        device = self.root_device
        device_ids = [device.index if device.index is not None else 0] if device.type == "cuda" else None
        model = DistributedDataParallel(module, device_ids=device_ids, **self._ddp_kwargs)
        if self._ddp_comm_hook is not None:
            model.register_comm_hook(state=self._ddp_comm_state, hook=self._ddp_comm_hook)
        return model

    # ------------------------------------------------------------------ steps
    def _call_step(self, name: str, args: tuple, kwargs: dict[str, Any]) -> Any:
        ddp = self._ddp_model
        module = self._lightning_module
        assert module is not None
        if ddp is None or name not in _STEPS:
            return getattr(module, name)(*args, **kwargs)
        if module.automatic_optimization or name != "training_step":
            return _ForwardRedirection()(ddp, module, name, args, kwargs)
        # manual optimization: the user may run several forwards before backward; prepare the reducer at
        # backward time instead (see `backward`)

        def stop_reducer_prep() -> None:
            ddp.require_backward_grad_sync = False

        try:
            return _ForwardRedirection()(ddp, module, name, args, kwargs, after_inner=stop_reducer_prep)
        finally:
            ddp.require_backward_grad_sync = True

    def backward(self, closure_loss: Tensor, optimizer: Optimizer | None, *args: Any, **kwargs: Any) -> Tensor:
        ddp = self._ddp_model
        module = self._lightning_module
        if ddp is not None and module is not None and not module.automatic_optimization:
            _prepare_for_backward(ddp, closure_loss)
        return super().backward(closure_loss, optimizer, *args, **kwargs)

    @contextmanager
    def no_backward_sync(self, enabled: bool) -> Generator[None, None, None]:
        """Accumulate gradients locally (``DistributedDataParallel.no_sync``) while ``enabled``."""
        ddp = self._ddp_model
        if not enabled or ddp is None:
            yield
            return
        with ddp.no_sync():
            yield

    def teardown(self) -> None:
        if self._applied_layer_sync is not None and self._lightning_module is not None:
            self._applied_layer_sync.revert(self._lightning_module)
        self._applied_layer_sync = None
        self._model = None  # unwrap: the next entry point (or `save_checkpoint`) sees the plain module
        super().teardown()


def _prepare_for_backward(model: DistributedDataParallel, output: Any) -> None:
    """Arm DDP's reducer for a backward pass of ``output`` (manual optimization prepares it here, not in forward)."""
    if not (torch.is_grad_enabled() and model.require_backward_grad_sync):
        model.require_forward_param_sync = False
        return
    model.require_forward_param_sync = True
    tensors: list[Tensor] = []
    if model.find_unused_parameters and not model.static_graph:
        from torch.nn.parallel.distributed import _find_tensors

        tensors = list(_find_tensors(output))
    reducer = model.reducer
    reducer._rebuild_buckets()
    reducer.prepare_for_backward(tensors)


def _register() -> None:
    variants: dict[str, _StartMethod] = {"ddp": "popen", "ddp_spawn": "spawn", "ddp_fork": "fork",
                                         "ddp_notebook": "fork"}
    for name, method in variants.items():
        register_strategy(name, DDPStrategy, f"DistributedDataParallel ({method})", start_method=method)
        for value in (False, True):
            register_strategy(f"{name}_find_unused_parameters_{str(value).lower()}", DDPStrategy,
                              f"DistributedDataParallel ({method}), find_unused_parameters={value}",
                              start_method=method, find_unused_parameters=value)


_register()
