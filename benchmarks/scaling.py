"""Data-parallel scaling on the CPU: torchbolt's ``strategy="ddp"`` against a hand-written DDP loop.

    python benchmarks/scaling.py --rounds 3

Both train the tiny 32-32-2 MLP, batch 64 per process, SGD, ``--steps`` steps per process, gloo
all-reducing the gradients between 2 processes on this machine:

* ``raw``: ``scripts/ddp_raw.py``, ``torch.distributed`` + ``DistributedDataParallel`` + a
  ``DistributedSampler``, its two processes started here as ``torchrun`` would (``RANK``,
  ``WORLD_SIZE``, ``MASTER_ADDR``/``MASTER_PORT``); with 1 process, the same loop without a process group;
* ``torchbolt``: ``scripts/ddp_trainer.py``, ``Trainer(strategy="ddp", devices=2, accelerator="cpu")``
  started once as a script (the Trainer starts the second process itself and adds the sampler); with
  1 process ``Trainer(accelerator="cpu", devices=1)``. Bar, logger, checkpointing and summary off, the
  loss logged with ``self.log`` every step.

The time is rank 0's, from the end of optimizer step ``--warmup`` to the end of the last one (a step
post-hook in both; the ranks wait for each other in every all-reduce), so process start-up and the
process-group set-up are excluded; "start-up to exit" reports the whole command apart. Each round
runs the four configurations (raw and torchbolt, 1 and 2 processes) in a rotating order with
``OMP_NUM_THREADS=1``. Reported: medians over rounds, the median of the per-round ratios torchbolt /
raw, and the scaling efficiency (samples/s with 2 processes over twice those with 1). On a machine
with 2 cores shared with other work, 2 processes compete with everything else: compare the columns
within a row, not the rows with other machines.
"""

from __future__ import annotations

import os
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

_HERE = Path(__file__).resolve().parent
SCRIPTS = _HERE / "scripts"
BATCH = 64
CONFIGS = (("raw", 1), ("torchbolt", 1), ("raw", 2), ("torchbolt", 2))


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "NODE_RANK")}
    src = str(_HERE.parent / "src")
    env["PYTHONPATH"] = src + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env["OMP_NUM_THREADS"] = "1"
    env.update(extra)
    return env


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _result(out: str, what: str) -> tuple[float, int]:
    for line in out.splitlines():
        if line.startswith("RESULT "):
            _, seconds, steps = line.split()
            return float(seconds), int(steps)
    raise RuntimeError(f"{what}: no RESULT line in its output:\n{out[-2000:]}")


def run(impl: str, processes: int, steps: int, warmup: int, timeout: float = 300.0) -> tuple[float, float]:
    """(seconds per timed step on rank 0, seconds from the command's start to its exit)."""
    args = [str(steps), str(warmup)]
    start = time.perf_counter()
    if impl == "torchbolt":
        done = subprocess.run([sys.executable, str(SCRIPTS / "ddp_trainer.py"), *args, str(processes)],
                              capture_output=True, text=True, env=_env(), timeout=timeout)
        if done.returncode != 0:
            raise RuntimeError(f"ddp_trainer.py ({processes} processes) failed:\n{done.stderr[-3000:]}")
        out = done.stdout
    else:
        port = str(_free_port())
        procs = [subprocess.Popen([sys.executable, str(SCRIPTS / "ddp_raw.py"), *args], text=True,
                                  stdout=subprocess.PIPE if rank == 0 else subprocess.DEVNULL, stderr=subprocess.PIPE,
                                  env=_env(RANK=str(rank), WORLD_SIZE=str(processes), MASTER_ADDR="127.0.0.1",
                                           MASTER_PORT=port))
                 for rank in range(processes)]
        outputs = [p.communicate(timeout=timeout) for p in procs]
        for rank, (p, (_, err)) in enumerate(zip(procs, outputs)):
            if p.returncode != 0:
                raise RuntimeError(f"ddp_raw.py rank {rank} of {processes} failed:\n{err[-3000:]}")
        out = outputs[0][0]
    total = time.perf_counter() - start
    seconds, timed = _result(out, f"{impl} with {processes} processes")
    if timed != steps - warmup:
        raise RuntimeError(f"{impl} with {processes} processes timed {timed} steps, expected {steps - warmup}")
    return seconds / timed, total


@dataclass
class ScalingResult:
    steps: int
    warmup: int
    rounds: int
    per_step: dict[tuple[str, int], list[float]] = field(default_factory=dict)  # us per step
    command: dict[tuple[str, int], list[float]] = field(default_factory=dict)  # seconds, start to exit


def measure(rounds: int, steps: int = 1000, warmup: int = 100,
            log: Callable[[str], None] = lambda _: None) -> ScalingResult:
    result = ScalingResult(steps, warmup, rounds)
    for r in range(rounds):
        order = CONFIGS[r % len(CONFIGS):] + CONFIGS[:r % len(CONFIGS)]
        for impl, processes in order:
            per_step, total = run(impl, processes, steps, warmup)
            result.per_step.setdefault((impl, processes), []).append(per_step * 1e6)
            result.command.setdefault((impl, processes), []).append(total)
        log(f"scaling round {r + 1}/{rounds}: " + ", ".join(
            f"{impl} x{n} {result.per_step[(impl, n)][-1]:.0f}" for impl, n in CONFIGS) + " us/step")
    return result


def format_table(result: ScalingResult) -> str:
    med = {k: statistics.median(v) for k, v in result.per_step.items()}
    lines = ["| processes | raw us/step | torchbolt us/step | torchbolt vs raw: median ratio (range) | torchbolt"
             " extra us/step | raw steps/s (samples/s) | torchbolt steps/s (samples/s) | start-up to exit s"
             " (raw / torchbolt) |", "|---|---|---|---|---|---|---|---|"]
    for n in (1, 2):
        raw, tb = result.per_step[("raw", n)], result.per_step[("torchbolt", n)]
        ratios = [a / b for a, b in zip(tb, raw)]
        extra = statistics.median(a - b for a, b in zip(tb, raw))
        lines.append(
            f"| {n} | {med[('raw', n)]:.0f} | {med[('torchbolt', n)]:.0f} | {statistics.median(ratios):.3f}x"
            f" ({min(ratios):.3f}-{max(ratios):.3f}) | {extra:+.0f} |"
            f" {1e6 / med[('raw', n)]:.0f} ({n * BATCH * 1e6 / med[('raw', n)]:.0f}) |"
            f" {1e6 / med[('torchbolt', n)]:.0f} ({n * BATCH * 1e6 / med[('torchbolt', n)]:.0f}) |"
            f" {statistics.median(result.command[('raw', n)]):.1f} /"
            f" {statistics.median(result.command[('torchbolt', n)]):.1f} |")
    eff = {impl: med[(impl, 1)] / med[(impl, 2)] for impl in ("raw", "torchbolt")}
    lines += ["", f"Scaling efficiency, samples/s with 2 processes / (2 x with 1): raw {eff['raw'] / 2:.0%},"
              f" torchbolt {eff['torchbolt'] / 2:.0%}. {result.steps} steps per process ({result.warmup} untimed)"
              f" x {result.rounds} rounds."]
    return "\n".join(lines)


def main() -> None:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=1000, help="optimizer steps per process")
    parser.add_argument("--warmup", type=int, default=100, help="steps not timed at the start")
    args = parser.parse_args()
    result = measure(args.rounds, args.steps, args.warmup, log=lambda m: print(m, file=sys.stderr, flush=True))
    print(format_table(result))


if __name__ == "__main__":
    main()
