"""Data-parallel training on the CPU: two processes, one script, nothing in the model changes.

    python examples/ddp.py            # 2 processes over gloo, prints the test accuracy from rank 0
    python examples/ddp.py --fast     # fewer epochs, for the test suite

`strategy="ddp"` re-runs this script for rank 1; each process trains on half of every epoch
(a DistributedSampler is added to the loaders), gradients are averaged by
torch.distributed, and `sync_dist=True` makes the logged validation metrics global means.
The same script runs unchanged with `torchrun --nproc_per_node 2 examples/ddp.py`.
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from torch import nn
from torch.utils.data import DataLoader, TensorDataset, random_split

import torchbolt as pl


class DigitsData(pl.LightningDataModule):
    def setup(self, stage: str) -> None:
        images, labels = load_digits(return_X_y=True)
        data = TensorDataset(torch.tensor(images, dtype=torch.float32) / 16, torch.tensor(labels))
        generator = torch.Generator().manual_seed(0)
        self.train_set, self.val_set, self.test_set = random_split(data, [1257, 270, 270], generator=generator)

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self.train_set, batch_size=32, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.val_set, batch_size=135)

    def test_dataloader(self) -> DataLoader:
        return DataLoader(self.test_set, batch_size=135)


class Classifier(pl.LightningModule):
    def __init__(self, lr: float = 2e-3) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.net = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = F.cross_entropy(self(x), y)
        self.log("train_loss", loss)
        return loss

    def _evaluate(self, batch, prefix: str) -> None:
        x, y = batch
        logits = self(x)
        # sync_dist: every rank logs its shard; the epoch value is the mean over all ranks' samples
        self.log(f"{prefix}_loss", F.cross_entropy(logits, y), sync_dist=True)
        self.log(f"{prefix}_acc", (logits.argmax(1) == y).float().mean(), sync_dist=True)

    def validation_step(self, batch, batch_idx):
        self._evaluate(batch, "val")

    def test_step(self, batch, batch_idx):
        self._evaluate(batch, "test")

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=self.hparams.lr)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fast", action="store_true", help="train a few epochs only (used by the tests)")
    parser.add_argument("--devices", type=int, default=2)
    args = parser.parse_args()

    pl.seed_everything(0)  # every rank starts from the same weights
    trainer = pl.Trainer(
        accelerator="cpu", devices=args.devices, strategy="ddp", max_epochs=4 if args.fast else 15,
        enable_progress_bar=False, logger=False, enable_checkpointing=False, enable_model_summary=False,
    )
    data = DigitsData()
    trainer.fit(Classifier(), datamodule=data)
    results = trainer.test(trainer.lightning_module, datamodule=data, verbose=False)
    if trainer.is_global_zero:
        print(f"RESULT world_size={trainer.world_size} steps={trainer.global_step}"
              f" test_acc={results[0]['test_acc']:.4f}")


if __name__ == "__main__":
    main()
