"""Before/after: the defaults benchmark's torchbolt fits from two source trees, paired in the same minutes.

    python benchmarks/compare_trees.py --before /path/to/other/checkout/src            # 8 x 2 processes
    python benchmarks/compare_trees.py --before OLD/src --after NEW/src --processes 4 --rounds 3

A change to the per-step path moves the defaults ratio by a percent or two, about as much as that ratio
moves between two runs of ``benchmarks/run.py`` on the same code: a single process's memory layout can
favour or slow one implementation for all of its rounds, and the machine's speed drifts over minutes.
This script runs fresh interpreters that alternate between the two trees (``--processes`` of each; the
tree that goes first alternates too). Each interpreter imports torchbolt from its tree and runs
``--rounds`` rounds. A round is one fit of each of the reference (the hand-written loop with a tqdm bar),
the default Trainer with the bar, the default Trainer writing plain lines, and a Trainer with the
logger, bar, checkpointing and summary off, in rotating order. For each tree it reports the median of the
per-round ratios to the same round's reference, with the middle half of those ratios.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import subprocess
import sys
from collections.abc import Callable

HERE = os.path.dirname(os.path.abspath(__file__))
REFERENCE = "raw + tqdm"
VARIANTS = ("raw + tqdm", "defaults (bar)", "defaults (log file)", "everything off")


def _worker(src: str, rounds: int, steps: int, first_round: int) -> dict[str, list[float]]:
    """Per-step microseconds of each variant in each round, torchbolt imported from ``src``."""
    sys.path.insert(0, HERE)
    sys.path.insert(0, src)
    import torch

    torch.set_num_threads(1)
    import torchbolt

    if not os.path.abspath(torchbolt.__file__).startswith(os.path.abspath(src)):
        raise SystemExit(f"torchbolt was imported from {torchbolt.__file__}, not from {src}")
    from defaults import _orders, _raw, _torchbolt
    from models import VARIANTS as MODEL_VARIANTS
    from models import WORKLOADS, prepare

    p = prepare(WORKLOADS["tiny_mlp"], MODEL_VARIANTS["plain"], torch.device("cpu"), steps)
    off = dict(logger=False, enable_progress_bar=False, enable_checkpointing=False, enable_model_summary=False)
    fits: dict[str, Callable[[], float]] = {
        "raw + tqdm": lambda: _raw(p, "postfix").steps_s,
        "defaults (bar)": lambda: _torchbolt(p, {"TORCHBOLT_PROGRESS": "bar"}).steps_s,
        "defaults (log file)": lambda: _torchbolt(p, {"TORCHBOLT_PROGRESS": "auto"}).steps_s,
        "everything off": lambda: _torchbolt(p, {}, **off).steps_s,
    }
    for fit in fits.values():  # warm-up: lazy imports and first-call paths are no per-step cost
        fit()
    per_step: dict[str, list[float]] = {name: [] for name in fits}
    for order in _orders(list(fits), first_round + rounds)[first_round:]:
        for name in order:
            gc.collect()
            per_step[name].append(fits[name]() / p.steps * 1e6)
    return per_step


def _run_worker(src: str, rounds: int, steps: int, first_round: int) -> dict[str, list[float]]:
    command = [sys.executable, os.path.abspath(__file__), "--worker", "--after", src, "--rounds", str(rounds),
               "--steps", str(steps), "--first-round", str(first_round)]
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    if done.returncode != 0:
        raise SystemExit(f"worker for {src} failed:\n{done.stderr[-3000:]}")
    result: dict[str, list[float]] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def _summary(per_step: dict[str, list[float]]) -> dict[str, str]:
    reference = per_step[REFERENCE]
    cells = {}
    for name in VARIANTS[1:]:
        ratios = sorted(a / b for a, b in zip(per_step[name], reference))
        q = statistics.quantiles(ratios, n=4) if len(ratios) >= 2 else [ratios[0]] * 3
        cells[name] = f"{statistics.median(ratios):.3f}x ({q[0]:.3f}-{q[2]:.3f})"
    cells[REFERENCE] = f"{statistics.median(reference):.0f} us/step"
    return cells


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--before", help="the `src` directory of the other checkout")
    parser.add_argument("--after", default=os.path.join(os.path.dirname(HERE), "src"),
                        help="the `src` directory measured against it (default: this checkout's)")
    parser.add_argument("--processes", type=int, default=8, help="fresh interpreters per tree (default 8)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds per interpreter (default 3)")
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--first-round", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(_worker(args.after, args.rounds, args.steps, args.first_round)))
        return
    if not args.before:
        parser.error("--before is required: the `src` directory of the checkout to compare with")
    trees = {"before": os.path.abspath(args.before), "after": os.path.abspath(args.after)}
    for label, src in trees.items():
        if not os.path.isfile(os.path.join(src, "torchbolt", "__init__.py")):
            parser.error(f"--{label} {src}: no torchbolt package there (pass a checkout's `src` directory)")
    pooled: dict[str, dict[str, list[float]]] = {label: {name: [] for name in VARIANTS} for label in trees}
    for i in range(args.processes):
        order = list(trees) if i % 2 == 0 else list(trees)[::-1]
        for label in order:
            print(f"process {i + 1}/{args.processes}: {label}", file=sys.stderr, flush=True)
            for name, values in _run_worker(trees[label], args.rounds, args.steps, i * args.rounds).items():
                pooled[label][name].extend(values)
    summaries = {label: _summary(per_step) for label, per_step in pooled.items()}
    rounds = args.processes * args.rounds
    print(f"Tiny MLP, {args.steps} steps; {rounds} rounds per tree from {args.processes} alternating interpreters;"
          " median of the per-round ratios to the reference (middle half)\n")
    print("| tree | reference | " + " | ".join(VARIANTS[1:]) + " |")
    print("|---|---|" + "---|" * (len(VARIANTS) - 1))
    for label, cells in summaries.items():
        print(f"| {label} (`{trees[label]}`) | {cells[REFERENCE]} | "
              + " | ".join(cells[name] for name in VARIANTS[1:]) + " |")


if __name__ == "__main__":
    main()
