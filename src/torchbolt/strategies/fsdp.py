"""``FSDPStrategy``: fully sharded data parallel with FSDP2 (``torch.distributed.fsdp.fully_shard``).

Parameters, gradients and optimizer state are sharded over the ranks. Checkpoints are either one
full file written by rank 0 (``state_dict_type="full"``) or a directory written by every rank
through ``torch.distributed.checkpoint`` (``"sharded"``); both load on any number of ranks.
"""

from __future__ import annotations

import contextlib
import inspect
import os
import re
from collections.abc import Callable, Generator, Iterable
from contextlib import contextmanager
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Literal

import torch
from torch import nn

from torchbolt.accelerators.accelerator import Accelerator
from torchbolt.plugins.environments import ClusterEnvironment
from torchbolt.plugins.io.async_io import wait_for_checkpoint_writes
from torchbolt.plugins.io.checkpoint_io import _PATH, CheckpointIO
from torchbolt.plugins.precision.precision import Precision
from torchbolt.strategies.parallel import ParallelStrategy, _ForwardRedirection, _StartMethod
from torchbolt.strategies.registry import register_strategy
from torchbolt.utilities.cloud_io import TEMP_FILE_PATTERN
from torchbolt.utilities.exceptions import MisconfigurationException

if TYPE_CHECKING:
    from torch.optim import Optimizer

    from torchbolt.core.module import LightningModule

_META_FILE = "meta.pt"
_SHARDED_KEY = "_torchbolt_sharded_checkpoint"
_Policy = set[type[nn.Module]] | Iterable[type[nn.Module]] | int | Callable[..., bool] | None


def _as_predicate(policy: _Policy, argument: str) -> Callable[[nn.Module, int], bool] | None:
    """Turn a wrap or checkpointing policy into ``(module, unsharded parameter count) -> bool``.

    Accepted: module classes (a set/list/tuple), a minimum parameter count (int), a ``ModuleWrapPolicy``
    (its classes), ``fn(module)`` or FSDP1's ``fn(module, recurse, nonwrapped_numel)``.
    """
    if policy is None:
        return None
    classes = getattr(policy, "_module_classes", None)
    if classes is not None:
        policy = set(classes)
    if isinstance(policy, bool):
        raise MisconfigurationException(f"`FSDPStrategy({argument}={policy})`: pass module classes or a callable.")
    if isinstance(policy, int):
        threshold = policy
        return lambda module, numel: numel >= threshold
    if isinstance(policy, type) and issubclass(policy, nn.Module):
        policy = {policy}
    if isinstance(policy, (set, frozenset, list, tuple)):
        types = tuple(policy)
        if not all(isinstance(t, type) and issubclass(t, nn.Module) for t in types):
            raise MisconfigurationException(
                f"`FSDPStrategy({argument}=...)` got {policy!r}; expected `nn.Module` subclasses, e.g."
                " `{nn.TransformerEncoderLayer}`."
            )
        return lambda module, numel: isinstance(module, types)
    if callable(policy):
        fn: Callable[..., Any] = policy
        try:
            three_args = len(inspect.signature(fn).parameters) >= 3
        except (TypeError, ValueError):
            three_args = False
        if three_args:
            return lambda module, numel: bool(fn(module, False, numel))
        return lambda module, numel: bool(fn(module))
    raise MisconfigurationException(f"`FSDPStrategy({argument}={policy!r})` is not a supported policy.")


