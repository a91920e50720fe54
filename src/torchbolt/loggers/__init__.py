"""Experiment loggers, at Lightning's names and module paths.

Each logger imports its backend package (tensorboard, mlflow, wandb, comet_ml, litlogger) only when it is created or
first writes, so ``import torchbolt`` never pays for them.
"""

from torchbolt.loggers.comet import CometLogger
from torchbolt.loggers.csv_logs import CSVLogger
from torchbolt.loggers.litlogger import LitLogger
from torchbolt.loggers.logger import DummyLogger, Logger
from torchbolt.loggers.mlflow import MLFlowLogger
from torchbolt.loggers.neptune import NeptuneLogger  # kept for imports; it cannot be created (as in Lightning 2.6)
from torchbolt.loggers.tensorboard import TensorBoardLogger, _tensorboard_available
from torchbolt.loggers.wandb import WandbLogger
from torchbolt.utilities.rank_zero import rank_zero_warn

__all__ = [
    "CSVLogger",
    "CometLogger",
    "DummyLogger",
    "LitLogger",
    "Logger",
    "MLFlowLogger",
    "NeptuneLogger",
    "TensorBoardLogger",
    "WandbLogger",
]


def _default_logger(root_dir: str) -> Logger:
    """The logger of ``Trainer(logger=True)``: TensorBoard when installed, else CSV, in ``<root_dir>/lightning_logs``."""
    if _tensorboard_available():
        return TensorBoardLogger(save_dir=root_dir)
    rank_zero_warn(
        "`Trainer(logger=True)` writes CSV logs (metrics.csv) because `tensorboard` is not installed. Install it"
        " with `pip install 'torchbolt[tensorboard]'` to get TensorBoard event files instead."
    )
    return CSVLogger(save_dir=root_dir)
