"""torchbolt: PyTorch Lightning's API on a small, fast engine.

``import torchbolt as pl`` gives the names Lightning users expect.
"""

__version__ = "0.1.0"

from torchbolt.callbacks.callback import Callback
from torchbolt.core.datamodule import LightningDataModule
from torchbolt.core.module import LightningModule
from torchbolt.trainer.trainer import Trainer
from torchbolt.utilities.seed import seed_everything

__all__ = ["Callback", "LightningDataModule", "LightningModule", "Trainer", "__version__", "seed_everything"]
