"""``DataParallelStrategy``: ``torch.nn.DataParallel`` in one process over several GPUs (legacy; prefer DDP)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from torchbolt.accelerators.accelerator import Accelerator
from torchbolt.accelerators.cuda import CUDAAccelerator
from torchbolt.plugins.environments import ClusterEnvironment
from torchbolt.plugins.io.checkpoint_io import CheckpointIO
from torchbolt.plugins.precision.precision import Precision
from torchbolt.strategies.registry import register_strategy
from torchbolt.strategies.strategy import Strategy
from torchbolt.utilities.exceptions import MisconfigurationException
from torchbolt.utilities.rank_zero import rank_zero_deprecation

if TYPE_CHECKING:
    from torchbolt.core.module import LightningModule


class _StepRouter(nn.Module):
    """What ``DataParallel`` replicates: ``forward(step_name, *args)`` calls that step on its replica."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module

    def forward(self, step: str, *args: Any, **kwargs: Any) -> Any:
        return getattr(self.module, step)(*args, **kwargs)


def _mean_over_replicas(output: Any, replicas: int) -> Any:
    """``DataParallel`` gathers each replica's scalar into a vector: average those back to scalars."""
    if isinstance(output, Tensor):
        return output.mean() if output.ndim == 1 and output.numel() == replicas else output
    if isinstance(output, Mapping):
        return {k: _mean_over_replicas(v, replicas) for k, v in output.items()}
    return output


class DataParallelStrategy(Strategy):
    """Splits each batch over the GPUs of one process with ``nn.DataParallel`` (deprecated upstream).

    ``DataParallel`` copies the model to every GPU on every step and runs the replicas in threads,
    so it is slower than ``strategy="ddp"``, which also works from any script. It is kept so that
    Lightning 1.x code (``Trainer(gpus=8, distributed_backend="dp")``) still runs.

    Limitations: values logged with ``self.log`` inside the step come from the replica on each GPU;
    return them from the step instead. The step's scalar outputs are averaged over the GPUs.
    """

    strategy_name = "dp"

    def __init__(
        self,
        accelerator: Accelerator | None = None,
        parallel_devices: list[torch.device] | None = None,
        checkpoint_io: CheckpointIO | None = None,
        precision_plugin: Precision | None = None,
    ) -> None:
        super().__init__(accelerator=accelerator, checkpoint_io=checkpoint_io, precision_plugin=precision_plugin)
        self.parallel_devices = parallel_devices
        rank_zero_deprecation(
            "`strategy='dp'` (nn.DataParallel) is deprecated and slower than `strategy='ddp'`, which runs one"
            " process per GPU and works from any script. Switch to `Trainer(strategy='ddp', devices=N)`."
        )

    def _configure_topology(self, accelerator: Accelerator, device_ids: list[int], num_nodes: int,
                            environment: ClusterEnvironment) -> None:
        if not isinstance(accelerator, CUDAAccelerator) or not torch.cuda.is_available():
            raise MisconfigurationException(
                "`strategy='dp'` (nn.DataParallel) needs CUDA GPUs, and none is available. Use"
                " `strategy='ddp'` (it runs on CPU too) or `accelerator='cpu'` with the default strategy."
            )
        if num_nodes != 1:
            raise MisconfigurationException(
                f"`strategy='dp'` runs in one process on one machine; `num_nodes={num_nodes}` needs `strategy='ddp'`.")
        if self._accelerator is None:
            self._accelerator = accelerator
        if self.parallel_devices is None:
            self.parallel_devices = [torch.device("cuda", i) for i in device_ids]

    @property
    def root_device(self) -> torch.device:
        assert self.parallel_devices, "the Trainer configures the devices"
        return self.parallel_devices[0]

    @property
    def is_global_zero(self) -> bool:
        return True

    def setup(self, module: LightningModule, setup_optimizers: Callable[[], None] | None) -> None:
        self.precision_plugin.convert_module(module)
        self.model_to_device()
        assert self.parallel_devices is not None
        ids = [d.index for d in self.parallel_devices]
        self._model = nn.DataParallel(_StepRouter(module), device_ids=ids)
        if setup_optimizers is not None:
            setup_optimizers()

    def _call_step(self, name: str, args: tuple, kwargs: dict[str, Any]) -> Any:
        if self._model is None:
            module = self._lightning_module
            assert module is not None
            return getattr(module, name)(*args, **kwargs)
        output = self._model(name, *args, **kwargs)
        return _mean_over_replicas(output, len(self.parallel_devices or []))

    def reduce(self, tensor: Tensor | Any, group: Any | None = None, reduce_op: str | None = "mean") -> Tensor | Any:
        """Outputs gathered from the replicas (a vector) are reduced to one value."""
        if isinstance(tensor, Tensor) and tensor.ndim > 0:
            op = (reduce_op or "mean").lower()
            if op == "sum":
                return tensor.sum()
            if op == "max":
                return tensor.max()
            if op == "min":
                return tensor.min()
            return tensor.float().mean()
        return tensor

    def teardown(self) -> None:
        self._model = None
        super().teardown()


register_strategy("dp", DataParallelStrategy, "torch.nn.DataParallel over the GPUs of one process (deprecated)")
