"""LayerSync / TorchSyncBatchNorm, FSDPPrecision, DeepSpeedPrecision and the XLA plug-ins through the public API."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

import torchbolt as pl
from torchbolt.plugins import DeepSpeedPrecision, FSDPPrecision, LayerSync, TorchSyncBatchNorm, XLACheckpointIO
from torchbolt.plugins.environments import XLAEnvironment
from torchbolt.profilers import XLAProfiler
from torchbolt.strategies import DDPStrategy
from torchbolt.utilities.exceptions import MisconfigurationException


def test_apply_converts_every_batchnorm_and_revert_restores_the_original_layers() -> None:
    model = nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4), nn.Sequential(nn.Flatten(), nn.BatchNorm1d(4 * 9)))
    originals = (model[1], model[2][1])
    plugin = TorchSyncBatchNorm()
    assert plugin.apply(model) is model
    assert isinstance(model[1], nn.SyncBatchNorm) and isinstance(model[2][1], nn.SyncBatchNorm)
    assert model[1].weight is originals[0].weight  # parameters shared, so the optimizer sees the same tensors

    model.train()
    model.eval()  # no process group: SyncBatchNorm behaves like BatchNorm, here in eval mode
    with torch.no_grad():
        model[1].running_mean.add_(2.0)
        model[1].weight.mul_(3.0)
    x = torch.randn(2, 3, 3, 3)
    converted_out = model(x)
    plugin.revert(model)
    assert model[1] is originals[0] and model[2][1] is originals[1]
    assert type(model[1]) is nn.BatchNorm2d and not model[1].training
    assert torch.equal(model[1].running_mean, torch.full((4,), 2.0))
    torch.testing.assert_close(model(x), converted_out)


def test_revert_of_a_layer_it_did_not_convert_gives_a_batchnorm_with_the_same_state() -> None:
    synced = nn.SyncBatchNorm(5, momentum=0.3)
    with torch.no_grad():
        synced.running_var.fill_(4.0)
    plain = TorchSyncBatchNorm().revert(nn.Sequential(synced))[0]
    assert not isinstance(plain, nn.SyncBatchNorm) and isinstance(plain, nn.modules.batchnorm._BatchNorm)
    assert plain.momentum == 0.3 and torch.equal(plain.running_var, torch.full((5,), 4.0))
    plain.eval()
    assert plain(torch.randn(3, 5, 2)).shape == (3, 5, 2)  # any input rank, like the SyncBatchNorm it replaces
    root = TorchSyncBatchNorm()
    assert isinstance(root.apply(nn.BatchNorm1d(2)), nn.SyncBatchNorm)  # the model itself may be a BatchNorm
    with pytest.raises(TypeError, match="nn.Module"):
        root.apply("model")  # type: ignore[arg-type]


class _Marker(LayerSync):
    def apply(self, model: nn.Module) -> nn.Module:
        return model

    def revert(self, model: nn.Module) -> nn.Module:
        return model


def _trainer(**kwargs: object) -> pl.Trainer:
    return pl.Trainer(accelerator="cpu", logger=False, enable_checkpointing=False, **kwargs)  # type: ignore[arg-type]


def test_trainer_gives_the_strategy_its_layer_sync_plugin() -> None:
    assert isinstance(_trainer(devices=2, sync_batchnorm=True).strategy.layer_sync, TorchSyncBatchNorm)
    plugin = TorchSyncBatchNorm()
    trainer = _trainer(devices=2, plugins=[plugin])
    assert trainer.strategy.layer_sync is plugin and trainer.strategy.sync_batchnorm
    custom = _Marker()
    assert _trainer(devices=2, strategy="ddp", plugins=[custom]).strategy.layer_sync is custom
    assert _trainer(devices=2).strategy.layer_sync is None
    with pytest.raises(MisconfigurationException, match="sync_batchnorm=True"):
        _trainer(devices=2, sync_batchnorm=True, plugins=[custom])
    with pytest.raises(MisconfigurationException, match="at most one"):
        _trainer(devices=2, plugins=[custom, _Marker()])


def test_torch_sync_batchnorm_under_cpu_ddp_is_refused_before_the_run() -> None:
    strategy = DDPStrategy()
    _trainer(devices=2, strategy=strategy, plugins=[TorchSyncBatchNorm()])
    model = nn.Sequential(nn.BatchNorm1d(2))
    strategy.connect(model)  # type: ignore[arg-type]
    with pytest.raises(MisconfigurationException, match="needs GPUs"):
        strategy.setup(model, lambda: None)  # type: ignore[arg-type]
    assert type(model[0]) is nn.BatchNorm1d  # nothing was converted


_JOB_VARIABLES = {"LOCAL_RANK", "RANK", "WORLD_SIZE", "NODE_RANK", "GROUP_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR",
                  "MASTER_PORT", "TORCHBOLT_LAUNCHER_PID", "TORCHBOLT_FAILURE_DIR"}
_FSDP_BF16_FIT = """
import torch, torchbolt as pl
from torchbolt.demos.boring_classes import BoringModel
from torchbolt.plugins import FSDPPrecision
from torchbolt.strategies import FSDPStrategy

