"""``ParallelStrategy``: the base of strategies that run one process per device (DDP, FSDP, DeepSpeed).

It owns the topology (devices, nodes, the cluster environment, the launcher), creates the
``torch.distributed`` process group, and implements the collectives on it.
"""

from __future__ import annotations

import atexit
import sys
import weakref
from collections.abc import Callable
from datetime import timedelta
from typing import Any, Literal

import torch
import torch.distributed as dist
from torch import Tensor, nn

from torchbolt.accelerators.accelerator import Accelerator
from torchbolt.accelerators.cpu import CPUAccelerator
from torchbolt.plugins.environments import ClusterEnvironment, LightningEnvironment
from torchbolt.plugins.io.checkpoint_io import CheckpointIO
from torchbolt.plugins.precision.precision import Precision
from torchbolt.strategies.launchers.launcher import Launcher
from torchbolt.strategies.strategy import Strategy, T
from torchbolt.utilities import distributed as _dist
from torchbolt.utilities.exceptions import MisconfigurationException
from torchbolt.utilities.rank_zero import rank_zero_only

_StartMethod = Literal["popen", "spawn", "fork", "forkserver"]


def _is_interactive() -> bool:
    return hasattr(sys, "ps1") or bool(sys.flags.interactive) or "ipykernel" in sys.modules


