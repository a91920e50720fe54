"""``DeepSpeedStrategy``: ZeRO stages 1-3 (optionally offloaded) through the ``deepspeed`` engine.

``deepspeed`` is imported only when this strategy is built; without it a clear error says how to
install it. Checkpoints are DeepSpeed checkpoint directories; torchbolt's own state (loops,
callbacks, hyperparameters) is stored next to the shards in a safe-to-load file.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Generator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from torchbolt.accelerators.accelerator import Accelerator
from torchbolt.plugins.environments import ClusterEnvironment
from torchbolt.plugins.io.checkpoint_io import _PATH, CheckpointIO
from torchbolt.plugins.precision.precision import Precision
from torchbolt.strategies.parallel import ParallelStrategy, _ForwardRedirection
from torchbolt.strategies.registry import register_strategy
from torchbolt.utilities.exceptions import MisconfigurationException

if TYPE_CHECKING:
    from torch.optim import Optimizer

    from torchbolt.core.module import LightningModule

_TAG = "checkpoint"
_CLIENT_STATE = "torchbolt_state.ckpt"
_DS_KEY = "_torchbolt_deepspeed_checkpoint"


def _import_deepspeed() -> Any:
    try:
        import deepspeed
    except ImportError as e:
        raise MisconfigurationException(
            "`Trainer(strategy='deepspeed')` needs the `deepspeed` package, which could not be imported"
            f" ({e}). Install it with `pip install deepspeed` (or `pip install torchbolt[deepspeed]`)."
        ) from e
    return deepspeed


class DeepSpeedStrategy(ParallelStrategy):
    """ZeRO-sharded training with DeepSpeed.

    Args:
        stage: the ZeRO stage: 1 (shard optimizer state), 2 (+ gradients), 3 (+ parameters).
        offload_optimizer: keep optimizer state (and its step) on ``offload_optimizer_device``.
        offload_parameters: keep parameters on ``offload_params_device`` (stage 3).
        config: a DeepSpeed config as a dict or a JSON file path; it replaces the settings built from
            the other arguments. ``gradient_accumulation_steps`` comes from the Trainer.
        logging_batch_size_per_gpu: the micro batch size DeepSpeed reports throughput with.
        **zero_kwargs: more ``zero_optimization`` settings (``overlap_comm``, ``reduce_bucket_size``, ...).

    Example::

        trainer = Trainer(accelerator="gpu", devices=8, strategy=DeepSpeedStrategy(stage=3, offload_optimizer=True))
    """

    strategy_name = "deepspeed"

    def __init__(
        self,
        accelerator: Accelerator | None = None,
        zero_optimization: bool = True,
        stage: int = 2,
        offload_optimizer: bool = False,
        offload_parameters: bool = False,
        offload_optimizer_device: str = "cpu",
        offload_params_device: str = "cpu",
        nvme_path: str = "/local_nvme",
        pin_memory: bool = False,
        config: str | Path | dict[str, Any] | None = None,
        logging_batch_size_per_gpu: int | str = "auto",
        logging_level: int = logging.WARN,
        zero_allow_untested_optimizer: bool = True,
        parallel_devices: list[torch.device] | None = None,
        cluster_environment: ClusterEnvironment | None = None,
        checkpoint_io: CheckpointIO | None = None,
        precision_plugin: Precision | None = None,
        process_group_backend: str | None = None,
        timeout: timedelta | None = None,
        **zero_kwargs: Any,
    ) -> None:
        self._deepspeed = _import_deepspeed()
        super().__init__(accelerator=accelerator, parallel_devices=parallel_devices,
                         cluster_environment=cluster_environment, checkpoint_io=checkpoint_io,
                         precision_plugin=precision_plugin, process_group_backend=process_group_backend,
                         timeout=timeout)
        if stage not in (0, 1, 2, 3):
            raise MisconfigurationException(f"`DeepSpeedStrategy(stage={stage})`: ZeRO stages are 0, 1, 2 and 3.")
        if offload_parameters and stage != 3:
            raise MisconfigurationException(
                "`DeepSpeedStrategy(offload_parameters=True)` needs ZeRO stage 3; set `stage=3`.")
        self.stage = stage
        self._logging_batch_size = logging_batch_size_per_gpu
        logging.getLogger("DeepSpeed").setLevel(logging_level)
        if config is not None:
            self.config = self._load_config(config)
        else:
            zero: dict[str, Any] = {"stage": stage, **zero_kwargs} if zero_optimization else {"stage": 0}
            if offload_optimizer:
                zero["offload_optimizer"] = {"device": offload_optimizer_device, "nvme_path": nvme_path,
                                             "pin_memory": pin_memory}
            if offload_parameters:
                zero["offload_param"] = {"device": offload_params_device, "nvme_path": nvme_path,
                                         "pin_memory": pin_memory}
            self.config = {"zero_optimization": zero, "zero_allow_untested_optimizer": zero_allow_untested_optimizer}

    @staticmethod
    def _load_config(config: str | Path | dict[str, Any]) -> dict[str, Any]:
        if isinstance(config, dict):
            return dict(config)
        path = Path(config)
        if not path.is_file():
            raise MisconfigurationException(f"`DeepSpeedStrategy(config={str(config)!r})`: no such file.")
        with open(path) as f:
            return json.load(f)

    @property
    def restore_checkpoint_after_setup(self) -> bool:
        return True

    @property
    def deepspeed_engine(self) -> Any:
        """The ``deepspeed.DeepSpeedEngine`` wrapping the module (``None`` before setup)."""
        return self._model

    # ------------------------------------------------------------------ setup
    def setup_environment(self) -> None:
        super().setup_environment()
        # DeepSpeed's communication layer wraps the process group created above
        self._deepspeed.init_distributed(dist_backend=self.process_group_backend, verbose=False)

    def _engine_config(self, module: LightningModule, fitting: bool) -> dict[str, Any]:
        config = json.loads(json.dumps(self.config))  # a deep copy that DeepSpeed may modify
        try:
            trainer: Any = module.trainer
        except RuntimeError:  # not attached to a Trainer (the strategy used on its own)
            trainer = None
        accumulate = int(getattr(trainer, "accumulate_grad_batches", 1)) if trainer is not None else 1
        if config.get("gradient_accumulation_steps", accumulate) != accumulate:
            raise MisconfigurationException(
                "Do not set `gradient_accumulation_steps` in the DeepSpeed config; it comes from"
                " `Trainer(accumulate_grad_batches=...)`."
            )
        config["gradient_accumulation_steps"] = accumulate
        if "train_micro_batch_size_per_gpu" not in config and "train_batch_size" not in config:
            size = self._logging_batch_size
            config["train_micro_batch_size_per_gpu"] = size if isinstance(size, int) else 1
        clip = getattr(trainer, "gradient_clip_val", None) if trainer is not None else None
        if clip and getattr(trainer, "gradient_clip_algorithm", "norm") == "value":
            raise MisconfigurationException(
                "DeepSpeed clips gradients by norm only; use `gradient_clip_algorithm='norm'`.")
        # the Trainer's setting (none by default): recent DeepSpeed versions otherwise clip at 1.0
        config.setdefault("gradient_clipping", float(clip or 0.0))
        precision = getattr(self.precision_plugin, "precision", "32-true")
        if precision.startswith("16") and "fp16" not in config:
            config["fp16"] = {"enabled": True}
        elif precision.startswith("bf16") and "bf16" not in config:
            config["bf16"] = {"enabled": True}
        if not fitting:
            config.pop("optimizer", None)
            config.pop("scheduler", None)
            if self.stage < 3:
                config.pop("zero_optimization", None)
        return config

    def setup(self, module: LightningModule, setup_optimizers: Callable[[], None] | None) -> None:
        """Create the optimizers, then hand module and optimizer to ``deepspeed.initialize``."""
        self.model_to_device()
        fitting = setup_optimizers is not None
        optimizer = None
        if fitting:
            setup_optimizers()  # type: ignore[misc]
            if len(self.optimizers) > 1:
                raise MisconfigurationException(
                    "DeepSpeed supports one optimizer; `configure_optimizers` returned"
                    f" {len(self.optimizers)}. Return a single optimizer (with parameter groups if needed)."
                )
            optimizer = self.optimizers[0] if self.optimizers else None
            optimizer = getattr(optimizer, "optimizer", optimizer)
        config = self._engine_config(module, fitting)
        engine, ds_optimizer, _, _ = self._deepspeed.initialize(
            model=module, optimizer=optimizer, config=config, dist_init_required=False,
            model_parameters=None if optimizer is not None else list(module.parameters()))
        self._model = engine
        if ds_optimizer is not None:
            self.optimizers = [ds_optimizer]

    # ------------------------------------------------------------------ steps
    def _call_step(self, name: str, args: tuple, kwargs: dict[str, Any]) -> Any:
        module = self._lightning_module
        assert module is not None
        if self._model is None:
            return getattr(module, name)(*args, **kwargs)
        # through the engine's forward (ZeRO-3 gathers parameters there)
        return _ForwardRedirection()(self._model, module, name, args, kwargs)

    def backward(self, closure_loss: Tensor, optimizer: Optimizer | None, *args: Any, **kwargs: Any) -> Tensor:
        """``engine.backward`` (DeepSpeed scales fp16 losses itself); the loop already divided the loss
        by the accumulation steps, so DeepSpeed must not divide it again."""
        module = self._lightning_module
        closure_loss = self.precision_plugin.pre_backward(closure_loss, module)
        self.deepspeed_engine.backward(closure_loss, scale_wrt_gas=False)
        return self.precision_plugin.post_backward(closure_loss, module)

    def optimizer_step(self, optimizer: Optimizer, closure: Callable[[], Any],
                       on_gradients_ready: Callable[[Optimizer], None], **kwargs: Any) -> Any:
        """Run the closure (forward and backward), the pre-step hooks, then ``engine.step()``."""
        engine = self.deepspeed_engine
        engine.set_gradient_accumulation_boundary(True)
        result = closure()
        on_gradients_ready(optimizer)
        engine.step()
        return result

    @contextmanager
    def no_backward_sync(self, enabled: bool) -> Generator[None, None, None]:
        """Tell DeepSpeed whether this micro-batch ends an accumulation window (it reduces gradients then)."""
        engine = self.deepspeed_engine
        if engine is not None:
            engine.set_gradient_accumulation_boundary(not enabled)
        yield

    # ------------------------------------------------------------------ checkpoints
    def lightning_module_state_dict(self) -> dict[str, Any]:
        # the weights live in DeepSpeed's checkpoint files (see `save_checkpoint`)
        return {}

    def optimizer_state(self, optimizer: Optimizer) -> dict[str, Any]:
        return {}

    def save_checkpoint(self, checkpoint: dict[str, Any], filepath: _PATH, storage_options: Any | None = None) -> None:
        """Every rank writes its ZeRO shards under ``filepath`` (a directory); rank 0 adds torchbolt's state."""
        path = self.broadcast(os.fspath(filepath))
        client = {k: v for k, v in checkpoint.items() if k not in ("state_dict", "optimizer_states")}
        self.deepspeed_engine.save_checkpoint(path, tag=_TAG)
        if self.is_global_zero:
            client["optimizer_states"] = [None]
            self.checkpoint_io.save_checkpoint(client, os.path.join(path, _CLIENT_STATE))
        self.barrier("deepspeed.save")

    def load_checkpoint(self, checkpoint_path: _PATH, weights_only: bool | None = None) -> dict[str, Any]:
        path = os.fspath(checkpoint_path)
        if not os.path.isdir(path):
            raise MisconfigurationException(
                f"DeepSpeed resumes from a DeepSpeed checkpoint directory; {path!r} is not one. To start from a"
                " plain checkpoint file, load its `state_dict` into the model before `fit`."
            )
        checkpoint = self.checkpoint_io.load_checkpoint(os.path.join(path, _CLIENT_STATE), weights_only=weights_only)
        checkpoint[_DS_KEY] = path
        return checkpoint

    def load_model_state_dict(self, checkpoint: dict[str, Any], strict: bool = True) -> None:
        """Load weights and, when fitting, optimizer state, from the DeepSpeed shards."""
        self.deepspeed_engine.load_checkpoint(checkpoint[_DS_KEY], tag=_TAG, load_module_strict=strict,
                                    load_optimizer_states=bool(self.optimizers), load_lr_scheduler_states=False)

    def load_optimizer_state_dict(self, checkpoint: dict[str, Any]) -> None:
        """Loaded with the weights in :meth:`load_model_state_dict`."""


