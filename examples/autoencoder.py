"""An autoencoder that compresses scikit-learn's 8x8 digits (no download) to 8 numbers and back.

    python examples/autoencoder.py           # ~30 epochs
    python examples/autoencoder.py --fast    # a few epochs, for the test suite

Prints the validation reconstruction error before and after training, then one machine-checkable line:
``RESULT initial_val_loss=<float> final_val_loss=<float>`` (the second must be lower).
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from torch import nn
from torch.utils.data import DataLoader, TensorDataset, random_split

import torchbolt as pl


class DigitsImages(pl.LightningDataModule):
    """The 1,797 digits as 64-pixel vectors in [0, 1] (labels dropped), split 85/15."""

    def __init__(self, batch_size: int = 64) -> None:
        super().__init__()
        self.batch_size = batch_size

    def setup(self, stage: str) -> None:
        images = torch.tensor(load_digits().data, dtype=torch.float32) / 16.0
        full = TensorDataset(images)
        n_val = int(0.15 * len(full))
        self.train_set, self.val_set = random_split(
            full, [len(full) - n_val, n_val], generator=torch.Generator().manual_seed(0)
        )

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self.train_set, batch_size=self.batch_size, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.val_set, batch_size=512)


class AutoEncoder(pl.LightningModule):
    """64 pixels -> ``code_size`` numbers -> 64 pixels; the loss is the mean squared reconstruction error."""

    def __init__(self, code_size: int = 8, hidden: int = 64, lr: float = 3e-3) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.encoder = nn.Sequential(nn.Linear(64, hidden), nn.ReLU(), nn.Linear(hidden, code_size))
        self.decoder = nn.Sequential(nn.Linear(code_size, hidden), nn.ReLU(), nn.Linear(hidden, 64), nn.Sigmoid())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The code of each image (what a user of a trained autoencoder wants)."""
        return self.encoder(x)

    def training_step(self, batch, batch_idx):
        (x,) = batch
        loss = F.mse_loss(self.decoder(self.encoder(x)), x)
        self.log("train_loss", loss, prog_bar=True)
        return loss

    def validation_step(self, batch, batch_idx):
        (x,) = batch
        self.log("val_loss", F.mse_loss(self.decoder(self.encoder(x)), x), prog_bar=True)

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=self.hparams.lr)


def main(argv: list[str] | None = None) -> tuple[float, float]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-epochs", type=int, default=30)
    parser.add_argument("--fast", action="store_true", help="train a few epochs only (used by the tests)")
    parser.add_argument("--root-dir", default=".", help="where lightning_logs/ is written")
    args = parser.parse_args(argv)

    pl.seed_everything(0)
    data, model = DigitsImages(), AutoEncoder()
    trainer = pl.Trainer(
        max_epochs=4 if args.fast else args.max_epochs,
        default_root_dir=args.root_dir,
        enable_progress_bar=not args.fast,
        enable_model_summary=not args.fast,
        enable_checkpointing=False,
        num_sanity_val_steps=0,
        log_every_n_steps=10,
    )
    initial = trainer.validate(model, datamodule=data, verbose=False)[0]["val_loss"]
    trainer.fit(model, datamodule=data)
    final = trainer.validate(model, datamodule=data, verbose=False)[0]["val_loss"]
    print(f"validation reconstruction error: {initial:.4f} before training, {final:.4f} after")
    print(f"RESULT initial_val_loss={initial:.6f} final_val_loss={final:.6f}")
    return initial, final


if __name__ == "__main__":
    main()
