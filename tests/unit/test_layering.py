"""Imports at run time point downwards: a layer never imports a higher one (docs/design.md, "Layers").

Imports under ``if TYPE_CHECKING:`` are type hints only and are allowed in any direction.
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src" / "torchbolt"

# package -> layer (lower numbers are lower layers)
LAYERS = {
    "utilities": 1,
    "core": 2,
    "accelerators": 3, "plugins": 3, "strategies": 3,
    "callbacks": 4, "loggers": 4, "profilers": 4, "serve": 4,
    "trainer": 5, "loops": 5,
    "tuner": 6, "cli": 6,
}
# the tuner's callbacks are its entry points (Lightning's layout puts them in `callbacks`), and the
# `python -m torchbolt.utilities.<command>` commands run whole checkpoints through the stack: driver layer
MODULE_LAYERS = {"torchbolt.callbacks.batch_size_finder": 6, "torchbolt.callbacks.lr_finder": 6,
                 "torchbolt.utilities.upgrade_checkpoint": 6, "torchbolt.utilities.consolidate_checkpoint": 6,
                 # Lightning's API over the upgrade command's migrations
                 "torchbolt.utilities.migration": 6, "torchbolt.utilities.migration.utils": 6}

# deliberate exceptions, each with its reason
ALLOWED = {
    ("torchbolt.utilities.deepspeed", "torchbolt.strategies.deepspeed"): "a helper re-exported at Lightning's path",
    ("torchbolt.utilities.types", "torchbolt.core.optimizer"): "LRSchedulerConfig re-exported at Lightning's path",
    ("torchbolt.trainer.trainer", "torchbolt.tuner.tuning"): "Lightning 1.x `trainer.tune()`, imported when called",
    ("torchbolt.trainer.trainer", "torchbolt.tuner"): "Lightning 1.x `trainer.tuner`, imported when read",
}


def _layer(module: str) -> int | None:
    for name, layer in MODULE_LAYERS.items():
        if module == name or module.startswith(name + "."):
            return layer
    parts = module.split(".")
    return LAYERS.get(parts[1]) if len(parts) > 1 and parts[0] == "torchbolt" else None


def _runtime_imports(tree: ast.Module) -> list[tuple[int, str]]:
    """``(line, module)`` of every import not under ``if TYPE_CHECKING:``."""
    found: list[tuple[int, str]] = []

    def visit(node: ast.AST, type_only: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                for item in child.body:
                    visit(item, True)
                for item in child.orelse:
                    visit(item, type_only)
                continue
            if not type_only and isinstance(child, ast.ImportFrom) and child.module and child.level == 0:
                found.append((child.lineno, child.module))
            elif not type_only and isinstance(child, ast.Import):
                found.extend((child.lineno, alias.name) for alias in child.names)
            visit(child, type_only)

    visit(tree, False)
    return found


def test_no_module_imports_a_higher_layer_at_run_time() -> None:
    upward = []
    for path in sorted(SRC.rglob("*.py")):
        module = "torchbolt." + ".".join(path.relative_to(SRC).with_suffix("").parts)
        own = _layer(module)
        if own is None:
            continue
        for line, target in _runtime_imports(ast.parse(path.read_text())):
            other = _layer(target)
            if other is not None and other > own and (module, target) not in ALLOWED:
                upward.append(f"{path.relative_to(SRC)}:{line} imports {target}")
    assert not upward, "upward imports at run time:\n" + "\n".join(upward)
