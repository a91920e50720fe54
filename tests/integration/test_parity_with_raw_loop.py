"""A fit ends with exactly the weights of a hand-written PyTorch loop over the same batches."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import torchbolt as pl


def _data() -> TensorDataset:
    g = torch.Generator().manual_seed(123)
    x = torch.randn(200, 16, generator=g)
    y = (x[:, :4].sum(dim=1) > 0).long()
    return TensorDataset(x, y)


def _net() -> nn.Module:
    return nn.Sequential(nn.Linear(16, 32), nn.Tanh(), nn.Dropout(0.2), nn.Linear(32, 2))


def _make_optimizer(name: str, params) -> torch.optim.Optimizer:
    if name == "sgd":
        return torch.optim.SGD(params, lr=0.1, momentum=0.9)
    return torch.optim.Adam(params, lr=1e-2)


class ParityModule(pl.LightningModule):
    def __init__(self, optimizer: str) -> None:
        super().__init__()
        self.net = _net()
        self.optimizer_name = optimizer

    def forward(self, x):
        return self.net(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = F.cross_entropy(self(x), y)
        self.log("loss", loss)
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.log("val_loss", F.cross_entropy(self(x), y))

    def configure_optimizers(self):
        return _make_optimizer(self.optimizer_name, self.parameters())


def _raw_loop(optimizer_name: str, epochs: int, accumulate: int) -> dict[str, torch.Tensor]:
    torch.manual_seed(7)
    model = _net()
    optimizer = _make_optimizer(optimizer_name, model.parameters())
    loader = DataLoader(_data(), batch_size=16, shuffle=True)
    val_loader = DataLoader(_data(), batch_size=50)
    for _ in range(epochs):
        model.train()
        n = len(loader)
        for i, (x, y) in enumerate(loader):
            loss = F.cross_entropy(model(x), y) / accumulate
            if i % accumulate == 0:
                optimizer.zero_grad()
            loss.backward()
            if (i + 1) % accumulate == 0 or i + 1 == n:
                optimizer.step()
        model.eval()
        with torch.no_grad():
            for x, _ in val_loader:  # the validation pass draws from the same global generator
                model(x)
    return {k: v.clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
@pytest.mark.parametrize("accumulate", [1, 3])
def test_fit_matches_hand_written_loop_bit_for_bit(optimizer: str, accumulate: int) -> None:
    expected = _raw_loop(optimizer, epochs=3, accumulate=accumulate)

    torch.manual_seed(7)
    model = ParityModule(optimizer)
    trainer = pl.Trainer(
        max_epochs=3, accumulate_grad_batches=accumulate, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=2,
    )
    trainer.fit(model, DataLoader(_data(), batch_size=16, shuffle=True), DataLoader(_data(), batch_size=50))

    got = {k.removeprefix("net."): v for k, v in model.state_dict().items()}
    assert got.keys() == expected.keys()
    for key in expected:
        assert torch.equal(got[key], expected[key]), key
    assert trainer.global_step == 3 * -(-13 // accumulate)
