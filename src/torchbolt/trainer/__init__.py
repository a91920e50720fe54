"""The Trainer and its loops."""

from torchbolt.trainer.trainer import Trainer

__all__ = ["Trainer"]
