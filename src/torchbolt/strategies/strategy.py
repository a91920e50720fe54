"""The ``Strategy`` interface: how a model is placed, wrapped, stepped and saved across processes.

The base class implements the single-process case; ``DDPStrategy``, ``FSDPStrategy``, ... override
what differs. A strategy owns its accelerator, precision plug-in and checkpoint I/O, and the
optimizers; it receives what it needs as arguments and never stores a reference to the Trainer.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Generator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import TYPE_CHECKING, Any, TypeVar

import torch
from torch import Tensor, nn
from torch.optim import Optimizer
from torch.utils.data import DataLoader

from torchbolt.accelerators.accelerator import Accelerator
from torchbolt.core.optimizer import LightningOptimizer, LRSchedulerConfig
from torchbolt.plugins.io.async_io import AsyncCheckpointIO
from torchbolt.plugins.io.checkpoint_io import _PATH, CheckpointIO
from torchbolt.plugins.io.torch_io import TorchCheckpointIO
from torchbolt.plugins.layer_sync import LayerSync, TorchSyncBatchNorm
from torchbolt.plugins.precision.precision import Precision
from torchbolt.utilities.apply_func import move_data_to_device

if TYPE_CHECKING:
    from torchbolt.core.module import LightningModule

T = TypeVar("T")


class Strategy(ABC):
    """Places the model and data on devices and runs backward / optimizer steps.

    Args:
        accelerator: the device kind (set by the Trainer when omitted).
        checkpoint_io: how checkpoints are written (default ``TorchCheckpointIO``).
        precision_plugin: the numeric precision (default fp32).
    """

    def __init__(
        self,
        accelerator: Accelerator | None = None,
        checkpoint_io: CheckpointIO | None = None,
        precision_plugin: Precision | None = None,
    ) -> None:
        self._accelerator: Accelerator | None = accelerator
        self._checkpoint_io: CheckpointIO | None = checkpoint_io
        self._precision_plugin: Precision | None = precision_plugin
        self._lightning_module: LightningModule | None = None
        self._model: nn.Module | None = None
        self._launcher: Any = None
        self._optimizers: list[Optimizer] = []
        self._lightning_optimizers: list[LightningOptimizer] = []
        self.lr_scheduler_configs: list[LRSchedulerConfig] = []
        # layers swapped for synchronized ones during fit (only distributed strategies act on it)
        self._layer_sync: LayerSync | None = None
        # set by `on_exception`: teardown then reports a background checkpoint error instead of raising it
        self._run_failed = False

    # ------------------------------------------------------------------ plug-ins
    @property
    def layer_sync(self) -> LayerSync | None:
        """The layer-synchronization plug-in (``Trainer(sync_batchnorm=True)`` gives ``TorchSyncBatchNorm``)."""
        return self._layer_sync

    @layer_sync.setter
    def layer_sync(self, plugin: LayerSync | None) -> None:
        self._layer_sync = plugin

    @property
    def sync_batchnorm(self) -> bool:
        """Whether BatchNorm layers are synchronized; setting ``True`` installs ``TorchSyncBatchNorm``."""
        return isinstance(self._layer_sync, TorchSyncBatchNorm)

    @sync_batchnorm.setter
    def sync_batchnorm(self, enabled: bool) -> None:
        if enabled and not isinstance(self._layer_sync, TorchSyncBatchNorm):
            self._layer_sync = TorchSyncBatchNorm()
        elif not enabled and isinstance(self._layer_sync, TorchSyncBatchNorm):
            self._layer_sync = None

    @property
    def accelerator(self) -> Accelerator | None:
        return self._accelerator

    @accelerator.setter
    def accelerator(self, accelerator: Accelerator) -> None:
        self._accelerator = accelerator

    @property
    def checkpoint_io(self) -> CheckpointIO:
        if self._checkpoint_io is None:
            self._checkpoint_io = TorchCheckpointIO()
        return self._checkpoint_io

    @checkpoint_io.setter
    def checkpoint_io(self, io: CheckpointIO) -> None:
        previous = self._checkpoint_io
        if isinstance(io, AsyncCheckpointIO) and io._requires_default and previous is not None and not isinstance(
                previous, AsyncCheckpointIO):
            io.checkpoint_io = previous  # `AsyncCheckpointIO()` writes with the plug-in this strategy had
        self._checkpoint_io = io

    @property
    def precision_plugin(self) -> Precision:
        if self._precision_plugin is None:
            self._precision_plugin = Precision()
        return self._precision_plugin

    @precision_plugin.setter
    def precision_plugin(self, precision_plugin: Precision) -> None:
        self._precision_plugin = precision_plugin

    @property
    def launcher(self) -> Any:
        """Starts the other processes of a multi-process run; ``None`` when there is nothing to start."""
        return self._launcher

    # ------------------------------------------------------------------ topology
    @property
    @abstractmethod
    def root_device(self) -> torch.device:
        """The device of this process's model replica."""

    @property
    @abstractmethod
    def is_global_zero(self) -> bool:
        """Whether this is the process that writes files and prints."""

    @property
    def global_rank(self) -> int:
        return 0

    @property
    def local_rank(self) -> int:
        return 0

    @property
    def node_rank(self) -> int:
        return 0

    @property
    def world_size(self) -> int:
        return 1

    @property
    def num_nodes(self) -> int:
        return 1

    @property
    def num_processes(self) -> int:
        return 1

    @property
    def distributed_sampler_kwargs(self) -> dict[str, Any] | None:
        """``num_replicas``/``rank`` for a ``DistributedSampler``; ``None`` when data is not split."""
        return None

    @property
    def handles_gradient_accumulation(self) -> bool:
        """Whether the strategy accumulates gradients itself (DeepSpeed)."""
        return False

    @property
    def restore_checkpoint_after_setup(self) -> bool:
        """Whether checkpoint weights are loaded after the model is wrapped (sharded strategies)."""
        return False

    @property
    def lightning_restore_optimizer(self) -> bool:
        return True

    # ------------------------------------------------------------------ model and optimizers
    @property
    def lightning_module(self) -> LightningModule | None:
        return self._lightning_module

    @property
    def model(self) -> nn.Module | None:
        """The module the loops call: the LightningModule or its wrapper (DDP, FSDP, ...)."""
        return self._model if self._model is not None else self._lightning_module

    @model.setter
    def model(self, new_model: nn.Module | None) -> None:
        self._model = new_model

    @property
    def lightning_optimizers(self) -> list[LightningOptimizer]:
        """The optimizers wrapped as ``LightningOptimizer`` (what ``self.optimizers()`` returns)."""
        return self._lightning_optimizers

    @property
    def optimizers(self) -> list[Optimizer]:
        return self._optimizers

    @optimizers.setter
    def optimizers(self, optimizers: list[Optimizer]) -> None:
        self._optimizers = optimizers
        self._lightning_optimizers = [LightningOptimizer._to_lightning_optimizer(opt) for opt in optimizers]

    def connect(self, model: LightningModule) -> None:
        """Attach the module this strategy trains."""
        self._lightning_module = model
        self._model = None
        self._run_failed = False
        if isinstance(self._checkpoint_io, AsyncCheckpointIO):
            self._checkpoint_io._start()  # asynchronous again after the previous run's teardown

    def setup_environment(self) -> None:
        """Prepare processes and devices before the model exists on them (process groups, ``set_device``)."""
        if self._accelerator is not None:
            self._accelerator.setup_device(self.root_device)

    def setup(self, module: LightningModule, setup_optimizers: Callable[[], None] | None) -> None:
        """Move and convert the module, wrap it, and create optimizers with ``setup_optimizers``."""
        module = self.precision_plugin.convert_module(module)  # type: ignore[assignment]
        self.model_to_device()
        if setup_optimizers is not None:
            setup_optimizers()

    def setup_optimizers(self, trainer: Any) -> None:
        """Create the optimizers and scheduler configs from the module's ``configure_optimizers`` (Lightning's
        public entry point; torchbolt's Trainer calls it through ``setup``). Only a fit creates them."""
        from torchbolt.core.optimizer import _init_optimizers_and_lr_schedulers
        from torchbolt.utilities.states import TrainerFn

        if trainer.state.fn != TrainerFn.FITTING or self._lightning_module is None:
            return
        self.optimizers, self.lr_scheduler_configs = _init_optimizers_and_lr_schedulers(self._lightning_module)

    def model_to_device(self) -> None:
        """Move the LightningModule to :attr:`root_device`."""
        assert self._lightning_module is not None
        self._lightning_module.to(self.root_device)

    @contextmanager
    def tensor_init_context(self, empty_init: bool | None = None) -> Generator[None, None, None]:
        """Create tensors on this strategy's device, in its precision's dtype (what ``Trainer.init_module``
        uses). ``empty_init`` is accepted for Lightning compatibility; tensors are always initialized."""
        device = self.root_device
        device_context = device if device.type in ("cpu", "cuda", "mps") else nullcontext()
        with device_context, self.precision_plugin.module_init_context():
            yield

    def model_sharded_context(self) -> AbstractContextManager:
        """Entered around ``configure_model`` (sharded strategies create layers already sharded)."""
        return nullcontext()

    def teardown(self) -> None:
        """Move the module back to the CPU and release devices and files.

        Waits for background checkpoint writes (``AsyncCheckpointIO``) and raises their error,
        unless the run already failed (:meth:`on_exception`): then the error is logged, so that the
        run's own exception is the one raised.
        """
        self.precision_plugin.teardown()
        if self._lightning_module is not None and self.root_device.type != "cpu":
            self._lightning_module.cpu()
        if self._accelerator is not None:
            self._accelerator.teardown()
        io = self.checkpoint_io
        if isinstance(io, AsyncCheckpointIO) and getattr(self, "_run_failed", False):
            io._close(report_only=True)
        else:
            io.teardown()

    # ------------------------------------------------------------------ steps
    def batch_to_device(self, batch: Any, device: torch.device | None = None, dataloader_idx: int = 0) -> Any:
        """Move ``batch`` to ``device`` (default :attr:`root_device`).

        The loops call the module's (or datamodule's) ``transfer_batch_to_device`` instead when it is
        overridden.
        """
        return move_data_to_device(batch, device or self.root_device)

    def training_step(self, *args: Any, **kwargs: Any) -> Any:
        """Run ``training_step`` under the precision context (through the wrapper when there is one)."""
        with self.precision_plugin.forward_context():
            return self._call_step("training_step", args, kwargs)

    def validation_step(self, *args: Any, **kwargs: Any) -> Any:
        with self.precision_plugin.forward_context():
            return self._call_step("validation_step", args, kwargs)

    def test_step(self, *args: Any, **kwargs: Any) -> Any:
        with self.precision_plugin.forward_context():
            return self._call_step("test_step", args, kwargs)

    def predict_step(self, *args: Any, **kwargs: Any) -> Any:
        with self.precision_plugin.forward_context():
            return self._call_step("predict_step", args, kwargs)

    def _call_step(self, name: str, args: tuple, kwargs: dict[str, Any]) -> Any:
        module = self._lightning_module
        assert module is not None
        return getattr(module, name)(*args, **kwargs)

    def backward(self, closure_loss: Tensor, optimizer: Optimizer | None, *args: Any, **kwargs: Any) -> Tensor:
        """Backward through the precision plug-in and the module's ``backward`` hook."""
        module = self._lightning_module
        precision = self.precision_plugin
        closure_loss = precision.pre_backward(closure_loss, module)
        precision.backward(closure_loss, module, optimizer, *args, **kwargs)
        return precision.post_backward(closure_loss, module)

    def optimizer_step(
        self,
        optimizer: Optimizer,
        closure: Callable[[], Any],
        on_gradients_ready: Callable[[Optimizer], None],
        **kwargs: Any,
    ) -> Any:
        """Step ``optimizer`` through the precision plug-in (see :meth:`Precision.optimizer_step`)."""
        return self.precision_plugin.optimizer_step(optimizer, closure, on_gradients_ready, **kwargs)

    @contextmanager
    def no_backward_sync(self, enabled: bool) -> Generator[None, None, None]:
        """Skip gradient synchronization inside the block when ``enabled`` (accumulation batches)."""
        yield

    def process_dataloader(self, dataloader: DataLoader) -> DataLoader:
        """Wrap or replace a dataloader (e.g. for TPU device loaders)."""
        return dataloader

    # ------------------------------------------------------------------ collectives
    def reduce(self, tensor: Tensor | Any, group: Any | None = None, reduce_op: str | None = "mean") -> Tensor | Any:
        """Reduce ``tensor`` across processes (identity on one process)."""
        return tensor

    def reduce_fn(self, tensor: Tensor, group: Any, op: str) -> Tensor:
        """``reduce`` with positional arguments: what ``self.log(..., sync_dist=True)`` reductions call."""
        return self.reduce(tensor, group=group, reduce_op=op)

    def all_gather(self, tensor: Tensor, group: Any | None = None, sync_grads: bool = False) -> Tensor:
        """Gather ``tensor`` from every process (identity on one process)."""
        return tensor

    def broadcast(self, obj: T, src: int = 0) -> T:
        """``obj`` from process ``src`` on every process."""
        return obj

    def gather_object(self, obj: Any, dst: int = 0) -> list[Any] | None:
        """Every process's picklable ``obj`` in a list by global rank on process ``dst``, ``None`` on the others.

        ``[obj]`` on one process. Every process must call it.
        """
        return [obj]

    def barrier(self, name: str | None = None) -> None:
        """Wait until every process reaches this point."""

    def reduce_boolean_decision(self, decision: bool, all: bool = True) -> bool:
        """Combine a decision across processes: all must agree (``all=True``) or any suffices."""
        return decision

    def exchange_flags(self, flags: int) -> int:
        """Agree on small bit flags (e.g. "a signal arrived") without blocking the loop.

        Returns the OR of every process's flags as passed to the *previous* call (so all processes
        see the same value at the same call); on one process, ``flags`` itself.
        """
        return flags

    def finish_flag_exchange(self, failed: bool = False) -> None:
        """Complete (or, after a failure, drop) the exchange :meth:`exchange_flags` left in flight."""

    def check_num_batches(self, num_batches: int | float, stage: str) -> None:
        """Raise when processes would run different numbers of ``stage`` batches (no-op on one process)."""

    def even_batches(self, loader: Any, num_batches: int | float) -> Any:
        """``loader``, made to stop on every process together when it has no length (identity on one process)."""
        return loader

    # ------------------------------------------------------------------ checkpoints
    def lightning_module_state_dict(self) -> dict[str, Any]:
        """The module's full state dict (gathered on rank 0 for sharded strategies)."""
        assert self._lightning_module is not None
        return self._lightning_module.state_dict()

    def optimizer_state(self, optimizer: Optimizer) -> dict[str, Any]:
        """The optimizer's full state dict."""
        if isinstance(optimizer, LightningOptimizer):
            optimizer = optimizer.optimizer
        return optimizer.state_dict()

    def load_model_state_dict(self, checkpoint: dict[str, Any], strict: bool = True) -> None:
        """Load the module's weights from ``checkpoint["state_dict"]``.

        Raises:
            KeyError: when the checkpoint has no ``state_dict`` (strategies with their own format override this).
        """
        assert self._lightning_module is not None
        if "state_dict" not in checkpoint:
            raise KeyError("state_dict")
        self._lightning_module.load_state_dict(checkpoint["state_dict"], strict=strict)

    def load_optimizer_state_dict(self, checkpoint: dict[str, Any]) -> None:
        for optimizer, state in zip(self.optimizers, checkpoint.get("optimizer_states", [])):
            optimizer.load_state_dict(state)

    def save_checkpoint(self, checkpoint: dict[str, Any], filepath: _PATH, storage_options: Any | None = None) -> None:
        """Write ``checkpoint`` from the global-zero process only."""
        if self.is_global_zero:
            self.checkpoint_io.save_checkpoint(checkpoint, filepath, storage_options=storage_options)

    def load_checkpoint(self, checkpoint_path: _PATH, weights_only: bool | None = None) -> dict[str, Any]:
        return self.checkpoint_io.load_checkpoint(checkpoint_path, weights_only=weights_only)

    def remove_checkpoint(self, filepath: _PATH) -> None:
        if self.is_global_zero:
            self.checkpoint_io.remove_checkpoint(filepath)

    # ------------------------------------------------------------------ hooks the loops call
    def on_train_start(self) -> None: ...

    def on_train_end(self) -> None: ...

    def on_exception(self, exception: BaseException) -> None:
        """Called when a run raises; distributed strategies tear down process groups here."""
        self._run_failed = True