def remove_module_hooks(model: torch.nn.Module) -> None:
    """Drop every forward/backward hook registered on ``model`` and its submodules.

    DeepSpeed ZeRO stage 3 registers hooks that gather sharded parameters; a model taken out of the
    engine (e.g. to run it on one device) must lose them, or it keeps trying to gather.
    """
    from collections import OrderedDict

    for module in model.modules():
        module._backward_hooks = OrderedDict()
        module._is_full_backward_hook = None
        module._forward_hooks = OrderedDict()
        module._forward_pre_hooks = OrderedDict()
        module._state_dict_hooks = OrderedDict()
        module._load_state_dict_pre_hooks = OrderedDict()


def convert_zero_checkpoint_to_fp32_state_dict(checkpoint_dir: _PATH, output_file: _PATH) -> dict[str, Any]:
    """Merge a DeepSpeed checkpoint directory into one torchbolt checkpoint file with a full fp32 ``state_dict``
    (loadable on one device, with ``LightningModule.load_from_checkpoint`` or ``Trainer(ckpt_path=...)``).

    Returns:
        The checkpoint dict that was written.
    """
    from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

    from torchbolt.plugins.io.torch_io import TorchCheckpointIO

    io = TorchCheckpointIO()
    directory = os.fspath(checkpoint_dir)
    checkpoint = io.load_checkpoint(os.path.join(directory, _CLIENT_STATE))
    checkpoint["state_dict"] = get_fp32_state_dict_from_zero_checkpoint(directory, tag=_TAG)
    checkpoint.pop("optimizer_states", None)
    io.save_checkpoint(checkpoint, output_file)
    return checkpoint


_VARIANTS: dict[str, dict[str, Any]] = {
    "deepspeed": {},
    "deepspeed_stage_1": {"stage": 1},
    "deepspeed_stage_1_offload": {"stage": 1, "offload_optimizer": True},
    "deepspeed_stage_2": {"stage": 2},
    "deepspeed_stage_2_offload": {"stage": 2, "offload_optimizer": True},
    "deepspeed_stage_3": {"stage": 3},
    "deepspeed_stage_3_offload": {"stage": 3, "offload_optimizer": True, "offload_parameters": True},
    "deepspeed_stage_3_offload_nvme": {"stage": 3, "offload_optimizer": True, "offload_parameters": True,
                                       "offload_optimizer_device": "nvme", "offload_params_device": "nvme"},
}
for _name, _kwargs in _VARIANTS.items():
    register_strategy(_name, DeepSpeedStrategy, f"DeepSpeed ZeRO ({_kwargs or 'stage 2'})", **_kwargs)
