"""``import torchbolt`` leaves the precision back-ends, the TPU stack, dynamo, fsspec and yaml unimported:
they are loaded where they are used (the import-time goal is +150 ms over ``import torch``)."""

from __future__ import annotations

import subprocess
import sys


def test_import_does_not_load_optional_backends(subprocess_env: dict[str, str]) -> None:
    code = (
        "import sys, torchbolt; lazy = ['transformer_engine', 'bitsandbytes', 'torch_xla', 'torch._dynamo',"
        " 'fsspec', 'yaml', 'psutil']; print(sorted(m for m in lazy if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], env=subprocess_env, capture_output=True, text=True,
                         check=True).stdout.strip()
    assert out == "[]"