class FSDPStrategy(ParallelStrategy):
    """Shards the model with FSDP2 ``fully_shard``: submodules chosen by ``auto_wrap_policy``, then the root.

    Args:
        auto_wrap_policy: which submodules become their own shard group (all-gathered just in time):
            module classes (``{nn.TransformerEncoderLayer}``), a minimum parameter count (``int``),
            or ``fn(module) -> bool``. Without one, only the root is sharded.
        activation_checkpointing_policy: submodules whose activations are recomputed in backward
            (same forms, except the int).
        cpu_offload: keep parameters, gradients and optimizer state on the CPU (``True`` or a
            ``CPUOffloadPolicy``).
        mixed_precision: an FSDP2 ``MixedPrecisionPolicy``; by default derived from ``Trainer(precision=)``
            ("bf16-mixed": bf16 compute, fp32 gradient reduction; "bf16-true": bf16 throughout).
        sharding_strategy: ``"FULL_SHARD"`` (reshard after forward) or ``"SHARD_GRAD_OP"`` (keep the
            gathered parameters until backward).
        state_dict_type: ``"full"`` (one file from rank 0) or ``"sharded"`` (a directory, every rank
            writes its shard; scales to any model size).
        **kwargs: more ``fully_shard`` arguments (e.g. ``reshard_after_forward``).

    Example::

        trainer = Trainer(devices=8, strategy=FSDPStrategy(auto_wrap_policy={Block}, state_dict_type="sharded"))
    """

    strategy_name = "fsdp"

    def __init__(
        self,
        accelerator: Accelerator | None = None,
        parallel_devices: list[torch.device] | None = None,
        cluster_environment: ClusterEnvironment | None = None,
        checkpoint_io: CheckpointIO | None = None,
        precision_plugin: Precision | None = None,
        process_group_backend: str | None = None,
        timeout: timedelta | None = None,
        auto_wrap_policy: _Policy = None,
        activation_checkpointing_policy: _Policy = None,
        cpu_offload: bool | Any = None,
        mixed_precision: Any = None,
        sharding_strategy: Literal["FULL_SHARD", "SHARD_GRAD_OP"] = "FULL_SHARD",
        state_dict_type: Literal["full", "sharded"] = "full",
        start_method: _StartMethod = "popen",
        **kwargs: Any,
    ) -> None:
        super().__init__(accelerator=accelerator, parallel_devices=parallel_devices,
                         cluster_environment=cluster_environment, checkpoint_io=checkpoint_io,
                         precision_plugin=precision_plugin, process_group_backend=process_group_backend,
                         timeout=timeout, start_method=start_method)
        if state_dict_type not in ("full", "sharded"):
            raise MisconfigurationException(
                f"`FSDPStrategy(state_dict_type={state_dict_type!r})`: use 'full' or 'sharded'.")
        if sharding_strategy not in ("FULL_SHARD", "SHARD_GRAD_OP"):
            raise MisconfigurationException(
                f"`FSDPStrategy(sharding_strategy={sharding_strategy!r})`: FSDP2 supports 'FULL_SHARD' and"
                " 'SHARD_GRAD_OP'; for replicated training use `strategy='ddp'`."
            )
        if isinstance(activation_checkpointing_policy, int) and not isinstance(activation_checkpointing_policy, bool):
            raise MisconfigurationException(
                "`FSDPStrategy(activation_checkpointing_policy=...)` takes module classes or a callable, not a size.")
        self._wrap_predicate = _as_predicate(auto_wrap_policy, "auto_wrap_policy")
        self._checkpoint_predicate = _as_predicate(activation_checkpointing_policy, "activation_checkpointing_policy")
        self.cpu_offload = cpu_offload
        self.mixed_precision = mixed_precision
        self.state_dict_type = state_dict_type
        self._fsdp_kwargs = dict(kwargs)
        self._fsdp_kwargs.setdefault("reshard_after_forward", sharding_strategy == "FULL_SHARD")

    @property
    def restore_checkpoint_after_setup(self) -> bool:
        return True

    # ------------------------------------------------------------------ setup
    def setup(self, module: LightningModule, setup_optimizers: Callable[[], None] | None) -> None:
        """Move, checkpoint-wrap and shard the module (for every entry point), then create the optimizers
        over the sharded parameters."""
        self.precision_plugin.convert_module(module)
        self.model_to_device()
        if not getattr(module, "_torchbolt_fsdp_sharded", False):
            self._apply_activation_checkpointing(module)
            self._shard(module)
            module.__dict__["_torchbolt_fsdp_sharded"] = True
        self._model = module
        if setup_optimizers is not None:
            setup_optimizers()

    def _fully_shard_kwargs(self) -> dict[str, Any]:
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import CPUOffloadPolicy

        kwargs = dict(self._fsdp_kwargs)
        kwargs["mesh"] = init_device_mesh(self.root_device.type, (self.world_size,))
        offload = self.cpu_offload
        if offload is True:
            # pinned host memory needs an accelerator
            offload = CPUOffloadPolicy(pin_memory=self.root_device.type == "cuda")
        if offload:
            kwargs["offload_policy"] = offload
        policy = self.mixed_precision or self._precision_policy()
        if policy is not None:
            kwargs["mp_policy"] = policy
        return kwargs

    def _precision_policy(self) -> Any:
        from torchbolt.plugins.precision.fsdp import fsdp_mixed_precision_policy

        return fsdp_mixed_precision_policy(getattr(self.precision_plugin, "precision", "32-true"))

    def _shard(self, module: nn.Module) -> None:
        from torch.distributed.fsdp import fully_shard

        kwargs = self._fully_shard_kwargs()
        predicate = self._wrap_predicate
        if predicate is not None:
            sharded: set[int] = set()
            # children before parents, so a parent's count excludes parameters already sharded below it
            for sub in reversed(list(module.modules())):
                if sub is module:
                    continue
                own = [p for p in sub.parameters() if id(p) not in sharded]
                if own and predicate(sub, sum(p.numel() for p in own)):
                    fully_shard(sub, **kwargs)
                    sharded.update(id(p) for p in own)
        fully_shard(module, **kwargs)

    def _apply_activation_checkpointing(self, module: nn.Module) -> None:
        predicate = self._checkpoint_predicate
        if predicate is None:
            return
        from torch.distributed._composable import checkpoint

        for sub in list(module.modules()):
            if sub is not module and predicate(sub, 0):
                checkpoint(sub)

    # ------------------------------------------------------------------ steps
    def _call_step(self, name: str, args: tuple, kwargs: dict[str, Any]) -> Any:
        module = self._lightning_module
        assert module is not None
        if self._model is None:
            return getattr(module, name)(*args, **kwargs)
        # through `module(...)`, so the root's FSDP hooks gather its parameters around the step
        return _ForwardRedirection()(module, module, name, args, kwargs)

    @contextmanager
    def no_backward_sync(self, enabled: bool) -> Generator[None, None, None]:
        """Keep gradients unsharded and unreduced on accumulation batches."""
        module = self._model
        setter = getattr(module, "set_requires_gradient_sync", None)
        if not enabled or setter is None:
            yield
            return
        setter(False)
        try:
            yield
        finally:
            setter(True)

    # ------------------------------------------------------------------ checkpoints
    def _options(self, full: bool) -> Any:
        from torch.distributed.checkpoint.state_dict import StateDictOptions

        return StateDictOptions(full_state_dict=full, cpu_offload=full)

    def lightning_module_state_dict(self) -> dict[str, Any]:
        """The full state dict on rank 0 (``"full"``; empty elsewhere) or this rank's shards (``"sharded"``)."""
        from torch.distributed.checkpoint.state_dict import get_model_state_dict

        assert self._lightning_module is not None
        if self._model is None:
            return self._lightning_module.state_dict()
        return get_model_state_dict(self._lightning_module, options=self._options(self.state_dict_type == "full"))

    def optimizer_state(self, optimizer: Optimizer) -> dict[str, Any]:
        from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict

        from torchbolt.core.optimizer import LightningOptimizer

        if isinstance(optimizer, LightningOptimizer):
            optimizer = optimizer.optimizer
        assert self._lightning_module is not None
        return get_optimizer_state_dict(self._lightning_module, optimizer,
                                        options=self._options(self.state_dict_type == "full"))

    def save_checkpoint(self, checkpoint: dict[str, Any], filepath: _PATH, storage_options: Any | None = None) -> None:
        """``"full"``: one file from rank 0. ``"sharded"``: a directory (every rank writes its shards), made
        complete atomically: written next to the target, then renamed into place."""
        if self.state_dict_type == "full":
            super().save_checkpoint(checkpoint, filepath, storage_options=storage_options)
            return
        save_sharded(self, checkpoint, os.fspath(filepath), "fsdp")

    def load_checkpoint(self, checkpoint_path: _PATH, weights_only: bool | None = None) -> dict[str, Any]:
        """A full file is read as usual; for a sharded directory the metadata is read now and the shards
        are loaded into the sharded model in :meth:`load_model_state_dict` / :meth:`load_optimizer_state_dict`."""
        path = os.fspath(checkpoint_path)
        if not os.path.isdir(path):
            return super().load_checkpoint(path, weights_only=weights_only)
        meta_path = os.path.join(path, _META_FILE)
        if not os.path.exists(meta_path):
            raise FileNotFoundError(f"{path!r} is not a torchbolt sharded checkpoint: {_META_FILE} is missing.")
        checkpoint = self.checkpoint_io.load_checkpoint(meta_path, weights_only=weights_only)
        checkpoint[_SHARDED_KEY] = path
        return checkpoint

    def load_model_state_dict(self, checkpoint: dict[str, Any], strict: bool = True) -> None:
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

        module = self._lightning_module
        assert module is not None
        path = checkpoint.get(_SHARDED_KEY)
        if path is None:
            set_model_state_dict(module, checkpoint["state_dict"],
                                 options=StateDictOptions(full_state_dict=True, strict=strict))
            return
        load_sharded_model_state(module, path, strict)

    def load_optimizer_state_dict(self, checkpoint: dict[str, Any]) -> None:
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
                set_optimizer_state_dict(module, optimizer, optim_state_dict=state,
                                         options=StateDictOptions(full_state_dict=True))
            return
        load_sharded_optimizer_states(module, optimizers, path, len(checkpoint.get("optimizer_states", [])))

    def remove_checkpoint(self, filepath: _PATH) -> None:
        """Delete a full checkpoint file, or a sharded checkpoint directory file by file (never recursively).

        Raises:
            IsADirectoryError: ``filepath`` is a directory that holds anything but a sharded checkpoint's
                files; it is left untouched.
        """
        remove_file_or_sharded(self, filepath)


