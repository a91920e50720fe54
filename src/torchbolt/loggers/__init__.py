"""Experiment loggers, at Lightning's names and paths."""

from torchbolt.loggers.csv_logs import CSVLogger
from torchbolt.loggers.logger import DummyLogger, Logger

__all__ = ["CSVLogger", "DummyLogger", "Logger"]


def _default_logger(root_dir: str) -> Logger:
    """The logger of ``Trainer(logger=True)``: TensorBoard when installed, else CSV, under ``lightning_logs``."""
    return CSVLogger(save_dir=root_dir)
