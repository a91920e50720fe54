"""``ModelParallelStrategy``: tensor parallelism and FSDP2 on a 2-D device mesh, applied by the user.

The strategy creates the process group and a ``DeviceMesh`` with the dimensions
``("data_parallel", "tensor_parallel")``; the LightningModule's ``configure_model`` parallelizes its own
layers on ``self.device_mesh`` (``parallelize_module`` on the ``"tensor_parallel"`` sub-mesh, ``fully_shard``
on the ``"data_parallel"`` one). Every rank of one tensor-parallel group sees the same batches; the data
is split over the data-parallel groups only.

Checkpoints are a directory written by every rank through ``torch.distributed.checkpoint`` (the default,
the same layout as ``FSDPStrategy(state_dict_type="sharded")``, so ``python -m
torchbolt.utilities.consolidate_checkpoint`` merges it into one file), or one full file written by rank 0
(``save_distributed_checkpoint=False``).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Generator
from contextlib import contextmanager
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Literal

import torch
from torch import nn

from torchbolt.accelerators.accelerator import Accelerator
from torchbolt.plugins.environments import ClusterEnvironment
from torchbolt.plugins.io.checkpoint_io import _PATH, CheckpointIO
from torchbolt.plugins.precision.precision import Precision
from torchbolt.strategies.fsdp import (
    _META_FILE,
    _SHARDED_KEY,
    _remove_sharded_dir,
    load_sharded_model_state,
    load_sharded_optimizer_states,
    remove_file_or_sharded,
    save_sharded,
)
from torchbolt.strategies.parallel import ParallelStrategy, _ForwardRedirection
from torchbolt.strategies.registry import register_strategy
from torchbolt.utilities.exceptions import MisconfigurationException
from torchbolt.utilities.parsing import is_overridden
from torchbolt.utilities.rank_zero import rank_zero_warn

if TYPE_CHECKING:
    from torch.distributed.device_mesh import DeviceMesh
    from torch.optim import Optimizer

    from torchbolt.core.module import LightningModule

MESH_DIM_NAMES = ("data_parallel", "tensor_parallel")
_Size = int | Literal["auto"]


def _check_size(value: Any, argument: str) -> None:
    if value == "auto" and isinstance(value, str):
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise MisconfigurationException(
            f"`ModelParallelStrategy({argument}={value!r})`: pass a positive int or 'auto'.")


class ModelParallelStrategy(ParallelStrategy):
    """User-defined 2-D parallelism: tensor parallelism (DTensor) combined with FSDP2, one process per device.

    The strategy builds the device mesh; the model applies the parallelism itself in ``configure_model``
    (which it must override), e.g.::

        def configure_model(self):
            if isinstance(self, FSDPModule):  # already parallelized by an earlier run of the Trainer
                return
            tp = self.device_mesh["tensor_parallel"]
            parallelize_module(self.block, tp, {"up": ColwiseParallel(), "down": RowwiseParallel()})
            fully_shard(self, mesh=self.device_mesh["data_parallel"])

    Args:
        data_parallel_size: the number of data-parallel groups (the size of the mesh's ``"data_parallel"``
            dimension). ``"auto"``: the number of nodes.
        tensor_parallel_size: the number of ranks that split each layer (the ``"tensor_parallel"``
            dimension). ``"auto"``: the number of devices per node. The two sizes multiplied must equal
            the world size (``devices * num_nodes``).
        save_distributed_checkpoint: ``True``: a checkpoint is a directory in which every rank writes its
            shards through ``torch.distributed.checkpoint`` (it loads on any mesh; merge it into one file
            with ``python -m torchbolt.utilities.consolidate_checkpoint``). ``False``: the full weights and
            optimizer states are gathered and rank 0 writes one ordinary file.
        process_group_backend: ``"gloo"``, ``"nccl"``, ... (default: nccl on CUDA, gloo otherwise).
        timeout: how long a collective may wait for the other ranks (default 5 minutes with gloo, 10 with
            nccl).

    Ranks ``r`` are laid out row-major on the mesh: data-parallel rank ``r // tensor_parallel_size``,
    tensor-parallel rank ``r % tensor_parallel_size``.
    """

    strategy_name = "model_parallel"

    def __init__(
        self,
        data_parallel_size: _Size = "auto",
        tensor_parallel_size: _Size = "auto",
        save_distributed_checkpoint: bool = True,
        process_group_backend: str | None = None,
        timeout: timedelta | None = None,
        *,
        accelerator: Accelerator | None = None,
        parallel_devices: list[torch.device] | None = None,
        cluster_environment: ClusterEnvironment | None = None,
        checkpoint_io: CheckpointIO | None = None,
        precision_plugin: Precision | None = None,
    ) -> None:
        _check_size(data_parallel_size, "data_parallel_size")
        _check_size(tensor_parallel_size, "tensor_parallel_size")
        super().__init__(accelerator=accelerator, parallel_devices=parallel_devices,
                         cluster_environment=cluster_environment, checkpoint_io=checkpoint_io,
                         precision_plugin=precision_plugin, process_group_backend=process_group_backend,
                         timeout=timeout, start_method="popen")
        self._data_parallel_size: _Size = data_parallel_size
        self._tensor_parallel_size: _Size = tensor_parallel_size
        self._save_distributed_checkpoint = bool(save_distributed_checkpoint)
        self._device_mesh: DeviceMesh | None = None

    # ------------------------------------------------------------------ topology
    @property
    def device_mesh(self) -> DeviceMesh:
        """The 2-D mesh ``("data_parallel", "tensor_parallel")``.

        Raises:
            RuntimeError: before the processes have initialized (the Trainer creates it when a run starts).
        """
        if self._device_mesh is None:
            raise RuntimeError(
                "Accessing the device mesh before processes have initialized is not allowed: the mesh exists"
                " once `trainer.fit/validate/test/predict` has started (use it in `configure_model`).")
        return self._device_mesh

    @property
    def data_parallel_size(self) -> int:
        """The size of the ``"data_parallel"`` mesh dimension (``"auto"`` resolved: the number of nodes)."""
        return self._mesh_shape()[0]

    @property
    def tensor_parallel_size(self) -> int:
        """The size of the ``"tensor_parallel"`` mesh dimension (``"auto"``: the devices per node)."""
        return self._mesh_shape()[1]

    @property
    def save_distributed_checkpoint(self) -> bool:
        return self._save_distributed_checkpoint

    def _mesh_shape(self) -> tuple[int, int]:
        dp = self.num_nodes if self._data_parallel_size == "auto" else int(self._data_parallel_size)
        tp = self.num_processes if self._tensor_parallel_size == "auto" else int(self._tensor_parallel_size)
        return dp, tp

    def _check_mesh_shape(self) -> tuple[int, int]:
        """The resolved ``(data_parallel_size, tensor_parallel_size)``.

        Raises:
            MisconfigurationException: their product is not the world size.
        """
        dp, tp = self._mesh_shape()
        world_size = self.world_size
        if dp * tp != world_size:
            raise MisconfigurationException(
                f"`ModelParallelStrategy(data_parallel_size={dp}, tensor_parallel_size={tp})`: the sizes"
                f" `data_parallel_size={dp}` and `tensor_parallel_size={tp}` multiplied should equal the world"
                f" size ({world_size} = devices per node x num_nodes). Change the sizes, or `Trainer(devices=...,"
                " num_nodes=...)`, so that data_parallel_size * tensor_parallel_size == world size."
            )
        return dp, tp

    def _configure_topology(self, accelerator: Accelerator, device_ids: list[int], num_nodes: int,
                            environment: ClusterEnvironment) -> None:
        super()._configure_topology(accelerator, device_ids, num_nodes, environment)
        # fail when the Trainer is built, before any process is started
        self._check_mesh_shape()

    @property
    def distributed_sampler_kwargs(self) -> dict[str, Any]:
        """The data is split over the data-parallel ranks only.

        The tensor-parallel ranks of one group all see the same batches."""
        dp, tp = self._mesh_shape()
        return {"num_replicas": dp, "rank": self.global_rank // tp}

    @property
    def restore_checkpoint_after_setup(self) -> bool:
        return True

    def setup_environment(self) -> None:
        """Create the process group, then the device mesh, and give the mesh to the LightningModule.

        ``configure_model`` reads it as ``self.device_mesh``."""
        super().setup_environment()
        dp, tp = self._check_mesh_shape()
        mesh = self._device_mesh
        if mesh is None or tuple(mesh.shape) != (dp, tp) or mesh.device_type != self.root_device.type:
            from torch.distributed.device_mesh import init_device_mesh

            mesh = init_device_mesh(self.root_device.type, (dp, tp), mesh_dim_names=MESH_DIM_NAMES)
            self._device_mesh = mesh
        module = self._lightning_module
        if module is not None:
            module.__dict__["_device_mesh"] = mesh

    def _release_process_groups(self) -> None:
        super()._release_process_groups()
        self._device_mesh = None

    # ------------------------------------------------------------------ setup
    def setup(self, module: LightningModule, setup_optimizers: Callable[[], None] | None) -> None:
        """Finish the module that ``configure_model`` parallelized, then create the optimizers over it.

        Checks that ``configure_model`` is overridden, materializes meta-device tensors, gives the tensors
        that tensor parallelism does not split the same values on every tensor-parallel rank (tensor-parallel
        rank 0's, as DDP does at wrapping) and moves what is left to the device. When fitting with
        ``data_parallel_size > 1``, warns if no submodule was given ``fully_shard`` (or ``replicate``).

        Raises:
            TypeError: the LightningModule does not override ``configure_model``, or holds modules wrapped
                with the FSDP1 class ``FullyShardedDataParallel``.
        """
        if not (is_overridden("configure_model", module) or is_overridden("configure_sharded_model", module)):
            raise TypeError(
                f"When using the {type(self).__name__}, you are required to override the `configure_model()`"
                f" hook in the LightningModule and apply parallelization there: `{type(module).__name__}` does"
                " not. Parallelize the layers on `self.device_mesh` in `configure_model` (see the"
                " 'Model parallelism' section of docs/distributed.md)."
            )
        _reject_fsdp1(module)
        fitting = setup_optimizers is not None
        if fitting and self.data_parallel_size > 1 and not _synchronizes_gradients(module):
            rank_zero_warn(
                f"`ModelParallelStrategy(data_parallel_size={self.data_parallel_size})`, but `configure_model` of"
                f" `{type(module).__name__}` applied neither `fully_shard` nor `replicate`: the gradients are not"
                " averaged over the data-parallel ranks, so each of them trains its own copy of the model. Call"
                " `fully_shard(module, mesh=self.device_mesh['data_parallel'])` in `configure_model`."
            )
        _materialize_meta_tensors(module, self.root_device)
        if not module.__dict__.get("_torchbolt_tp_synced") and self.tensor_parallel_size > 1:
            _sync_across_tensor_parallel_ranks(module, self.device_mesh)
            module.__dict__["_torchbolt_tp_synced"] = True
        self.precision_plugin.convert_module(module)
        self.model_to_device()
        self.barrier("model_parallel.setup")
        if setup_optimizers is not None:
            setup_optimizers()

    @contextmanager
    def tensor_init_context(self, empty_init: bool | None = None) -> Generator[None, None, None]:
        """Create the model's tensors on the device, or on the meta device with ``empty_init=True``.

        Meta tensors take no memory; they are allocated on the device and initialized with each layer's
        ``reset_parameters()`` when the run sets up, after ``configure_model`` has parallelized them."""
        if not empty_init:
            with super().tensor_init_context(empty_init):
                yield
            return
        with torch.device("meta"), self.precision_plugin.module_init_context():
            yield

    # ------------------------------------------------------------------ steps
    def _call_step(self, name: str, args: tuple, kwargs: dict[str, Any]) -> Any:
        module = self._lightning_module
        assert module is not None
        if _is_fsdp_module(module):
            # through `module(...)`, so the FSDP hooks of a sharded root run around the step
            return _ForwardRedirection()(module, module, name, args, kwargs)
        return getattr(module, name)(*args, **kwargs)

    @contextmanager
    def no_backward_sync(self, enabled: bool) -> Generator[None, None, None]:
        """Keep gradients local (neither reduced nor resharded) on accumulation batches."""
        module = self._lightning_module
        sharded = [m for m in module.modules() if _is_fsdp_module(m)] if enabled and module is not None else []
        for m in sharded:
            m.set_requires_gradient_sync(False, recurse=False)  # type: ignore[operator]
        try:
            yield
        finally:
            for m in sharded:
                m.set_requires_gradient_sync(True, recurse=False)  # type: ignore[operator]

    # ------------------------------------------------------------------ checkpoints
    def _options(self, full: bool) -> Any:
        from torch.distributed.checkpoint.state_dict import StateDictOptions

        return StateDictOptions(full_state_dict=full, cpu_offload=full)

    def lightning_module_state_dict(self) -> dict[str, Any]:
        """This rank's shards, or (``save_distributed_checkpoint=False``) the full state dict on rank 0.

        The other ranks get an empty dict in the second case."""
        from torch.distributed.checkpoint.state_dict import get_model_state_dict

        assert self._lightning_module is not None
        return get_model_state_dict(self._lightning_module,
                                    options=self._options(not self._save_distributed_checkpoint))

    def optimizer_state(self, optimizer: Optimizer) -> dict[str, Any]:
        """Like :meth:`lightning_module_state_dict`, for one optimizer (its state keyed by parameter name)."""
        from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict

        from torchbolt.core.optimizer import LightningOptimizer

        if isinstance(optimizer, LightningOptimizer):
            optimizer = optimizer.optimizer
        assert self._lightning_module is not None
        return get_optimizer_state_dict(self._lightning_module, optimizer,
                                        options=self._options(not self._save_distributed_checkpoint))

    def save_checkpoint(self, checkpoint: dict[str, Any], filepath: _PATH, storage_options: Any | None = None) -> None:
        """Save a directory of shards, or (``save_distributed_checkpoint=False``) one file from rank 0.

        Every rank calls this. The directory holds the shards and ``meta.pt`` with the loop and callback
        state; it is made complete atomically: written next to ``filepath``, then renamed into place. A
        single file replaces a sharded checkpoint directory at ``filepath``.

        Raises:
            TypeError: ``storage_options`` with a distributed checkpoint (the shards bypass the CheckpointIO).
            IsADirectoryError: ``filepath`` is a directory that is not a sharded checkpoint (nothing is deleted).
        """
        path = os.fspath(self.broadcast(filepath))  # every rank writes under rank 0's path
        if not self._save_distributed_checkpoint:
            if self.is_global_zero and os.path.isdir(path) and not os.path.islink(path):
                _remove_sharded_dir(path)  # raises for a directory that is not a sharded checkpoint
            super().save_checkpoint(checkpoint, path, storage_options=storage_options)
            return
        if storage_options is not None:
            raise TypeError(
                f"`{type(self).__name__}.save_checkpoint(..., storage_options=...)` is not supported because"
                " the shards are written through `torch.distributed.checkpoint`, not the `CheckpointIO`. Drop"
                " `storage_options`, or save one file with `ModelParallelStrategy(save_distributed_checkpoint="
                "False)`."
            )
        save_sharded(self, checkpoint, path, "model_parallel")

    def load_checkpoint(self, checkpoint_path: _PATH, weights_only: bool | None = None) -> dict[str, Any]:
        """Read a checkpoint file whole, or only the ``meta.pt`` of a sharded checkpoint directory.

        The shards are loaded into the parallelized model later, by :meth:`load_model_state_dict` and
        :meth:`load_optimizer_state_dict`.

        Raises:
            ValueError: ``checkpoint_path`` is a directory without ``meta.pt``.
        """
        path = os.fspath(self.broadcast(checkpoint_path))
        if not os.path.isdir(path):
            return super().load_checkpoint(path, weights_only=weights_only)
        meta_path = os.path.join(path, _META_FILE)
        if not os.path.isfile(meta_path):
            raise ValueError(
                f"The path {path!r} does not point to a valid checkpoint: it is a directory without {_META_FILE},"
                " so it is not a sharded checkpoint saved by `ModelParallelStrategy` or `FSDPStrategy`."
            )
        checkpoint = self.checkpoint_io.load_checkpoint(meta_path, weights_only=weights_only)
        checkpoint[_SHARDED_KEY] = path
        return checkpoint

    def load_model_state_dict(self, checkpoint: dict[str, Any], strict: bool = True) -> None:
        """Load the full weights of a file, or the shards of a directory, into the parallelized model.

        The mesh and world size may differ from those at saving time."""
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

        module = self._lightning_module
        assert module is not None
        path = checkpoint.get(_SHARDED_KEY)
        if path is None:
            if "state_dict" not in checkpoint:
                raise KeyError("state_dict")
            set_model_state_dict(module, checkpoint["state_dict"],
                                 options=StateDictOptions(full_state_dict=True, strict=strict))
            return
        load_sharded_model_state(module, path, strict)

    def load_optimizer_state_dict(self, checkpoint: dict[str, Any]) -> None:
        """Load the optimizer states of a checkpoint file or of a sharded directory.

        A file's states may be keyed by parameter name or, as a single-device run saves them, by position."""
        from torch.distributed.checkpoint.state_dict import (
            StateDictOptions,
            set_optimizer_state_dict,
        )

        module = self._lightning_module
        assert module is not None
        optimizers = [getattr(opt, "optimizer", opt) for opt in self.optimizers]
        path = checkpoint.get(_SHARDED_KEY)
        if path is None:
            for optimizer, state in zip(optimizers, checkpoint.get("optimizer_states", [])):
                set_optimizer_state_dict(module, optimizer, optim_state_dict=_keyed_by_name(module, optimizer, state),
                                         options=StateDictOptions(full_state_dict=True))
            return
        load_sharded_optimizer_states(module, optimizers, path, len(checkpoint.get("optimizer_states", [])))

    def remove_checkpoint(self, filepath: _PATH) -> None:
        """Delete a checkpoint file, or a sharded checkpoint directory file by file (never recursively).

        Raises:
            IsADirectoryError: ``filepath`` is a directory holding anything but a sharded checkpoint's files.
        """
        remove_file_or_sharded(self, filepath)


def _is_fsdp_module(module: nn.Module) -> bool:
    from torch.distributed.fsdp import FSDPModule

    return isinstance(module, FSDPModule)


def _synchronizes_gradients(module: nn.Module) -> bool:
    """Whether a data-parallel API (FSDP2 ``fully_shard``, composable ``replicate``) was applied to any
    submodule of ``module``."""
    from torch.distributed._composable import _get_registry

    return any(_is_fsdp_module(m) or "replicate" in (_get_registry(m) or {}) for m in module.modules())


def _reject_fsdp1(module: nn.Module) -> None:
    from torch.distributed.fsdp import FullyShardedDataParallel

    if any(isinstance(m, FullyShardedDataParallel) for m in module.modules()):
        raise TypeError(
            "Found modules that are wrapped with `torch.distributed.fsdp.FullyShardedDataParallel`. The"
            " `ModelParallelStrategy` only supports the new FSDP2 APIs in PyTorch >= 2.4: shard with"
            " `torch.distributed.fsdp.fully_shard(module, mesh=self.device_mesh['data_parallel'])` instead."
        )


def _materialize_meta_tensors(module: nn.Module, device: torch.device) -> None:
    """Allocate the meta-device parameters and buffers (``Trainer.init_module(empty_init=True)``) on
    ``device`` and initialize them with each submodule's ``reset_parameters()``.

    Submodules with meta tensors but no ``reset_parameters`` are allocated uninitialized, with a warning
    naming their classes.
    """
    if not any(t.is_meta for t in (*module.parameters(), *module.buffers())):
        return
    uninitialized: list[str] = []
    for sub in module.modules():
        own = [*sub.parameters(recurse=False), *sub.buffers(recurse=False)]
        if not any(t.is_meta for t in own):
            continue
        sub.to_empty(device=device, recurse=False)
        reset = getattr(sub, "reset_parameters", None)
        if callable(reset):
            with torch.no_grad():
                reset()
        else:
            uninitialized.append(type(sub).__name__)
    if uninitialized:
        rank_zero_warn(
            "Parameters on the meta device were allocated but left uninitialized: these modules have no"
            " `reset_parameters()` method for re-initialization: " + ", ".join(sorted(set(uninitialized)))
            + ". Give them one, or load the weights from a checkpoint."
        )


def _sync_across_tensor_parallel_ranks(module: nn.Module, mesh: DeviceMesh) -> None:
    """Copy tensor-parallel rank 0's values of the parameters and buffers that are not split over the
    ``"tensor_parallel"`` dimension (plain tensors, FSDP-only shards, replicated DTensors) to the other
    ranks of its tensor-parallel group.

    The ranks of a tensor-parallel group compute one model on the same batch: a layer left out of the
    tensor-parallel plan (a head, a norm), or a replicated bias initialized on each rank from the meta
    device, would otherwise silently differ between the ranks.
    """
    import torch.distributed as dist
    from torch.distributed.tensor import DTensor

    tp_mesh = mesh["tensor_parallel"]
    group = tp_mesh.get_group()
    src = dist.get_global_rank(group, 0)
    with torch.no_grad():
        for tensor in (*module.parameters(), *module.buffers()):
            if isinstance(tensor, DTensor):
                names = tensor.device_mesh.mesh_dim_names or ()
                if "tensor_parallel" in names and not tensor.placements[names.index("tensor_parallel")].is_replicate():
                    continue  # split over the tensor-parallel ranks: each rank holds its own part
                local = tensor.to_local()
            else:
                local = tensor
            if local.numel():
                dist.broadcast(local, src=src, group=group)


def _keyed_by_name(module: nn.Module, optimizer: Optimizer, state: dict[str, Any]) -> dict[str, Any]:
    """A full optimizer state dict keyed by parameter name, as ``set_optimizer_state_dict`` reads it.

    A single-device run saves ``Optimizer.state_dict()`` keyed by position (0, 1, ... over the parameter
    groups); those positions are mapped to the names of this optimizer's parameters, in the same order.
    """
    groups = state.get("param_groups", [])
    if not groups or all(isinstance(p, str) for g in groups for p in g.get("params", [])):
        return state
    names = {id(p): name for name, p in module.named_parameters()}
    ordered = [names.get(id(p)) for g in optimizer.param_groups for p in g["params"]]
    if None in ordered:
        return state  # a parameter outside the module: let torch report the mismatch

    def name_of(key: Any) -> Any:
        return ordered[key] if isinstance(key, int) and 0 <= key < len(ordered) else key

    return {
        "state": {name_of(k): v for k, v in state.get("state", {}).items()},
        "param_groups": [{**g, "params": [name_of(p) for p in g.get("params", [])]} for g in groups],
    }


register_strategy("model_parallel", ModelParallelStrategy,
                  "Tensor parallelism and FSDP2 on a 2-D device mesh, applied in `configure_model`")

__all__ = ["MESH_DIM_NAMES", "ModelParallelStrategy"]
