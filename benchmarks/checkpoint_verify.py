"""Cost of checking a checkpoint's CRC-32s when loading it.

Writes one checkpoint of about ``--size-mb`` MB (a ``state_dict`` of ``--tensors`` float32 tensors
plus SGD-with-momentum optimizer state, as ``Trainer.save_checkpoint`` lays it out) through
``TorchCheckpointIO``, then loads it with torchbolt's loader (``torchbolt.utilities.cloud_io._load``,
what ``ckpt_path=`` and ``load_from_checkpoint`` use) with verification off and on, alternately,
``--rounds`` times: with verification off, on with the standard library's CRC-32 (zlib), and on with
the fastest installed one (``zlib-ng`` or ``isal``, the ``fast-checksums`` extra) when there is one.
The file is read once before timing, so every load reads from the page cache: the cheapest load,
hence the largest relative cost. Reported per variant: the median wall time and the median process
CPU time (all threads), and the cost of verification as the median of the per-round differences
from the unverified load, in ms and in percent of it. The last column is :func:`verify_archive` alone
on bytes already in memory (one thread). Wall-time costs depend on a second core being free: the
check runs on its own thread next to ``torch.load``.

Usage::

    python benchmarks/checkpoint_verify.py                 # 100 MB, 15 rounds
    python benchmarks/checkpoint_verify.py --size-mb 500 --rounds 5 --threads 4
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
import zlib
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import torch

from torchbolt.plugins.io import TorchCheckpointIO
from torchbolt.utilities import checkpoint_integrity
from torchbolt.utilities.checkpoint_integrity import verify_archive
from torchbolt.utilities.cloud_io import _load


def _checkpoint(size_mb: float, tensors: int) -> dict:
    # the weights take half the bytes, SGD's momentum buffers the other half
    numel = int(size_mb * 1e6 / 4 / 2 / tensors)
    weights = {f"layers.{i}.weight": torch.randn(numel) for i in range(tensors)}
    params = [torch.nn.Parameter(w.clone()) for w in weights.values()]
    optimizer = torch.optim.SGD(params, lr=0.1, momentum=0.9)
    for p in params:
        p.grad = torch.ones_like(p)
    optimizer.step()
    return {"epoch": 3, "global_step": 300, "pytorch-lightning_version": "2.6.0", "state_dict": weights,
            "optimizer_states": [optimizer.state_dict()], "lr_schedulers": [],
            "hyper_parameters": {"lr": 0.1, "hidden": 4096}}


def _timed(path: Path, verify: bool) -> tuple[float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    _load(path, map_location="cpu", verify=verify)
    return time.perf_counter() - wall, time.process_time() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-mb", type=float, default=100.0, help="checkpoint size in MB (default 100)")
    parser.add_argument("--tensors", type=int, default=20, help="number of weight tensors (default 20)")
    parser.add_argument("--rounds", type=int, default=15, help="rounds, each loading once per variant (default 15)")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    # variants: no check, the standard library's CRC-32, and the fastest installed one (zlib-ng/isal) if any
    fast, fast_name = checkpoint_integrity.crc32_implementation()
    variants: dict[str, tuple[bool, Any]] = {"verification off": (False, None),
                                             "verification on, zlib": (True, (zlib.crc32, "zlib"))}
    if fast_name != "zlib":
        variants[f"verification on, {fast_name}"] = (True, (fast, fast_name))

    def run(variant: str, path: Path) -> tuple[float, float]:
        verify, crc = variants[variant]
        checkpoint_integrity._crc32_choice = crc
        return _timed(path, verify)

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.ckpt"
        TorchCheckpointIO().save_checkpoint(_checkpoint(args.size_mb, args.tensors), path)
        size = path.stat().st_size
        data = path.read_bytes()
        for variant in variants:  # warm-up: page cache, allocator, lazy imports
            run(variant, path)
        times: dict[str, list[tuple[float, float]]] = {v: [] for v in variants}
        verify_only: dict[str, list[float]] = {crc[1]: [] for _, crc in variants.values() if crc}
        names = list(variants)
        for round_ in range(args.rounds):
            for variant in names[round_ % len(names):] + names[:round_ % len(names)]:  # rotate the order
                times[variant].append(run(variant, path))
            for _, crc in variants.values():
                if crc:
                    checkpoint_integrity._crc32_choice = crc
                    start = time.perf_counter()
                    verify_archive(data, str(path))
                    verify_only[crc[1]].append(time.perf_counter() - start)

    def median(variant: str, column: int) -> float:
        return statistics.median(t[column] for t in times[variant]) * 1e3

    print(f"- command: `python benchmarks/checkpoint_verify.py {' '.join(sys.argv[1:])}`")
    print(f"- machine: {platform.processor() or platform.machine()}, {os.cpu_count()} logical CPUs;"
          f" Python {platform.python_version()}, torch {torch.__version__}, torch threads {args.threads}")
    print(f"- checkpoint: {size / 1e6:.1f} MB, {args.tensors} weight tensors + SGD momentum buffers;"
          f" {args.rounds} rounds (each variant once per round, order rotated), page cache warm")
    print()
    print("| load | wall ms (median) | CPU ms (median) | cost: wall (median of paired differences) |"
          " cost: CPU (same) | check alone ms (`verify_archive`, one thread) |")
    print("|---|---|---|---|---|---|")
    base_wall, base_cpu = median(names[0], 0), median(names[0], 1)
    for variant in names:
        row = f"| {variant} | {median(variant, 0):.1f} | {median(variant, 1):.1f} |"
        crc = variants[variant][1]
        if crc is None:
            print(row + " - | - | - |")
            continue
        pairs = list(zip(times[names[0]], times[variant]))
        wall = statistics.median(on[0] - off[0] for off, on in pairs) * 1e3
        cpu = statistics.median(on[1] - off[1] for off, on in pairs) * 1e3
        alone = statistics.median(verify_only[crc[1]]) * 1e3
        print(row + f" {wall:+.1f} ({wall / base_wall:+.1%}) | {cpu:+.1f} ({cpu / base_cpu:+.1%}) | {alone:.1f} |")


if __name__ == "__main__":
    main()
