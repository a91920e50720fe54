"""Callbacks, at the names and module paths Lightning users import them from.

The training-technique callbacks (tuners, weight averaging, pruning, ...) are imported on first
use, so ``import torchbolt`` does not pay for them.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from torchbolt.callbacks.callback import Callback
from torchbolt.callbacks.checkpoint import Checkpoint
from torchbolt.callbacks.early_stopping import EarlyStopping
from torchbolt.callbacks.lambda_function import LambdaCallback
from torchbolt.callbacks.lr_monitor import LearningRateMonitor
from torchbolt.callbacks.model_checkpoint import ModelCheckpoint
from torchbolt.callbacks.model_summary import ModelSummary
from torchbolt.callbacks.on_exception_checkpoint import OnExceptionCheckpoint
from torchbolt.callbacks.prediction_writer import BasePredictionWriter
from torchbolt.callbacks.progress import ProgressBar, RichProgressBar, TQDMProgressBar
from torchbolt.callbacks.rich_model_summary import RichModelSummary
from torchbolt.callbacks.timer import Timer

if TYPE_CHECKING:
    from torchbolt.callbacks.batch_size_finder import BatchSizeFinder
    from torchbolt.callbacks.device_stats_monitor import DeviceStatsMonitor
    from torchbolt.callbacks.finetuning import BackboneFinetuning, BaseFinetuning
    from torchbolt.callbacks.gradient_accumulation_scheduler import GradientAccumulationScheduler
    from torchbolt.callbacks.lr_finder import LearningRateFinder
    from torchbolt.callbacks.nonfinite_guard import NonFiniteGuard, NonFiniteTrainingError
    from torchbolt.callbacks.pruning import ModelPruning
    from torchbolt.callbacks.spike import SpikeDetection, TrainingSpikeException
    from torchbolt.callbacks.stochastic_weight_avg import StochasticWeightAveraging
    from torchbolt.callbacks.throughput_monitor import ThroughputMonitor
    from torchbolt.callbacks.weight_averaging import EMAWeightAveraging, WeightAveraging

_LAZY = {
    "BackboneFinetuning": "finetuning",
    "BaseFinetuning": "finetuning",
    "BatchSizeFinder": "batch_size_finder",
    "DeviceStatsMonitor": "device_stats_monitor",
    "EMAWeightAveraging": "weight_averaging",
    "GradientAccumulationScheduler": "gradient_accumulation_scheduler",
    "LearningRateFinder": "lr_finder",
    "ModelPruning": "pruning",
    "NonFiniteGuard": "nonfinite_guard",
    "NonFiniteTrainingError": "nonfinite_guard",
    "SpikeDetection": "spike",
    "StochasticWeightAveraging": "stochastic_weight_avg",
    "ThroughputMonitor": "throughput_monitor",
    "TrainingSpikeException": "spike",
    "WeightAveraging": "weight_averaging",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


__all__ = [
    "BackboneFinetuning",
    "BaseFinetuning",
    "BasePredictionWriter",
    "BatchSizeFinder",
    "Callback",
    "Checkpoint",
    "DeviceStatsMonitor",
    "EMAWeightAveraging",
    "EarlyStopping",
    "GradientAccumulationScheduler",
    "LambdaCallback",
    "LearningRateFinder",
    "LearningRateMonitor",
    "ModelCheckpoint",
    "ModelPruning",
    "ModelSummary",
    "NonFiniteGuard",
    "NonFiniteTrainingError",
    "OnExceptionCheckpoint",
    "ProgressBar",
    "RichModelSummary",
    "RichProgressBar",
    "SpikeDetection",
    "StochasticWeightAveraging",
    "TQDMProgressBar",
    "ThroughputMonitor",
    "Timer",
    "TrainingSpikeException",
    "WeightAveraging",
]
