"""The digits classifier driven by ``LightningCLI``: every setting comes from YAML files and flags.

    python examples/cli/main.py fit --config examples/cli/configs/digits.yaml
    python examples/cli/main.py fit --config examples/cli/configs/digits.yaml --config examples/cli/configs/sgd.yaml
    python examples/cli/main.py fit --config examples/cli/configs/digits.yaml --model.hidden 256 --trainer.max_epochs 5
    python examples/cli/main.py fit --config examples/cli/configs/digits.yaml --print_config
    python examples/cli/main.py test --config <log_dir>/config.yaml --ckpt_path <log_dir>/final.ckpt
    python examples/cli/main.py fit --config examples/cli/configs/digits.yaml --fast   # the test suite's run

``fit`` saves the full configuration (seed included) as ``config.yaml`` and the final weights as
``final.ckpt`` in the log directory, then prints ``RESULT subcommand=fit val_acc=<float> log_dir=<path>``;
``test`` prints ``RESULT subcommand=test test_acc=<float>``. Needs ``pip install 'torchbolt[cli]'``.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from torch import nn
from torch.utils.data import DataLoader, TensorDataset, random_split

import torchbolt as pl
from torchbolt.cli import LightningArgumentParser, LightningCLI


class DigitsDataModule(pl.LightningDataModule):
    """scikit-learn's 1,797 bundled 8x8 digits (no download), split 70/15/15 with a fixed generator."""

    def __init__(self, batch_size: int = 64, split_seed: int = 0) -> None:
        super().__init__()
        self.batch_size, self.split_seed = batch_size, split_seed
        self.num_features, self.num_classes = 64, 10  # linked to the model's arguments by the CLI

    def setup(self, stage: str) -> None:
        images, labels = load_digits(return_X_y=True)
        full = TensorDataset(torch.tensor(images, dtype=torch.float32) / 16.0, torch.tensor(labels))
        n_val = n_test = int(0.15 * len(full))
        generator = torch.Generator().manual_seed(self.split_seed)
        self.train_set, self.val_set, self.test_set = random_split(
            full, [len(full) - n_val - n_test, n_val, n_test], generator=generator
        )

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self.train_set, batch_size=self.batch_size, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.val_set, batch_size=512)

    def test_dataloader(self) -> DataLoader:
        return DataLoader(self.test_set, batch_size=512)


class DigitsClassifier(pl.LightningModule):
    """An MLP over the 64 pixels. The optimizer comes from ``--optimizer`` (Adam when none is given)."""

    def __init__(self, num_features: int = 64, num_classes: int = 10, hidden: int = 128, dropout: float = 0.1) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.net = nn.Sequential(
            nn.Linear(num_features, hidden), nn.ReLU(), nn.Dropout(dropout), nn.Linear(hidden, num_classes)
        )

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
        self.log(f"{prefix}_loss", F.cross_entropy(logits, y))
        self.log(f"{prefix}_acc", (logits.argmax(dim=1) == y).float().mean(), prog_bar=True)

    def validation_step(self, batch, batch_idx):
        self._evaluate(batch, "val")

    def test_step(self, batch, batch_idx):
        self._evaluate(batch, "test")

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=1e-3)


class DigitsCLI(LightningCLI):
    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        # the datamodule knows the data's shape: pass it to the model instead of repeating it in configs
        parser.link_arguments("data.num_features", "model.num_features", apply_on="instantiate")
        parser.link_arguments("data.num_classes", "model.num_classes", apply_on="instantiate")
        parser.add_argument("--fast", action="store_true", help="a few short epochs, quietly (used by the tests)")

    def before_instantiate_classes(self) -> None:
        config = self.config[self.subcommand]
        if config.fast:
            config.trainer.max_epochs = 3
            config.trainer.enable_progress_bar = False
            config.trainer.enable_model_summary = False

    def after_fit(self) -> None:
        log_dir = Path(self.trainer.log_dir)
        self.trainer.save_checkpoint(log_dir / "final.ckpt")
        val_acc = float(self.trainer.callback_metrics["val_acc"])
        print(f"RESULT subcommand=fit val_acc={val_acc:.4f} log_dir={log_dir}")

    def after_test(self) -> None:
        print(f"RESULT subcommand=test test_acc={float(self.trainer.callback_metrics['test_acc']):.4f}")


def cli_main() -> None:
    DigitsCLI(DigitsClassifier, DigitsDataModule)


if __name__ == "__main__":
    cli_main()
