"""Every Python code block of docs/logging.md runs as written (W&B offline, everything in a temp dir).

The blocks run one after another in one fresh interpreter, each in its own empty directory and
namespace, so the suite pays for importing torch once.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

DOC = Path(__file__).resolve().parents[2] / "docs" / "logging.md"
BLOCKS = re.findall(r"```python\n(.*?)```", DOC.read_text(), re.S)

RUNNER = '''
import os, sys, traceback
blocks = {blocks!r}
root = os.getcwd()
for index, code in enumerate(blocks):
    work = os.path.join(root, f"block_{{index}}")
    os.makedirs(work)
    os.chdir(work)
    print(f"=== block {{index}}", flush=True)
    try:
        exec(compile(code, f"logging.md block {{index}}", "exec"), {{"__name__": "__main__"}})
    except BaseException:
        traceback.print_exc()
        sys.exit(f"logging.md block {{index}} failed")
'''


def test_logging_doc_blocks_run(tmp_path: Path, subprocess_env: dict[str, str]) -> None:
    env = {**subprocess_env, "WANDB_MODE": "offline", "WANDB_SILENT": "true", "WANDB_CONSOLE": "off",
           "WANDB_DISABLE_GIT": "true", "WANDB_DISABLE_CODE": "true", "WANDB_X_DISABLE_STATS": "true",
           "WANDB_DIR": str(tmp_path), "WANDB_DATA_DIR": str(tmp_path / "wandb_data"),
           "WANDB_CACHE_DIR": str(tmp_path / "wandb_cache"), "WANDB_CONFIG_DIR": str(tmp_path / "wandb_config")}
    env.pop("MLFLOW_TRACKING_URI", None)
    script = tmp_path / "run_blocks.py"
    script.write_text(RUNNER.format(blocks=BLOCKS))
    proc = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, f"{proc.stdout[-3000:]}\n{proc.stderr[-4000:]}"
    assert proc.stdout.count("=== block") == len(BLOCKS)


def test_logging_doc_has_a_runnable_example_per_logger() -> None:
    text = "\n".join(BLOCKS)
    for name in ("TensorBoardLogger(", "CSVLogger(", "MLFlowLogger(", "WandbLogger(", "ThroughputMonitor(",
                 "DeviceStatsMonitor(", "PyTorchProfiler(", "torchmetrics."):
        assert name in text, f"docs/logging.md has no runnable example using {name}"
