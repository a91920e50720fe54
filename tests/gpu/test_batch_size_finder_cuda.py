"""The batch-size finder against real CUDA out-of-memory errors, and the memory it leaves behind."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import torchbolt as pl
from torchbolt.tuner import Tuner

pytestmark = pytest.mark.gpu


class CudaHungry(pl.LightningModule):
    """Each sample of a batch holds ``bytes_per_sample`` of activations on the GPU during the step."""

    def __init__(self, batch_size: int = 2, bytes_per_sample: int = 0) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.net = nn.Linear(4, 1)

    def training_step(self, batch, batch_idx):
        x, y = batch
        hog = torch.empty(x.shape[0] * self.hparams.bytes_per_sample, dtype=torch.uint8, device=self.device)
        return F.mse_loss(self.net(x), y) + hog[:1].float().sum() * 0

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=1e-3)

    def train_dataloader(self):
        x = torch.randn(4096, 4)
        return DataLoader(TensorDataset(x, x.sum(1, keepdim=True)), batch_size=self.hparams.batch_size)


@pytest.mark.parametrize("mode", ["power", "binsearch"])
def test_finds_a_size_that_fits_in_device_memory_and_releases_what_trials_held(mode):
    torch.cuda.empty_cache()
    free, _ = torch.cuda.mem_get_info()
    # a budget for about 100 samples, whatever the device's size
    model = CudaHungry(bytes_per_sample=free // 100)
    trainer = pl.Trainer(accelerator="cuda", devices=1, max_epochs=1, logger=False, enable_progress_bar=False,
                         enable_model_summary=False, enable_checkpointing=False)
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    size = Tuner(trainer).scale_batch_size(model, mode=mode, max_trials=12)
    assert size is not None and 32 <= size <= 100
    if mode == "power":
        assert size == 64
    else:
        assert size > 64
    assert all(torch.equal(weights[k], v.cpu()) for k, v in model.state_dict().items())
    # nothing a failed trial allocated is still held
    assert torch.cuda.memory_allocated() < 64 * 2**20
