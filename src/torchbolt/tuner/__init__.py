"""Tuning before training: the learning-rate finder and the batch-size finder (``Tuner``)."""

from torchbolt.tuner.tuning import Tuner

__all__ = ["Tuner"]
