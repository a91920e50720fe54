"""CUDA-only behaviour: mixed and true-half precision on the GPU, pinned-memory transfers, and no host
synchronization inside a training step (``torch.cuda.set_sync_debug_mode("error")``).

Run with ``pytest -m gpu``; without CUDA every test here is skipped (see ``tests/conftest.py``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

import torchbolt as pl
from torchbolt.accelerators import CUDAAccelerator, find_usable_cuda_devices
from torchbolt.plugins.precision import HalfPrecision, MixedPrecision
from torchbolt.utilities.apply_func import move_data_to_device

pytestmark = pytest.mark.gpu


def _loader(pin_memory: bool = True, shuffle: bool = False, n: int = 64) -> DataLoader:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 32, generator=g)
    return DataLoader(TensorDataset(x, (x[:, 0] > 0).long()), batch_size=16, pin_memory=pin_memory, shuffle=shuffle)


class Model(pl.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 2))
        self.seen: dict[str, Any] = {}

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        x, y = batch
        logits = self.net(x)
        self.seen.update(device=x.device, activation=logits.dtype, param=self.net[0].weight.dtype)
        loss = F.cross_entropy(logits.float(), y)
        self.log("loss", loss, prog_bar=True)  # a tensor, every step
        self.log("constant", 1.5)  # a Python number, every step
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        x, y = batch
        self.log("val_loss", F.cross_entropy(self.net(x).float(), y))

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.AdamW(self.parameters(), lr=1e-3)


def _trainer(**kwargs: Any) -> pl.Trainer:
    defaults: dict[str, Any] = dict(accelerator="gpu", devices=1, max_epochs=1, logger=False,
                                    enable_checkpointing=False, enable_progress_bar=False,
                                    enable_model_summary=False)
    defaults.update(kwargs)
    return pl.Trainer(**defaults)


def test_16_mixed_runs_fp16_autocast_with_a_scaler_and_checkpoints_it(tmp_path: Path) -> None:
    trainer = _trainer(precision="16-mixed")
    model = Model()
    trainer.fit(model, _loader())
    plugin = trainer.precision_plugin
    assert isinstance(plugin, MixedPrecision) and plugin.scaler is not None and plugin.scaler.is_enabled()
    assert model.seen == {"device": torch.device("cuda", 0), "activation": torch.float16, "param": torch.float32}
    trainer.save_checkpoint(tmp_path / "amp.ckpt")
    assert "scale" in torch.load(tmp_path / "amp.ckpt", weights_only=True)["MixedPrecision"]


@pytest.mark.skipif(torch.cuda.is_available() and not torch.cuda.is_bf16_supported(), reason="no bf16 on this GPU")
def test_bf16_mixed_runs_bf16_autocast_without_a_scaler() -> None:
    trainer = _trainer(precision="bf16-mixed")
    model = Model()
    trainer.fit(model, _loader())
    assert trainer.precision_plugin.scaler is None  # type: ignore[attr-defined]
    assert model.seen["activation"] == torch.bfloat16 and model.seen["param"] == torch.float32


@pytest.mark.parametrize(("precision", "dtype"), [("16-true", torch.float16), ("bf16-true", torch.bfloat16)])
def test_true_half_precision_puts_half_weights_on_the_gpu(precision: str, dtype: torch.dtype) -> None:
    if dtype == torch.bfloat16 and not torch.cuda.is_bf16_supported():
        pytest.skip("no bf16 on this GPU")
    trainer = _trainer(precision=precision)
    model = Model()
    trainer.fit(model, _loader())
    assert isinstance(trainer.precision_plugin, HalfPrecision)
    assert model.seen == {"device": torch.device("cuda", 0), "activation": dtype, "param": dtype}


def test_pinned_batch_moves_to_the_gpu_without_blocking() -> None:
    batch = (torch.randn(1024, 1024).pin_memory(), torch.arange(4).pin_memory())
    moved = move_data_to_device(batch, torch.device("cuda", 0))
    assert all(t.is_cuda for t in moved)
    torch.cuda.synchronize()
    assert torch.equal(moved[0].cpu(), batch[0]) and torch.equal(moved[1].cpu(), batch[1])


def test_loaders_torchbolt_recreates_pin_memory_on_cuda() -> None:
    trainer = _trainer(overfit_batches=2)  # overfitting re-creates a shuffled loader as sequential
    trainer.fit(Model(), _loader(pin_memory=False, shuffle=True))
    assert trainer.train_dataloader.pin_memory


@pytest.mark.parametrize("precision", ["32-true", "bf16-mixed", "bf16-true"])
def test_no_host_synchronization_inside_training_steps(precision: str) -> None:
    if "bf16" in precision and not torch.cuda.is_bf16_supported():
        pytest.skip("no bf16 on this GPU")

    class NoSync(Model):
        def on_train_start(self) -> None:
            torch.cuda.synchronize()
            torch.cuda.set_sync_debug_mode("error")  # any host<->device synchronization now raises

        def on_train_end(self) -> None:
            torch.cuda.set_sync_debug_mode("default")

    trainer = _trainer(precision=precision, gradient_clip_val=1.0, limit_val_batches=0, max_epochs=2)
    try:
        trainer.fit(NoSync(), _loader())
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert trainer.global_step == 8


def test_cuda_device_selection_and_cudnn_benchmark() -> None:
    trainer = _trainer(devices="0,", benchmark=True)
    assert isinstance(trainer.accelerator, CUDAAccelerator)
    assert trainer.strategy.root_device == torch.device("cuda", 0)
    assert torch.backends.cudnn.benchmark is True
    assert find_usable_cuda_devices(1) == [0]
