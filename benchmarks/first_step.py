"""Time from ``python script.py`` to the first optimizer step, for a tiny script written three ways.

    python benchmarks/first_step.py --rounds 7

The scripts are ``scripts/tiny_raw.py`` (a hand-written loop) and ``scripts/tiny_trainer.py`` (the same
model and data with ``import torchbolt as pl``, or ``import pytorch_lightning as pl`` when it is
importable, and a default ``Trainer(max_epochs=1)`` in a fresh temporary ``default_root_dir``). Each
round starts every script once in a fresh interpreter, in a rotating order; the times are taken from
just before the process is started to the moments the script prints (``time.time()`` in both
processes): the interpreter reaching the script's first line, the imports done, the end of the first
``optimizer.step()`` (a step post-hook), and the process's exit (50 steps of training, then the
interpreter's shutdown). Reported: the median over rounds, and for the frameworks the median of the
per-round differences to the raw script. One unmeasured run of each script first writes the bytecode
caches and warms the OS file cache, as a second run of any script finds them.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

_HERE = Path(__file__).resolve().parent
SCRIPTS = _HERE / "scripts"
MARKS = ("script", "imports", "first_step", "exit")


def _env() -> dict[str, str]:
    env = dict(os.environ)
    src = str(_HERE.parent / "src")
    env["PYTHONPATH"] = src + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.pop("PYTHONDONTWRITEBYTECODE", None)  # scripts run from cached bytecode, as users' second runs do
    env.setdefault("OMP_NUM_THREADS", "1")
    return env


def _command(impl: str, root: str) -> list[str]:
    if impl == "raw":
        return [sys.executable, str(SCRIPTS / "tiny_raw.py")]
    return [sys.executable, str(SCRIPTS / "tiny_trainer.py"), impl, root]


def _once(impl: str) -> dict[str, float]:
    """Seconds from the start of the process to each mark (and to its exit)."""
    with tempfile.TemporaryDirectory() as root:
        start = time.time()
        done = subprocess.run(_command(impl, root), capture_output=True, text=True, env=_env(), cwd=root)
        end = time.time()
    if done.returncode != 0:
        raise RuntimeError(f"{impl} script failed ({done.returncode}):\n{done.stderr[-3000:]}")
    marks = {}
    for line in done.stdout.splitlines():
        if line.startswith("MARK "):
            _, name, value = line.split()
            marks[name] = float(value) - start
    marks["exit"] = end - start
    missing = [m for m in MARKS if m not in marks]
    if missing:
        raise RuntimeError(f"{impl} script printed no {missing} mark:\n{done.stdout[-2000:]}")
    return marks


def implementations(with_lightning: bool) -> list[str]:
    impls = ["raw", "torchbolt"]
    if with_lightning:
        import importlib.util

        if importlib.util.find_spec("pytorch_lightning") is not None:
            impls.append("lightning")
    return impls


def measure(rounds: int, with_lightning: bool = True,
            log: Callable[[str], None] = lambda _: None) -> dict[str, dict[str, list[float]]]:
    """Seconds to each mark, per implementation and mark, one list entry per round."""
    impls = implementations(with_lightning)
    for impl in impls:  # bytecode caches and the OS file cache, as any second run finds them
        _once(impl)
    times: dict[str, dict[str, list[float]]] = {impl: {m: [] for m in MARKS} for impl in impls}
    for r in range(rounds):
        order = impls[r % len(impls):] + impls[:r % len(impls)]
        for impl in order:
            for mark, seconds in _once(impl).items():
                if mark in MARKS:
                    times[impl][mark].append(seconds)
        log(f"first step round {r + 1}/{rounds}: " + ", ".join(
            f"{impl} {times[impl]['first_step'][-1] * 1e3:.0f} ms" for impl in impls))
    return times


def format_table(times: dict[str, dict[str, list[float]]]) -> str:
    names = {"raw": "raw loop", "torchbolt": "torchbolt, default Trainer", "lightning": "Lightning, default Trainer"}
    raw = times["raw"]
    lines = ["| script | interpreter at line 1 ms | imports done ms | **first optimizer step ms** |"
             " first step vs raw (median of paired differences) | process exit ms | rounds |",
             "|---|---|---|---|---|---|---|"]
    for impl, marks in times.items():
        med = {m: statistics.median(v) * 1e3 for m, v in marks.items()}
        diff = "-" if impl == "raw" else (
            f"+{statistics.median(a - b for a, b in zip(marks['first_step'], raw['first_step'])) * 1e3:.0f} ms")
        lines.append(f"| {names.get(impl, impl)} | {med['script']:.0f} | {med['imports']:.0f} |"
                     f" **{med['first_step']:.0f}** | {diff} | {med['exit']:.0f} | {len(marks['first_step'])} |")
    return "\n".join(lines)


def main() -> None:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--no-lightning", action="store_true")
    args = parser.parse_args()
    times = measure(args.rounds, not args.no_lightning, log=lambda m: print(m, file=sys.stderr, flush=True))
    print(format_table(times))


if __name__ == "__main__":
    main()
