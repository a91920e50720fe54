"""Pure resolvers: ``accelerator``, ``devices``, ``num_nodes``, ``strategy``, ``precision`` and ``plugins``
-> a configured strategy, once per Trainer.

The result is a configured :class:`~torchbolt.strategies.Strategy` that owns the accelerator,
precision plug-in, checkpoint I/O and cluster environment. Nothing here runs per batch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from torchbolt.accelerators import Accelerator, CPUAccelerator, CUDAAccelerator, MPSAccelerator
from torchbolt.plugins.environments import ClusterEnvironment, LightningEnvironment
from torchbolt.plugins.io import CheckpointIO
from torchbolt.plugins.layer_sync import split_layer_sync
from torchbolt.plugins.precision import Precision
from torchbolt.plugins.precision.resolve import precision_plugin_for
from torchbolt.strategies import SingleDeviceStrategy, Strategy
from torchbolt.strategies.registry import StrategyRegistry, import_strategy_modules
from torchbolt.trainer.legacy import apply_legacy_device_args
from torchbolt.utilities.exceptions import MisconfigurationException

_ACCELERATORS: dict[str, type[Accelerator]] = {"cpu": CPUAccelerator, "cuda": CUDAAccelerator, "mps": MPSAccelerator}
_ACCELERATOR_NAMES = ("auto", "cpu", "gpu", "cuda", "mps", "tpu")


@dataclass
class ResolvedPlugins:
    """What the Trainer's device arguments resolved to."""

    strategy: Strategy
    accelerator: Accelerator
    precision: str
    num_devices: int
    device_ids: list[int]
    num_nodes: int
    cluster_environment: ClusterEnvironment


def _select_accelerator(accelerator: Any) -> Accelerator:
    if isinstance(accelerator, Accelerator):
        return accelerator
    if not isinstance(accelerator, str) or accelerator.lower() not in _ACCELERATOR_NAMES:
        raise MisconfigurationException(
            f"`Trainer(accelerator={accelerator!r})` is not supported. Choose one of {list(_ACCELERATOR_NAMES)}"
            " or pass an `Accelerator` instance."
        )
    name = accelerator.lower()
    if name == "auto":
        if CUDAAccelerator.is_available():
            name = "cuda"
        elif MPSAccelerator.is_available():
            name = "mps"
        else:
            name = "cpu"
    elif name == "gpu":
        if CUDAAccelerator.is_available():
            name = "cuda"
        elif MPSAccelerator.is_available():
            name = "mps"
        else:
            raise MisconfigurationException(
                "`Trainer(accelerator='gpu')` was requested, but no GPU is available (torch.cuda.is_available()"
                f" is False; torch {torch.__version__}). Use `accelerator='cpu'` (or 'auto'), or install a"
                " CUDA build of PyTorch on a machine with a GPU."
            )
    if name == "tpu":
        from torchbolt.accelerators.xla import XLAAccelerator  # optional: only when asked for

        if not XLAAccelerator.is_available():
            raise MisconfigurationException(
                "`Trainer(accelerator='tpu')` needs `torch_xla` and a TPU; neither was found."
                " Use `accelerator='cpu'` or 'gpu'."
            )
        return XLAAccelerator()
    cls = _ACCELERATORS[name]
    if not cls.is_available():
        raise MisconfigurationException(
            f"`Trainer(accelerator={accelerator!r})` was requested, but {name.upper()} is not available here."
            " Use `accelerator='cpu'` or 'auto'."
        )
    return cls()


def _split_plugins(plugins: Any) -> tuple[Precision | None, CheckpointIO | None, ClusterEnvironment | None]:
    if plugins is None:
        return None, None, None
    items = plugins if isinstance(plugins, (list, tuple)) else [plugins]
    precision = checkpoint_io = environment = None
    for plugin in items:
        if isinstance(plugin, Precision):
            precision = plugin
        elif isinstance(plugin, CheckpointIO):
            checkpoint_io = plugin
        elif isinstance(plugin, ClusterEnvironment):
            environment = plugin
        else:
            raise MisconfigurationException(
                f"`Trainer(plugins=...)` got {type(plugin).__name__}; expected Precision, CheckpointIO or"
                " ClusterEnvironment instances, or a LayerSync (e.g. TorchSyncBatchNorm)."
            )
    return precision, checkpoint_io, environment


def _detect_environment() -> ClusterEnvironment:
    from torchbolt.plugins.environments import detect_cluster_environment

    return detect_cluster_environment()