class ParallelStrategy(Strategy):
    """One process per device, on one or more nodes, joined by a ``torch.distributed`` process group.

    Args:
        accelerator: the device kind (set by the Trainer when omitted).
        parallel_devices: the devices of this node (set by the Trainer from ``devices``).
        cluster_environment: where ranks and the rendezvous address come from (detected when omitted).
        checkpoint_io: how checkpoints are written.
        precision_plugin: the numeric precision.
        process_group_backend: ``"gloo"``, ``"nccl"``, ... (default: nccl on CUDA, gloo otherwise).
        timeout: how long a collective may wait for the other ranks before failing (default 5 minutes
            with gloo, 10 with nccl; ``TORCHBOLT_PG_TIMEOUT`` seconds overrides the default).
        start_method: ``"popen"`` re-runs the script per rank, ``"spawn"``/``"fork"``/``"forkserver"``
            start the ranks with ``torch.multiprocessing``.
    """

    strategy_name = "parallel"

    def __init__(
        self,
        accelerator: Accelerator | None = None,
        parallel_devices: list[torch.device] | None = None,
        cluster_environment: ClusterEnvironment | None = None,
        checkpoint_io: CheckpointIO | None = None,
        precision_plugin: Precision | None = None,
        process_group_backend: str | None = None,
        timeout: timedelta | None = None,
        start_method: _StartMethod = "popen",
    ) -> None:
        super().__init__(accelerator=accelerator, checkpoint_io=checkpoint_io, precision_plugin=precision_plugin)
        self.parallel_devices: list[torch.device] | None = parallel_devices
        self.cluster_environment: ClusterEnvironment = cluster_environment or LightningEnvironment()
        self._explicit_environment = cluster_environment is not None
        self._process_group_backend = process_group_backend
        self._timeout = timeout
        self._start_method: _StartMethod = start_method
        self._num_nodes = 1
        self._local_rank_override: int | None = None
        self._flag_exchange: _dist.AsyncFlagExchange | None = None
        self._cpu_group: Any = None
        _LIVE_STRATEGIES.add(self)

    def _release_process_groups(self) -> None:
        """Forget this strategy's references to process groups (at exit, so the groups can be freed)."""
        self._flag_exchange = None
        self._cpu_group = None

    # ------------------------------------------------------------------ topology
    def _configure_topology(self, accelerator: Accelerator, device_ids: list[int], num_nodes: int,
                            environment: ClusterEnvironment) -> None:
        """Called once by the Trainer with the resolved devices, node count and detected environment."""
        if self._accelerator is None:
            self._accelerator = accelerator
        if self.parallel_devices is None:
            # CPU "devices" are a count of processes; device accelerators take indices
            wanted: Any = len(device_ids) if isinstance(self._accelerator, CPUAccelerator) else device_ids
            self.parallel_devices = self._accelerator.get_parallel_devices(wanted)
        self._num_nodes = num_nodes
        if not self._explicit_environment:
            self.cluster_environment = environment
        self._configure_launcher()
        if self._launcher is not None and _is_interactive() and not self._launcher.is_interactive_compatible:
            raise MisconfigurationException(
                f"`Trainer(strategy={self.strategy_name!r})` re-runs a script and cannot run in an interactive"
                " session (notebook or REPL). Use `strategy='ddp_notebook'` (or 'ddp_fork') here, or run a script."
            )
        self.set_world_ranks()

    def _configure_launcher(self) -> None:
        from torchbolt.strategies.launchers import MultiProcessingLauncher, SubprocessScriptLauncher

        if self._start_method == "popen":
            # under torchrun/srun/mpirun it starts nothing, but still checks the settings and stops on failure
            self._launcher = SubprocessScriptLauncher(self.cluster_environment, self.num_processes, self.num_nodes)
        else:
            self._launcher = MultiProcessingLauncher(self, start_method=self._start_method)  # type: ignore[arg-type]

    @property
    def launcher(self) -> Launcher | None:
        return self._launcher

    @property
    def num_nodes(self) -> int:
        return self._num_nodes

    @num_nodes.setter
    def num_nodes(self, num_nodes: int) -> None:
        self._num_nodes = num_nodes

    @property
    def num_processes(self) -> int:
        return len(self.parallel_devices) if self.parallel_devices is not None else 1

    def set_world_ranks(self) -> None:
        """Tell the environment this process's rank and the world size (environments that start
        processes themselves ignore this and report their own)."""
        env = self.cluster_environment
        env.set_global_rank(self.node_rank * self.num_processes + self.local_rank)
        env.set_world_size(self.num_nodes * self.num_processes)
        rank_zero_only.rank = env.global_rank()

    def _set_local_rank(self, local_rank: int) -> None:
        """In a process started by the multiprocessing launcher: which local rank it is."""
        self._local_rank_override = local_rank
        self.set_world_ranks()

    @property
    def global_rank(self) -> int:
        return self.cluster_environment.global_rank()

    @property
    def local_rank(self) -> int:
        if self._local_rank_override is not None:
            return self._local_rank_override
        return self.cluster_environment.local_rank()

    @property
    def node_rank(self) -> int:
        return self.cluster_environment.node_rank()

    @property
    def world_size(self) -> int:
        return self.cluster_environment.world_size()

    @property
    def is_global_zero(self) -> bool:
        return self.global_rank == 0

    @property
    def root_device(self) -> torch.device:
        assert self.parallel_devices is not None, "the Trainer configures the devices"
        return self.parallel_devices[self.local_rank]

    @property
    def distributed_sampler_kwargs(self) -> dict[str, Any] | None:
        return {"num_replicas": self.num_nodes * self.num_processes, "rank": self.global_rank}

    @property
    def process_group_backend(self) -> str:
        if self._process_group_backend is not None:
            return self._process_group_backend
        return "nccl" if self.root_device.type == "cuda" else "gloo"

    # ------------------------------------------------------------------ process group
    def setup_environment(self) -> None:
        """Create the process group (once per process) and select this rank's device."""
        from torchbolt.strategies.launchers.subprocess_script import _watch_launcher

        _watch_launcher()
        self.set_world_ranks()
        super().setup_environment()
        backend = self.process_group_backend
        timeout = self._timeout or _dist.default_timeout(backend)
        env = self.cluster_environment
        created = _dist.init_process_group(backend, self.global_rank, self.world_size, env.main_address,
                                           env.main_port, timeout)
        if created:
            atexit.register(_destroy_process_group)
        self._setup_cpu_group(backend, timeout)

    def _setup_cpu_group(self, backend: str, timeout: timedelta) -> None:
        # a gloo group for small CPU-side exchanges (signal flags, batch counts) that must not sync the device
        if self._cpu_group is not None:
            return
        self._cpu_group = dist.new_group(backend="gloo", timeout=timeout) if backend != "gloo" else dist.group.WORLD
        self._flag_exchange = _dist.AsyncFlagExchange(self._cpu_group)

    # ------------------------------------------------------------------ collectives
    def reduce(self, tensor: Tensor | Any, group: Any | None = None, reduce_op: str | None = "mean") -> Tensor | Any:
        """All-reduce ``tensor`` ("mean" by default, or "sum", "max", "min"); other objects pass through."""
        if isinstance(tensor, Tensor):
            return _dist.sync_tensor(tensor, group=group, reduce_op=reduce_op)
        return tensor

    def all_gather(self, tensor: Tensor, group: Any | None = None, sync_grads: bool = False) -> Any:
        """``tensor`` from every rank stacked on a new first dimension (see :func:`gather_all_tensors`)."""
        return _dist.gather_all_tensors(tensor, group=group, sync_grads=sync_grads)

    def broadcast(self, obj: T, src: int = 0) -> T:
        if not _dist.is_distributed_initialized():
            return obj
        objects = [obj]
        dist.broadcast_object_list(objects, src=src, group=self._cpu_group)
        return objects[0]

    def gather_object(self, obj: Any, dst: int = 0) -> list[Any] | None:
        if not _dist.is_distributed_initialized() or self.world_size == 1:
            return [obj]
        gathered: list[Any] | None = [None] * self.world_size if self.global_rank == dst else None
        # on the CPU group: the objects are pickled to CPU bytes, and a device group would sync the device
        dist.gather_object(obj, gathered, dst=dst, group=self._cpu_group)
        return gathered

    def barrier(self, name: str | None = None) -> None:
        if not _dist.is_distributed_initialized():
            return
        if self.process_group_backend == "nccl" and self.root_device.type == "cuda":
            dist.barrier(device_ids=[self.root_device.index or 0])
        else:
            dist.barrier()

    def reduce_boolean_decision(self, decision: bool, all: bool = True) -> bool:
        if not _dist.is_distributed_initialized():
            return decision
        flag = torch.tensor(int(bool(decision)), dtype=torch.int32)
        dist.all_reduce(flag, op=dist.ReduceOp.SUM, group=self._cpu_group)
        count = int(flag.item())
        return count == self.world_size if all else count > 0

    def exchange_flags(self, flags: int) -> int:
        """Non-blocking agreement on small flags (see :class:`~torchbolt.utilities.distributed.AsyncFlagExchange`)."""
        if self._flag_exchange is None or self.world_size == 1:
            return flags
        return self._flag_exchange.exchange(flags)

    def finish_flag_exchange(self, failed: bool = False) -> None:
        if self._flag_exchange is not None:
            if failed:
                self._flag_exchange.abandon()
            else:
                self._flag_exchange.finish()

    def check_num_batches(self, num_batches: int | float, stage: str) -> None:
        """Raise when ranks would run different numbers of ``stage`` batches (one small exchange).

        Raises:
            MisconfigurationException: naming every rank's count.
        """
        if not _dist.is_distributed_initialized() or self.world_size == 1:
            return
        mine = torch.tensor([float(num_batches)], dtype=torch.float64)
        counts = [torch.zeros_like(mine) for _ in range(self.world_size)]
        dist.all_gather(counts, mine, group=self._cpu_group)
        _dist._check_even_counts([float(c.item()) for c in counts], stage)

    def even_batches(self, loader: Any, num_batches: int | float) -> Any:
        """Wrap a loader without a length so every rank stops when the first one runs out."""
        if num_batches != float("inf") or not _dist.is_distributed_initialized() or self.world_size == 1:
            return loader
        return _dist._EvenIterable(loader, self._cpu_group)



