"""Import time of ``torchbolt`` (and ``pytorch_lightning``) against ``import torch``.

Every figure is a median over fresh interpreters, run alternately; the time is taken around the import
statement inside the child, so interpreter start-up is excluded. Bytecode caching is on
(``PYTHONDONTWRITEBYTECODE`` is dropped for the children), as in a normal installation.

* **fresh interpreter**: ``import X`` alone (``import torchbolt`` includes importing torch). Two fresh
  imports of torch differ by tens of ms on a shared machine, so the difference of two such medians is
  noisy;
* **after ``import torch``**: in one interpreter, ``import torch``, then the time of ``import X`` alone:
  what the package adds to a script that imports torch anyway. The garbage collector runs as usual:
  ``import torch`` leaves a full collection of its ~170k objects pending (~80 ms here) that the next
  allocations trigger, during this import or later in the user's code;
* **own modules**: the same with a full collection first and the collector paused: the cost of the
  package's own modules only.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
from pathlib import Path

_CHILD = (
    "import time, gc; mode = '{mode}'\n"
    "if mode != 'fresh': import torch\n"
    "if mode == 'own': gc.collect(); gc.disable()\n"
    "t = time.perf_counter(); import {module}\n"
    "print(time.perf_counter() - t)"
)
_MODES = ("fresh", "after_torch", "own")


def _env() -> dict[str, str]:
    env = dict(os.environ)
    src = str(Path(__file__).resolve().parents[1] / "src")
    env["PYTHONPATH"] = src + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    # measure imports as users run them: from cached bytecode (the warm-up run writes it)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


def _once(module: str, mode: str) -> float:
    out = subprocess.run([sys.executable, "-c", _CHILD.format(module=module, mode=mode)], capture_output=True,
                         text=True, env=_env(), check=True)
    return float(out.stdout.strip().splitlines()[-1])


def measure(repeats: int, with_lightning: bool) -> dict[str, dict[str, list[float]]]:
    """Seconds per import for each module and mode, ``repeats`` fresh interpreters each, interleaved."""
    modules = ["torch", "torchbolt"]
    if with_lightning:
        import importlib.util

        if importlib.util.find_spec("pytorch_lightning") is not None:
            modules.append("pytorch_lightning")
    for module in modules:  # warm the OS file cache and write bytecode, so the first run is not an outlier
        _once(module, "fresh")
    times: dict[str, dict[str, list[float]]] = {m: {mode: [] for mode in _MODES} for m in modules}
    for _ in range(repeats):
        for module in modules:
            for mode in _MODES:
                if mode == "fresh" or module != "torch":
                    times[module][mode].append(_once(module, mode))
    return times


def format_table(times: dict[str, dict[str, list[float]]]) -> str:
    torch_ms = statistics.median(times["torch"]["fresh"]) * 1e3
    lines = ["| import | fresh interpreter: median ms | difference of medians vs `import torch` |"
             " after `import torch`: median ms | own modules (collector paused): median ms | runs |",
             "|---|---|---|---|---|---|"]
    for module, by_mode in times.items():
        fresh = statistics.median(by_mode["fresh"]) * 1e3
        cells = [f"{fresh:.0f}", "-" if module == "torch" else f"{fresh - torch_ms:+.0f} ms"]
        for mode in ("after_torch", "own"):
            cells.append(f"+{statistics.median(by_mode[mode]) * 1e3:.0f} ms" if by_mode[mode] else "-")
        lines.append(f"| `import {module}` | " + " | ".join(cells) + f" | {len(by_mode['fresh'])} |")
    return "\n".join(lines)
