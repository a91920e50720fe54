"""docs/design.md names real code: every `torchbolt.…` name it cites imports, every file it cites exists."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DESIGN = ROOT / "docs" / "design.md"


def _resolve(dotted: str) -> object:
    """Import the longest module prefix of ``dotted``, then follow the rest as attributes."""
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj: object = importlib.import_module(".".join(parts[:cut]))
        except ModuleNotFoundError:
            continue
        for attr in parts[cut:]:
            obj = getattr(obj, attr)
        return obj
    raise ModuleNotFoundError(dotted)


def test_every_cited_name_exists() -> None:
    names = sorted(set(re.findall(r"`(torchbolt(?:\.\w+)+)`", DESIGN.read_text())))
    assert len(names) > 20, "the page should cite the code it describes"
    missing = []
    for name in names:
        try:
            _resolve(name)
        except (ImportError, AttributeError) as e:
            missing.append(f"{name}: {e}")
    assert not missing, "docs/design.md cites names that do not exist:\n" + "\n".join(missing)


def test_every_cited_trainer_file_exists() -> None:
    text = DESIGN.read_text()
    files = set(re.findall(r"`(\w+\.py)`", text))
    trainer_dir = ROOT / "src" / "torchbolt" / "trainer"
    missing = sorted(f for f in files if not (trainer_dir / f).exists())
    assert not missing, f"docs/design.md cites trainer files that do not exist: {missing}"
    # and the other way round: every file of trainer/ has its role on the page
    undocumented = sorted(p.name for p in trainer_dir.glob("*.py") if p.name != "__init__.py" and p.name not in files)
    assert not undocumented, f"trainer/ files without a role in docs/design.md: {undocumented}"


def test_design_page_is_linked_from_the_index() -> None:
    assert "(design.md)" in (ROOT / "docs" / "index.md").read_text()
