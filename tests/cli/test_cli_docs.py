"""Every Python code block of docs/cli.md runs as written."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

DOC = Path(__file__).resolve().parents[2] / "docs" / "cli.md"
BLOCKS = re.findall(r"```python\n(.*?)```", DOC.read_text(), re.S)


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_cli_doc_block_runs(index: int, tmp_path: Path, subprocess_env: dict[str, str]) -> None:
    script = tmp_path / "main.py"
    script.write_text(BLOCKS[index])
    proc = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=subprocess_env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, f"docs/cli.md block {index} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
