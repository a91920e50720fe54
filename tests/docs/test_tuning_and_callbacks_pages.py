"""The Python examples in the tuning and callbacks guides run as written (blocks of a page share a namespace)."""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parents[2] / "docs"
_BLOCK = re.compile(r"```python\n(.*?)```", re.DOTALL)


@pytest.mark.parametrize("page", ["tuning.md", "callbacks.md"])
def test_python_examples_run(page):
    text = (DOCS / page).read_text()
    blocks = _BLOCK.findall(text)
    assert blocks
    namespace: dict = {"__name__": f"docs_{page}"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for block in blocks:
            exec(compile(block, f"{page}", "exec"), namespace)
