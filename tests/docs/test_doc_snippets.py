"""Every Python code block of the README and the user guide runs as written."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", ROOT / "docs" / "guide.md"]


def _blocks() -> list[tuple[str, int, str]]:
    found = []
    for path in DOCS:
        text = path.read_text()
        for index, match in enumerate(re.finditer(r"```python\n(.*?)```", text, re.S)):
            found.append((path.name, index, match[1]))
    return found


@pytest.mark.parametrize(("doc", "index", "code"), _blocks(), ids=[f"{d}-{i}" for d, i, _ in _blocks()])
def test_code_block_runs(doc: str, index: int, code: str, tmp_path: Path, subprocess_env: dict[str, str]) -> None:
    script = tmp_path / "snippet.py"
    script.write_text(code)
    proc = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=subprocess_env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, f"{doc} block {index} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
