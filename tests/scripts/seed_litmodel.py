"""The seeds' first example, unchanged except for the import (random data stands in for MNIST)."""

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

import torchbolt as pl


class LitModel(pl.LightningModule):
    def __init__(self):
        super().__init__()
        self.model = nn.Sequential(
            nn.Linear(28 * 28, 128),
            nn.ReLU(),
            nn.Linear(128, 10)
        )

    def forward(self, x):
        return self.model(x.view(x.size(0), -1))

    def training_step(self, batch, batch_idx):
        x, y = batch
        logits = self(x)
        loss = F.cross_entropy(logits, y)
        return loss

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=0.02)


if __name__ == "__main__":
    torch.manual_seed(0)
    x = torch.randn(256, 1, 28, 28)
    y = torch.randint(0, 10, (256,))
    train_loader = DataLoader(TensorDataset(x, y), batch_size=32, shuffle=True)
    val_loader = DataLoader(TensorDataset(x[:64], y[:64]), batch_size=32)
    model = LitModel()
    first = F.cross_entropy(model(x), y).item()
    trainer = pl.Trainer(max_epochs=10)
    trainer.fit(model, train_loader, val_loader)
    last = F.cross_entropy(model(x), y).item()
    print(f"RESULT epochs={trainer.current_epoch} steps={trainer.global_step} first={first:.4f} last={last:.4f}")