class _ForwardRedirection:
    """Routes ``module.<method>(...)`` through ``wrapper(...)``: ``module.forward`` is replaced for one call
    by a function that restores it and calls ``<method>``.

    Wrappers such as ``DistributedDataParallel`` and FSDP do their work in ``wrapper.__call__``/forward
    hooks; calling ``training_step`` directly would skip it.
    """

    def __call__(self, wrapper: nn.Module, module: nn.Module, method: str, args: tuple,
                 kwargs: dict[str, Any], after_inner: Callable[[], None] | None = None) -> Any:
        original_forward = module.forward
        had_instance_forward = "forward" in module.__dict__
        step = getattr(module, method)

        def redirected(*a: Any, **k: Any) -> Any:
            module.forward = original_forward  # type: ignore[method-assign]
            out = step(*a, **k)
            if after_inner is not None:
                after_inner()
            return out

        module.forward = redirected  # type: ignore[method-assign]
        try:
            return wrapper(*args, **kwargs)
        finally:
            if had_instance_forward:
                module.forward = original_forward  # type: ignore[method-assign]
            else:
                module.__dict__.pop("forward", None)


# every ParallelStrategy alive in this process, so that the exit handler can drop their group references
_LIVE_STRATEGIES: weakref.WeakSet[ParallelStrategy] = weakref.WeakSet()


def _destroy_process_group() -> None:
    """At interpreter exit: close the process group while Python can still run (see
    :func:`~torchbolt.utilities.distributed.close_process_groups`); a peer may already be gone."""
    for strategy in list(_LIVE_STRATEGIES):
        strategy._release_process_groups()
    _dist.close_process_groups()
