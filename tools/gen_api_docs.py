"""Generate ``docs/api.md``, the API reference, from the docstrings of torchbolt's public names.

    python tools/gen_api_docs.py            # rewrite docs/api.md
    python tools/gen_api_docs.py --check    # exit 1 when docs/api.md is out of date (used by the tests)
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUTPUT = ROOT / "docs" / "api.md"

# (module, names) in the order the reference presents them; every name must be importable
SECTIONS: list[tuple[str, str, list[str]]] = [
    ("Core", "torchbolt", ["LightningModule", "LightningDataModule", "Trainer", "Callback", "seed_everything"]),
    ("Callbacks", "torchbolt.callbacks", [
        "ModelCheckpoint", "EarlyStopping", "LearningRateMonitor", "Timer", "OnExceptionCheckpoint",
        "LambdaCallback", "BasePredictionWriter", "ModelSummary", "RichModelSummary", "TQDMProgressBar",
        "RichProgressBar", "StochasticWeightAveraging", "WeightAveraging", "EMAWeightAveraging", "ModelPruning",
        "GradientAccumulationScheduler", "BaseFinetuning", "BackboneFinetuning", "SpikeDetection",
        "NonFiniteGuard", "LearningRateFinder", "BatchSizeFinder", "DeviceStatsMonitor", "ThroughputMonitor",
    ]),
    ("Loggers", "torchbolt.loggers", ["Logger", "TensorBoardLogger", "CSVLogger", "MLFlowLogger", "WandbLogger",
                                         "CometLogger"]),
    ("Tuner", "torchbolt.tuner", ["Tuner"]),
    ("Strategies", "torchbolt.strategies", [
        "Strategy", "SingleDeviceStrategy", "DDPStrategy", "FSDPStrategy", "ModelParallelStrategy", "DeepSpeedStrategy",
        "DataParallelStrategy",
    ]),
    ("Accelerators", "torchbolt.accelerators", ["Accelerator", "CPUAccelerator", "CUDAAccelerator",
                                                "MPSAccelerator", "find_usable_cuda_devices"]),
    ("Precision", "torchbolt.plugins.precision", ["Precision", "FSDPPrecision", "DeepSpeedPrecision"]),
    ("Layer synchronization", "torchbolt.plugins", ["LayerSync", "TorchSyncBatchNorm"]),
    ("Checkpoint I/O", "torchbolt.plugins.io", ["CheckpointIO", "TorchCheckpointIO", "AsyncCheckpointIO",
                                            "XLACheckpointIO", "wait_for_checkpoint_writes"]),
    ("Cluster environments", "torchbolt.plugins.environments", ["ClusterEnvironment", "LightningEnvironment",
                                                                 "XLAEnvironment"]),
    ("Profilers", "torchbolt.profilers", ["Profiler", "PassThroughProfiler", "XLAProfiler"]),
    ("Serving check", "torchbolt.serve", ["ServableModule", "ServableModuleValidator"]),
    ("Checkpoint commands", "torchbolt.utilities.consolidate_checkpoint", ["consolidate_checkpoint"]),
    ("Checkpoint upgrades", "torchbolt.utilities.upgrade_checkpoint", ["upgrade_checkpoint"]),
    ("CLI", "torchbolt.cli", ["LightningCLI", "SaveConfigCallback"]),
    ("Utilities", "torchbolt.utilities", [
        "rank_zero_only", "rank_zero_info", "rank_zero_warn", "apply_to_collection", "move_data_to_device",
        "grad_norm", "CombinedLoader", "AttributeDict", "isolate_rng",
    ]),
]


def _signature(obj: object) -> str:
    try:
        text = str(inspect.signature(obj))  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return "(...)"
    # function defaults print with their memory address: keep only the name so the output is stable
    return re.sub(r"<function (\S+) at 0x[0-9a-f]+>", r"\1", text)


def _doc(obj: object) -> str:
    return inspect.cleandoc(inspect.getdoc(obj) or "(no docstring)")


def _public_methods(cls: type) -> list[tuple[str, object]]:
    methods = []
    for name, member in vars(cls).items():
        if name.startswith("_") or not (inspect.isfunction(member) or isinstance(member, property)):
            continue
        if inspect.getdoc(member):
            methods.append((name, member))
    return methods


def _render_object(module_name: str, name: str, obj: object) -> list[str]:
    lines = [f"### `{module_name}.{name}`", ""]
    if inspect.isclass(obj):
        lines += ["```python", f"class {name}{_signature(obj)}", "```", "", _doc(obj), ""]
        for method_name, member in _public_methods(obj):
            if isinstance(member, property):
                lines += [f"- **`{method_name}`** (property): {_doc(member).splitlines()[0]}"]
            else:
                lines += [f"- **`{method_name}{_signature(member)}`**: {_doc(member).splitlines()[0]}"]
        lines.append("")
    else:
        lines += ["```python", f"{name}{_signature(obj)}", "```", "", _doc(obj), ""]
    return lines


def render() -> str:
    lines = [
        "# API reference",
        "",
        "Generated from the docstrings by `python tools/gen_api_docs.py`; do not edit by hand.",
        "",
    ]
    for title, _, _ in SECTIONS:
        anchor = title.lower().replace(" ", "-").replace("/", "")
        lines.append(f"- [{title}](#{anchor})")
    lines.append("")
    for title, module_name, names in SECTIONS:
        module = importlib.import_module(module_name)
        lines += [f"## {title}", ""]
        for name in names:
            lines += _render_object(module_name, name, getattr(module, name))
    return "\n".join(lines).rstrip() + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail when docs/api.md is out of date")
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        if not OUTPUT.exists() or OUTPUT.read_text() != text:
            print("docs/api.md is out of date: run `python tools/gen_api_docs.py`", file=sys.stderr)
            return 1
        return 0
    OUTPUT.write_text(text)
    print(f"wrote {OUTPUT.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
