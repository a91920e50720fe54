"""The research-code classes: ``LightningModule`` and ``LightningDataModule``."""

from torchbolt.core.datamodule import LightningDataModule
from torchbolt.core.module import LightningModule

__all__ = ["LightningDataModule", "LightningModule"]