# what a sharded checkpoint directory holds: our metadata file, torch.distributed.checkpoint's
# ".metadata" (per rank without coordination) and shard files, and temporary files of interrupted writes
_SHARDED_ENTRY = re.compile(r"^(meta\.pt|(__\d+)?\.metadata(\.tmp)?|__\d+_\d+\.distcp)$")


def _check_sharded_dir(path: str) -> None:
    """Raise unless ``path`` is not a real directory or holds only a sharded checkpoint's files.

    Raises:
        IsADirectoryError: the directory holds a sub-folder or a file a sharded checkpoint never has, so
            it may be someone else's folder (named in the message; nothing is deleted).
    """
    if os.path.islink(path) or not os.path.isdir(path):
        return
    foreign = sorted(name for name in os.listdir(path) if not (
        (_SHARDED_ENTRY.match(name) or TEMP_FILE_PATTERN.match(name))
        and (os.path.islink(os.path.join(path, name)) or not os.path.isdir(os.path.join(path, name)))))
    if foreign:
        raise IsADirectoryError(
            f"{path} is a directory that is not only a sharded checkpoint (it also holds {foreign[:5]}), so it"
            " was left untouched: checkpoint directories are never deleted recursively. Remove it yourself if"
            " it is no longer needed."
        )


def _remove_sharded_dir(path: str) -> None:
    """Delete a sharded checkpoint directory without recursing: its known files one by one, then the empty folder.

    A symlink or a plain file at ``path`` is removed as such.

    Raises:
        IsADirectoryError: see ``_check_sharded_dir``; nothing is deleted then.
    """
    if os.path.islink(path) or not os.path.isdir(path):
        with contextlib.suppress(FileNotFoundError):
            os.remove(path)
        return
    _check_sharded_dir(path)
    for name in os.listdir(path):
        with contextlib.suppress(FileNotFoundError):
            os.remove(os.path.join(path, name))
    os.rmdir(path)


