"""Train a small classifier on scikit-learn's bundled 8x8 digits (no download), then test it.

    python examples/digits.py            # ~20 epochs, prints the test accuracy
    python examples/digits.py --fast     # a few epochs, for the test suite

Logs and the best checkpoint go under ``lightning_logs/`` (or ``--root-dir``).
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from torch import nn
from torch.utils.data import DataLoader, TensorDataset, random_split

import torchbolt as pl
from torchbolt.callbacks import ModelCheckpoint


class DigitsDataModule(pl.LightningDataModule):
    """The 1,797 digits images, scaled to [0, 1], split 70/15/15 with a fixed generator."""

    def __init__(self, batch_size: int = 64, seed: int = 0) -> None:
        super().__init__()
        self.save_hyperparameters()

    def prepare_data(self) -> None:
        load_digits()  # bundled with scikit-learn: nothing to download

    def setup(self, stage: str) -> None:
        images, labels = load_digits(return_X_y=True)
        x = torch.tensor(images, dtype=torch.float32) / 16.0
        y = torch.tensor(labels, dtype=torch.long)
        full = TensorDataset(x, y)
        n_val = n_test = int(0.15 * len(full))
        generator = torch.Generator().manual_seed(self.hparams.seed)
        self.train_set, self.val_set, self.test_set = random_split(
            full, [len(full) - n_val - n_test, n_val, n_test], generator=generator
        )

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self.train_set, batch_size=self.hparams.batch_size, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.val_set, batch_size=256)

    def test_dataloader(self) -> DataLoader:
        return DataLoader(self.test_set, batch_size=256)


class DigitsClassifier(pl.LightningModule):
    """A two-layer MLP over the 64 pixels."""

    def __init__(self, hidden: int = 128, lr: float = 2e-3) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.net = nn.Sequential(nn.Linear(64, hidden), nn.ReLU(), nn.Dropout(0.1), nn.Linear(hidden, 10))
        self.example_input_array = torch.zeros(1, 64)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = F.cross_entropy(self(x), y)
        self.log("train_loss", loss, prog_bar=True)
        return loss

    def _evaluate(self, batch, prefix: str) -> None:
        x, y = batch
        logits = self(x)
        self.log(f"{prefix}_loss", F.cross_entropy(logits, y), prog_bar=True)
        self.log(f"{prefix}_acc", (logits.argmax(dim=1) == y).float().mean(), prog_bar=True)

    def validation_step(self, batch, batch_idx):
        self._evaluate(batch, "val")

    def test_step(self, batch, batch_idx):
        self._evaluate(batch, "test")

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=self.hparams.lr)


def main(argv: list[str] | None = None) -> float:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-epochs", type=int, default=20)
    parser.add_argument("--fast", action="store_true", help="train a few epochs only (used by the tests)")
    parser.add_argument("--root-dir", default=".", help="where lightning_logs/ is written")
    args = parser.parse_args(argv)

    pl.seed_everything(42)
    datamodule = DigitsDataModule()
    model = DigitsClassifier()
    checkpoint = ModelCheckpoint(monitor="val_acc", mode="max")
    trainer = pl.Trainer(
        max_epochs=5 if args.fast else args.max_epochs,
        default_root_dir=args.root_dir,
        callbacks=[checkpoint],
        enable_progress_bar=not args.fast,
        deterministic=True,
    )
    trainer.fit(model, datamodule=datamodule)
    results = trainer.test(datamodule=datamodule, ckpt_path="best")
    accuracy = results[0]["test_acc"]
    print(f"test accuracy: {accuracy:.4f}")
    print(f"best checkpoint: {checkpoint.best_model_path}")
    print(f"logs: {trainer.log_dir}")
    return accuracy


if __name__ == "__main__":
    main()
