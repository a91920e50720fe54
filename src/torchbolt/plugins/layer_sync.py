"""Layer-synchronization plug-ins: swap layers for process-group-aware versions for the length of a run.

``Trainer(sync_batchnorm=True)`` is ``Trainer(plugins=[TorchSyncBatchNorm()])``. A distributed strategy
calls :meth:`LayerSync.apply` on the model before wrapping it, and :meth:`LayerSync.revert` when the run
ends, so the model you get back holds its ordinary layers with what was learned.
"""

from __future__ import annotations

import weakref
from abc import ABC, abstractmethod
from typing import Any

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from torchbolt.utilities.exceptions import MisconfigurationException

__all__ = ["LayerSync", "TorchSyncBatchNorm", "split_layer_sync"]


class LayerSync(ABC):
    """Base class of plug-ins that replace layers by synchronized ones.

    Subclasses implement :meth:`apply` (called by the strategy before the model is wrapped, once per
    fit) and :meth:`revert` (called when the run ends). Both may modify the model in place and must
    return the model to use from then on.

    Example::

        class MySync(LayerSync):
            def apply(self, model): ...   # swap layers in
            def revert(self, model): ...  # swap them back

        Trainer(strategy="ddp", devices=4, plugins=[MySync()])
    """

    @abstractmethod
    def apply(self, model: nn.Module) -> nn.Module:
        """Replace the layers this plug-in synchronizes inside ``model``; returns the model to use."""

    @abstractmethod
    def revert(self, model: nn.Module) -> nn.Module:
        """Undo :meth:`apply` on ``model`` (learned values kept); returns the model to use."""


class _AnyDimBatchNorm(_BatchNorm):
    """A plain (unsynchronized) BatchNorm that accepts inputs of any rank >= 2, like ``SyncBatchNorm``.

    ``revert`` builds one when it meets a ``SyncBatchNorm`` it did not create itself, because the
    original layer's dimensionality (1d, 2d, 3d) is unknown then.
    """

    def _check_input_dim(self, input: torch.Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected an input with at least 2 dimensions, got {input.dim()}")


class TorchSyncBatchNorm(LayerSync):
    """Converts every ``BatchNorm1d/2d/3d`` of a model to ``torch.nn.SyncBatchNorm`` and back.

    While converted, batch statistics in training are computed over all ranks of the process group
    (default: the whole world), so each rank normalizes with the same mean and variance and the
    running statistics stay equal across ranks. The converted layers share their parameters and
    buffers with the originals.

    torch's ``SyncBatchNorm`` only synchronizes CUDA (and XPU/HPU) tensors: on the CPU its training
    forward raises inside a process group of more than one rank, so DDP on CPU refuses this plug-in
    before the run starts.

    Example::

        model = TorchSyncBatchNorm().apply(model)   # BatchNorm2d -> SyncBatchNorm
        model = TorchSyncBatchNorm().revert(model)  # SyncBatchNorm -> BatchNorm2d
    """

    def __init__(self) -> None:
        # converted layer -> the layer it replaced, so `revert` restores the user's own module objects
        self._originals: weakref.WeakKeyDictionary[nn.Module, nn.Module] = weakref.WeakKeyDictionary()

    def apply(self, model: nn.Module) -> nn.Module:
        """Replace every BatchNorm layer in ``model`` (``model`` itself included) by a ``SyncBatchNorm``.

        Raises:
            TypeError: ``model`` is not an ``nn.Module``.
        """
        _check_module(model, "apply")
        if _is_plain_batchnorm(model):
            return self._convert(model)
        for parent in list(model.modules()):
            for name, child in list(parent.named_children()):
                if _is_plain_batchnorm(child):
                    setattr(parent, name, self._convert(child))
        return model

    def revert(self, model: nn.Module) -> nn.Module:
        """Replace every ``SyncBatchNorm`` in ``model`` by a plain BatchNorm holding the same tensors.

        Layers converted by this plug-in get their original module back (same class and object); others
        become a BatchNorm that accepts any input rank.

        Raises:
            TypeError: ``model`` is not an ``nn.Module``.
        """
        _check_module(model, "revert")
        if isinstance(model, nn.SyncBatchNorm):
            return self._restore(model)
        for parent in list(model.modules()):
            for name, child in list(parent.named_children()):
                if isinstance(child, nn.SyncBatchNorm):
                    setattr(parent, name, self._restore(child))
        return model

    def _convert(self, layer: nn.Module) -> nn.Module:
        converted = nn.SyncBatchNorm.convert_sync_batchnorm(layer)
        self._originals[converted] = layer
        return converted

    def _restore(self, synced: nn.SyncBatchNorm) -> nn.Module:
        original = self._originals.pop(synced, None)
        if original is None:
            original = _AnyDimBatchNorm(synced.num_features, synced.eps, synced.momentum, synced.affine,
                                        synced.track_running_stats)
        # hand over the synced layer's current tensors: a `.to()` or a state load during the run may have
        # replaced them, so sharing at conversion time is not enough
        for name in ("weight", "bias"):
            if name in synced._parameters:
                original._parameters[name] = synced._parameters[name]
        for name in ("running_mean", "running_var", "num_batches_tracked"):
            if name in synced._buffers:
                original._buffers[name] = synced._buffers[name]
        original.train(synced.training)
        return original


def _is_plain_batchnorm(module: nn.Module) -> bool:
    return isinstance(module, _BatchNorm) and not isinstance(module, nn.SyncBatchNorm)


def _check_module(model: object, method: str) -> None:
    if not isinstance(model, nn.Module):
        raise TypeError(f"`TorchSyncBatchNorm().{method}(model)` needs an `nn.Module`, got {type(model).__name__}.")


def split_layer_sync(plugins: Any, sync_batchnorm: bool) -> tuple[LayerSync | None, list[Any] | None]:
    """Take the ``LayerSync`` out of ``Trainer(plugins=...)``; returns it (or ``TorchSyncBatchNorm`` for
    ``sync_batchnorm=True``, or ``None``) and the other plug-ins (``None`` when none were passed).

    Raises:
        MisconfigurationException: for two ``LayerSync`` plug-ins, or ``sync_batchnorm=True`` together
            with a ``LayerSync`` that is not a ``TorchSyncBatchNorm``.
    """
    items = [] if plugins is None else list(plugins) if isinstance(plugins, (list, tuple)) else [plugins]
    found = [p for p in items if isinstance(p, LayerSync)]
    rest = [p for p in items if not isinstance(p, LayerSync)]
    if len(found) > 1:
        raise MisconfigurationException(
            f"`Trainer(plugins=...)` got {len(found)} LayerSync plug-ins ({[type(p).__name__ for p in found]});"
            " pass at most one."
        )
    layer_sync = found[0] if found else None
    if sync_batchnorm and layer_sync is not None and not isinstance(layer_sync, TorchSyncBatchNorm):
        raise MisconfigurationException(
            f"`Trainer(sync_batchnorm=True)` asks for `TorchSyncBatchNorm`, but `plugins` holds"
            f" {type(layer_sync).__name__}. Remove `sync_batchnorm=True` to use your plug-in, or drop the plug-in."
        )
    if layer_sync is None and sync_batchnorm:
        layer_sync = TorchSyncBatchNorm()
    return layer_sync, (rest if plugins is not None else None)