def _replace_dir(source: str, target: str) -> None:
    """Move the complete directory ``source`` to ``target``; an old ``target`` is removed only afterwards.

    Raises:
        IsADirectoryError: ``target`` (or its ``.old`` leftover) is a folder that is not a sharded
            checkpoint; checked before anything moves, so every file stays where it was.
    """
    old = target + ".old"
    _check_sharded_dir(target)
    _check_sharded_dir(old)
    if os.path.lexists(target):
        if os.path.lexists(old):
            _remove_sharded_dir(old)
        os.replace(target, old)
        os.replace(source, target)
        _remove_sharded_dir(old)
    else:
        os.replace(source, target)


register_strategy("fsdp", FSDPStrategy, "Fully sharded data parallel (FSDP2)")
register_strategy("fsdp_cpu_offload", FSDPStrategy, "FSDP2 with parameters and optimizer state on the CPU",
                  cpu_offload=True)


# ---------------------------------------------------------------------------------------------- sharded checkpoints
# The steps of a `torch.distributed.checkpoint` directory, shared by FSDPStrategy and ModelParallelStrategy.
def save_sharded(strategy: ParallelStrategy, checkpoint: dict[str, Any], path: str, tag: str) -> None:
    """Every rank writes its shards of ``checkpoint`` into a directory at ``path``; rank 0 adds ``meta.pt`` (the
    loop and callback state). Complete atomically: written to ``<path>.partial``, then renamed into place."""
    import torch.distributed.checkpoint as dcp

    partial = path + ".partial"
    if strategy.is_global_zero and os.path.lexists(partial):
        _remove_sharded_dir(partial)
    strategy.barrier(f"{tag}.save.prepare")
    tensors = {"state_dict": checkpoint.pop("state_dict"),
               "optimizer_states": checkpoint.pop("optimizer_states", [])}
    dcp.save(tensors, checkpoint_id=partial)
    if strategy.is_global_zero:
        # the optimizer entries keep their count; their tensors are in the shards
        checkpoint["optimizer_states"] = [None] * len(tensors["optimizer_states"])
        strategy.checkpoint_io.save_checkpoint(checkpoint, os.path.join(partial, _META_FILE))
        wait_for_checkpoint_writes(strategy.checkpoint_io)  # the directory is complete only with its metadata
        _replace_dir(partial, path)
    strategy.barrier(f"{tag}.save.done")


