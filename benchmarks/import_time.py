"""Import time: ``import torch`` vs ``import torchbolt`` (vs ``import pytorch_lightning``), each in a fresh
interpreter, alternating, medians. The time is taken around the import statement inside the child, so
interpreter start-up is excluded; ``import torchbolt`` includes importing torch. Bytecode caching is on
(``PYTHONDONTWRITEBYTECODE`` is dropped for the children), as in a normal installation."""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
from pathlib import Path

_CHILD = (
    "import time; t = time.perf_counter(); import {module}; "
    "print(time.perf_counter() - t)"
)


def _env() -> dict[str, str]:
    env = dict(os.environ)
    src = str(Path(__file__).resolve().parents[1] / "src")
    env["PYTHONPATH"] = src + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    # measure imports as users run them: from cached bytecode (the warm-up run writes it)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


def _once(module: str) -> float:
    out = subprocess.run([sys.executable, "-c", _CHILD.format(module=module)], capture_output=True, text=True,
                         env=_env(), check=True)
    return float(out.stdout.strip().splitlines()[-1])


def measure(repeats: int, with_lightning: bool) -> dict[str, list[float]]:
    """Seconds per import for each module, ``repeats`` fresh interpreters each, interleaved."""
    modules = ["torch", "torchbolt"]
    if with_lightning:
        import importlib.util

        if importlib.util.find_spec("pytorch_lightning") is not None:
            modules.append("pytorch_lightning")
    for module in modules:  # warm the OS file cache so the first measured run is not an outlier
        _once(module)
    times: dict[str, list[float]] = {m: [] for m in modules}
    for _ in range(repeats):
        for module in modules:
            times[module].append(_once(module))
    return times


def format_table(times: dict[str, list[float]]) -> str:
    torch_ms = statistics.median(times["torch"]) * 1e3
    lines = ["| import | median ms | over `import torch` | runs |", "|---|---|---|---|"]
    for module, values in times.items():
        ms = statistics.median(values) * 1e3
        extra = "-" if module == "torch" else f"{ms - torch_ms:+.0f} ms"
        lines.append(f"| `import {module}` | {ms:.0f} | {extra} | {len(values)} |")
    return "\n".join(lines)
