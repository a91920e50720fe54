"""Peak memory of a training run: one fresh process per implementation (CPU RSS), or
``torch.cuda.max_memory_allocated`` on a GPU.

On CPU each child imports only what its implementation needs, prepares the same batches, runs a
warm-up run, resets the kernel's peak-RSS counter (``/proc/self/clear_refs``), trains, and reports
the peak RSS of the whole process and its growth during the measured training run (what training
itself holds; the process peak also contains the imported modules).
"""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

_HERE = Path(__file__).resolve().parent


def _status_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def child(impl: str, workload: str, variant: str, steps: int) -> dict[str, Any]:
    """Run in a fresh interpreter (``run.py --memory-child``): train once and report memory in KiB."""
    import torch

    torch.set_num_threads(1)
    if impl == "torchbolt":
        import torchbolt  # noqa: F401
    elif impl == "lightning":
        import pytorch_lightning  # noqa: F401
    from models import VARIANTS, WORKLOADS, lightning_fit, prepare, raw_fit, torchbolt_fit

    p = prepare(WORKLOADS[workload], VARIANTS[variant], torch.device("cpu"), steps)
    fit = {"raw": raw_fit, "torchbolt": torchbolt_fit, "lightning": lightning_fit}[impl]
    # one warm-up run first: the first optimizer step imports torch._dynamo, autograd starts its threads
    # and the allocator grows its heap (tens of MiB, once per process), which is not memory training holds
    fit(p)
    gc.collect()
    before = _status_kb("VmRSS")
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # reset VmHWM to the current RSS
        resettable = True
    except OSError:
        resettable = False
    fit(p)
    return {"impl": impl, "peak_kb": _status_kb("VmHWM"), "before_kb": before, "resettable": resettable}


def measure(workload: str, variant: str, steps: int, impls: list[str]) -> list[dict[str, Any]]:
    env = dict(os.environ)
    src = str(_HERE.parent / "src")
    env["PYTHONPATH"] = os.pathsep.join([src, str(_HERE), env.get("PYTHONPATH", "")])
    results = []
    for impl in impls:
        out = subprocess.run(
            [sys.executable, str(_HERE / "run.py"), "--memory-child", impl, workload, variant, str(steps)],
            capture_output=True, text=True, env=env, check=True,
        )
        results.append(json.loads(out.stdout.strip().splitlines()[-1]))
    return results


def format_table(rows: dict[str, list[dict[str, Any]]]) -> str:
    lines = ["| workload | implementation | peak RSS MiB (process) | vs raw | RSS growth while training MiB | vs raw |",
             "|---|---|---|---|---|---|"]
    for workload, results in rows.items():
        raw = next(r for r in results if r["impl"] == "raw")
        raw_growth = raw["peak_kb"] - raw["before_kb"]
        for r in results:
            growth = r["peak_kb"] - r["before_kb"]
            vs_peak = "-" if r is raw else f"{(r['peak_kb'] / raw['peak_kb'] - 1) * 100:+.2f}%"
            vs_growth = "-" if r is raw else f"{(growth - raw_growth) / 1024:+.1f} MiB"
            lines.append(f"| {workload} | {r['impl']} | {r['peak_kb'] / 1024:.1f} | {vs_peak} |"
                         f" {growth / 1024:.1f} | {vs_growth} |")
    return "\n".join(lines)


def gpu_peak_memory(workload: str, steps: int, precision: str, impls: dict[str, Any]) -> dict[str, int]:
    """``torch.cuda.max_memory_allocated`` (bytes) of one run per implementation, in this process."""
    import torch
    from models import VARIANTS, WORKLOADS, prepare

    p = prepare(WORKLOADS[workload], VARIANTS["plain"], torch.device("cuda"), steps)
    peaks = {}
    for name, fit in impls.items():
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        fit(p, precision)
        torch.cuda.synchronize()
        peaks[name] = torch.cuda.max_memory_allocated()
    return peaks
