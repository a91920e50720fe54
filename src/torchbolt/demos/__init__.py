"""Small models and datasets for examples, tests and bug reports (nothing here downloads)."""

from torchbolt.demos.boring_classes import BoringDataModule, BoringModel, DemoModel
from torchbolt.demos.lstm import LightningLSTM, SequenceSampler, SimpleLSTM
from torchbolt.demos.transformer import LightningTransformer, Transformer, WikiText2

__all__ = [
    "BoringDataModule",
    "BoringModel",
    "DemoModel",
    "LightningLSTM",
    "LightningTransformer",
    "SequenceSampler",
    "SimpleLSTM",
    "Transformer",
    "WikiText2",
]
