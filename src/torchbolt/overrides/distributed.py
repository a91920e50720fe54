"""``lightning.pytorch.overrides.distributed`` names, for code written against Lightning.

The classes live in :mod:`torchbolt.utilities.distributed` and :mod:`torchbolt.callbacks.prediction_writer`.
"""

from torchbolt.callbacks.prediction_writer import _IndexBatchSamplerWrapper
from torchbolt.utilities.distributed import DistributedSamplerWrapper, UnrepeatedDistributedSampler

__all__ = ["DistributedSamplerWrapper", "UnrepeatedDistributedSampler", "_IndexBatchSamplerWrapper"]