class M(BoringModel):
    def training_step(self, batch, batch_idx):
        out = self.layer(batch)
        self.dtypes = (out.dtype, self.layer.weight.dtype)
        return out.float().sum()

model = M()
trainer = pl.Trainer(accelerator="cpu", devices=1, strategy=FSDPStrategy(), plugins=[FSDPPrecision("bf16-mixed")],
                     max_steps=2, limit_val_batches=0, logger=False, enable_checkpointing=False,
                     enable_progress_bar=False, enable_model_summary=False)
trainer.fit(model)
print(trainer.precision, trainer.global_step, *model.dtypes, next(model.parameters()).dtype)
"""


def test_fsdp_precision_bf16_mixed_trains_under_fsdp_on_cpu(tmp_path: Path, subprocess_env: dict[str, str]) -> None:
    plugin = FSDPPrecision("bf16-mixed")
    assert plugin.mixed_precision_config.param_dtype == torch.bfloat16
    assert plugin.mixed_precision_config.reduce_dtype == torch.float32
    # its own process: the FSDP run sets up a process group and rank variables for the whole interpreter
    script = tmp_path / "fsdp_bf16.py"  # a file: the launcher runs scripts, not `python -c`
    script.write_text(_FSDP_BF16_FIT)
    # a fresh single-process job: no rank or launcher variables that other tests of this session set
    env = {k: v for k, v in subprocess_env.items() if k not in _JOB_VARIABLES and not k.startswith("SLURM_")}
    proc = subprocess.run([sys.executable, str(script)], env=env, capture_output=True,
                          text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr
    # computed with bf16 weights gathered by FSDP; the sharded weights stay fp32
    assert proc.stdout.split()[-5:] == ["bf16-mixed", "2", "torch.bfloat16", "torch.bfloat16", "torch.float32"]


def test_fsdp_precision_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="FSDPPrecision"):
        FSDPPrecision("8-true")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="no scaler"):
        FSDPPrecision("bf16-mixed", scaler=object())
    if not torch.cuda.is_available():
        with pytest.raises(MisconfigurationException, match="bf16-mixed"):
            FSDPPrecision("16-mixed")


@pytest.mark.skipif(importlib.util.find_spec("deepspeed") is not None, reason="deepspeed is installed here")
def test_deepspeed_precision_without_deepspeed_names_the_package() -> None:
    with pytest.raises(ModuleNotFoundError, match="pip install deepspeed"):
        DeepSpeedPrecision("bf16-mixed")


@pytest.mark.skipif(importlib.util.find_spec("torch_xla") is not None, reason="torch_xla is installed here")
@pytest.mark.parametrize("make", [XLACheckpointIO, XLAEnvironment, XLAProfiler, lambda: _trainer(profiler="xla")])
def test_xla_plugins_without_torch_xla_name_the_package(make: object) -> None:
    with pytest.raises(ModuleNotFoundError, match="torch_xla"):
        make()  # type: ignore[operator]