def load_sharded_model_state(module: nn.Module, path: str, strict: bool) -> None:
    """Load the model shards of the directory ``path`` into the (sharded or parallelized) ``module``."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict, set_model_state_dict

    state = {"state_dict": get_model_state_dict(module)}
    dcp.load(state, checkpoint_id=path)
    set_model_state_dict(module, state["state_dict"], options=StateDictOptions(strict=strict))


def load_sharded_optimizer_states(module: nn.Module, optimizers: list[Any], path: str, saved: int) -> None:
    """Load the first ``saved`` optimizers' states from the shards of the directory ``path``."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict, set_optimizer_state_dict

    state = {"optimizer_states": [get_optimizer_state_dict(module, opt) for opt in optimizers[:saved]]}
    dcp.load(state, checkpoint_id=path)
    for optimizer, loaded in zip(optimizers, state["optimizer_states"]):
        set_optimizer_state_dict(module, optimizer, optim_state_dict=loaded)


def remove_file_or_sharded(strategy: ParallelStrategy, filepath: _PATH) -> None:
    """On rank 0: delete a checkpoint file, or a sharded checkpoint directory file by file (never recursively)."""
    if strategy.is_global_zero:
        path = os.fspath(filepath)
        if os.path.isdir(path) and not os.path.islink(path):
            _remove_sharded_dir(path)
        else:
            strategy.checkpoint_io.remove_checkpoint(path)
