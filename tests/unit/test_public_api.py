"""Names and module paths Lightning users import exist in torchbolt."""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest


@pytest.mark.parametrize(
    ("module", "names"),
    [
        ("torchbolt", ["LightningModule", "LightningDataModule", "Trainer", "Callback", "seed_everything"]),
        ("torchbolt.core", ["LightningModule", "LightningDataModule"]),
        ("torchbolt.core.module", ["LightningModule"]),
        ("torchbolt.core.datamodule", ["LightningDataModule"]),
        ("torchbolt.core.hooks", ["ModelHooks", "DataHooks", "CheckpointHooks"]),
        ("torchbolt.core.optimizer", ["LightningOptimizer"]),
        ("torchbolt.core.mixins", ["HyperparametersMixin"]),
        ("torchbolt.callbacks", ["Callback", "ModelSummary", "RichModelSummary", "TQDMProgressBar",
                                 "RichProgressBar", "ProgressBar", "Timer", "Checkpoint"]),
        ("torchbolt.loggers", ["Logger", "CSVLogger"]),
        ("torchbolt.trainer", ["Trainer"]),
        ("torchbolt.trainer.states", ["TrainerFn", "TrainerStatus", "RunningStage", "TrainerState"]),
        ("torchbolt.utilities", ["rank_zero_only", "rank_zero_info", "rank_zero_warn", "apply_to_collection",
                                 "move_data_to_device", "seed_everything", "CombinedLoader", "grad_norm",
                                 "AttributeDict", "MisconfigurationException"]),
        ("torchbolt.utilities.seed", ["seed_everything", "isolate_rng", "reset_seed"]),
        ("torchbolt.utilities.rank_zero", ["rank_zero_only", "rank_zero_info", "rank_zero_warn",
                                           "rank_zero_debug", "rank_zero_deprecation"]),
        ("torchbolt.utilities.types", ["STEP_OUTPUT", "OptimizerLRScheduler", "EVAL_DATALOADERS"]),
        ("torchbolt.utilities.model_summary", ["ModelSummary", "summarize"]),
        ("torchbolt.utilities.exceptions", ["MisconfigurationException"]),
        ("torchbolt.demos.boring_classes", ["BoringModel", "BoringDataModule", "RandomDataset"]),
        ("torchbolt.accelerators", ["Accelerator", "CPUAccelerator", "CUDAAccelerator", "MPSAccelerator"]),
        ("torchbolt.strategies", ["Strategy", "SingleDeviceStrategy"]),
        ("torchbolt.plugins", ["Precision", "CheckpointIO", "TorchCheckpointIO", "ClusterEnvironment"]),
        ("torchbolt.plugins.precision", ["Precision"]),
        ("torchbolt.plugins.environments", ["ClusterEnvironment", "LightningEnvironment"]),
        ("torchbolt.profilers", ["Profiler", "PassThroughProfiler"]),
        # seen in real user scripts (warning filters, type hints, DeepSpeed conversion)
        ("torchbolt.utilities.warnings", ["PossibleUserWarning"]),
        ("torchbolt.utilities.rank_zero", ["LightningDeprecationWarning", "WarningCache"]),
        ("torchbolt.utilities.types", ["LRSchedulerConfig", "TRAIN_DATALOADERS", "LRSchedulerTypeUnion"]),
        ("torchbolt.utilities.deepspeed", ["convert_zero_checkpoint_to_fp32_state_dict"]),
    ],
)
def test_lightning_import_paths(module: str, names: list[str]) -> None:
    imported = importlib.import_module(module)
    missing = [name for name in names if not hasattr(imported, name)]
    assert not missing


def test_import_is_light(subprocess_env: dict[str, str]) -> None:
    code = (
        "import sys, torchbolt; heavy = ['tensorboard', 'mlflow', 'wandb', 'jsonargparse', 'rich', 'matplotlib',"
        " 'torchmetrics', 'deepspeed', 'pytorch_lightning', 'lightning', 'sklearn']; "
        "print(sorted(m for m in heavy if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], env=subprocess_env, capture_output=True, text=True,
                         check=True).stdout.strip()
    assert out == "[]"