def resolve_plugins(
    accelerator: Any,
    strategy: Any,
    devices: Any,
    num_nodes: Any,
    precision: str | None,
    plugins: Any,
    sync_batchnorm: bool,
    legacy: dict[str, Any],
) -> ResolvedPlugins:
    """Build the strategy and its plug-ins from the Trainer's arguments.

    Raises:
        MisconfigurationException: for unknown names, unavailable hardware or contradictory arguments.
    """
    accelerator, devices, strategy = apply_legacy_device_args(accelerator, devices, strategy, legacy,
                                                              _ACCELERATOR_NAMES)
    _check_device_args(num_nodes, devices)
    layer_sync, plugins = split_layer_sync(plugins, sync_batchnorm)
    precision_plugin, checkpoint_io, environment = _split_plugins(plugins)
    if isinstance(strategy, Strategy) and strategy.accelerator is not None and accelerator == "auto":
        accel = strategy.accelerator
    else:
        accel = _select_accelerator(accelerator)
    parsed = accel.parse_devices(devices)
    if isinstance(parsed, int):
        num_devices, device_ids = parsed, list(range(parsed))
    else:
        device_ids = list(parsed or [])
        num_devices = len(device_ids)
    if num_devices == 0:
        raise MisconfigurationException(f"`Trainer(devices={devices!r})` selects no {type(accel).__name__} device.")
    environment = environment or _detect_environment()

    strategy_obj = _select_strategy(strategy, accel, num_devices, device_ids, num_nodes, environment)
    if strategy_obj.accelerator is None:
        strategy_obj.accelerator = accel
    if checkpoint_io is not None:
        strategy_obj.checkpoint_io = checkpoint_io
    device_type = strategy_obj.root_device.type if not isinstance(accel, CPUAccelerator) else "cpu"
    _attach_precision_plugin(strategy_obj, precision, precision_plugin, device_type)
    if layer_sync is not None:
        strategy_obj.layer_sync = layer_sync
    return ResolvedPlugins(
        strategy=strategy_obj,
        accelerator=accel,
        precision=getattr(strategy_obj.precision_plugin, "precision", precision or "32-true"),
        num_devices=num_devices,
        device_ids=device_ids,
        num_nodes=num_nodes,
        cluster_environment=environment,
    )


def _check_device_args(num_nodes: Any, devices: Any) -> None:
    """Reject a ``num_nodes`` that is not an int >= 1, and a ``devices`` of the wrong type or selecting nothing.

    Raises:
        MisconfigurationException: naming the argument and what it accepts.
    """
    if not isinstance(num_nodes, int) or isinstance(num_nodes, bool) or num_nodes < 1:
        raise MisconfigurationException(f"`Trainer(num_nodes={num_nodes!r})` is invalid: expected an int >= 1.")
    if not isinstance(devices, (int, str, list, tuple)):
        raise MisconfigurationException(
            f"`Trainer(devices={devices!r})` is invalid: expected an int (a count), a list of device indices,"
            " a string such as '0,1' or 'auto'."
        )
    if devices == 0 or devices == "0" or devices == []:
        raise MisconfigurationException(
            f"`Trainer(devices={devices!r})` selects no device. Pass a positive count, a list of indices or 'auto'."
        )


def _attach_precision_plugin(
    strategy: Strategy, precision: str | None, precision_plugin: Precision | None, device_type: str
) -> None:
    """Give ``strategy`` the plug-in from ``plugins``, else (when it has none yet) the one ``precision`` names.

    Raises:
        MisconfigurationException: when both ``precision`` and a precision plug-in were passed.
    """
    if precision_plugin is not None:
        if precision is not None:
            raise MisconfigurationException(
                f"Received both `precision={precision!r}` and a precision plug-in in `plugins`. Choose one."
            )
        strategy.precision_plugin = precision_plugin
    elif strategy._precision_plugin is None:
        strategy.precision_plugin = precision_plugin_for(precision or "32-true", device_type, strategy)


def _root_device(accel: Accelerator, device_ids: list[int]) -> torch.device:
    if isinstance(accel, CUDAAccelerator):
        return torch.device("cuda", device_ids[0])
    if isinstance(accel, MPSAccelerator):
        return torch.device("mps", 0)
    if isinstance(accel, CPUAccelerator):
        return torch.device("cpu")
    devices = accel.get_parallel_devices(device_ids if device_ids else 1)
    return devices[0] if devices else torch.device("cpu")


def _select_strategy(
    strategy: Any,
    accel: Accelerator,
    num_devices: int,
    device_ids: list[int],
    num_nodes: int,
    environment: ClusterEnvironment,
) -> Strategy:
    if isinstance(strategy, Strategy):
        return _configure_parallel(strategy, accel, device_ids, num_nodes, environment)
    if not isinstance(strategy, str):
        raise MisconfigurationException(
            f"`Trainer(strategy={strategy!r})` must be a string or a `Strategy` instance."
        )
    name = strategy.lower()
    if name == "auto":
        if num_devices == 1 and num_nodes == 1 and not environment.creates_processes_externally:
            name = "single_device"
        else:
            name = "ddp"
    if name == "single_device":
        if num_devices > 1 or num_nodes > 1:
            raise MisconfigurationException(
                f"`strategy='single_device'` cannot use {num_devices} devices on {num_nodes} node(s);"
                " use `strategy='ddp'` or `devices=1`."
            )
        return SingleDeviceStrategy(device=_root_device(accel, device_ids), accelerator=accel)
    if name not in StrategyRegistry:
        import_strategy_modules()
    if name not in StrategyRegistry:
        from torchbolt.strategies.registry import available_strategies

        raise MisconfigurationException(
            f"`Trainer(strategy={strategy!r})` is not a known strategy. Choose one of"
            f" {['auto', 'single_device', *available_strategies()]} or pass a `Strategy` instance."
        )
    entry = StrategyRegistry[name]
    built = entry["factory"](**entry["init_params"])
    return _configure_parallel(built, accel, device_ids, num_nodes, environment)


def _configure_parallel(
    strategy: Strategy, accel: Accelerator, device_ids: list[int], num_nodes: int, environment: ClusterEnvironment
) -> Strategy:
    """Give a parallel strategy its devices, node count and environment (single-device ones ignore them)."""
    configure = getattr(strategy, "_configure_topology", None)
    if configure is not None:
        configure(accelerator=accel, device_ids=device_ids, num_nodes=num_nodes, environment=environment)
    return strategy


__all__ = ["LightningEnvironment", "ResolvedPlugins", "resolve_plugins"]
