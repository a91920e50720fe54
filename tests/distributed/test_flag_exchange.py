"""Signal flags agreed between ranks: the same call on every rank, with fewer collectives than calls."""

from __future__ import annotations

import os
import time
from pathlib import Path

import torch.distributed as dist
import torch.multiprocessing as mp
from _launch import free_port


def _worker(rank: int, port: int, out: str) -> None:
    from torchbolt.utilities.distributed import AsyncFlagExchange

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        exchange = AsyncFlagExchange(dist.group.WORLD, target_interval_s=0.05, max_interval=16)
        seen_at = None
        collectives = 0
        original = dist.all_reduce

        def counting(*args, **kwargs):
            nonlocal collectives
            collectives += 1
            return original(*args, **kwargs)

        dist.all_reduce = counting
        agreed = 0
        for call in range(400):
            # rank 1 raises flag 2 from call 150 on; rank 0 is the slower one (its pace sets the interval)
            time.sleep(0.002 if rank == 0 else 0.0005)
            agreed |= exchange.exchange(2 if rank == 1 and call >= 150 else 0)
            if agreed and seen_at is None:
                seen_at = call
        exchange.finish()
        dist.all_reduce = original
        Path(out, f"rank{rank}.txt").write_text(f"{seen_at} {collectives} {agreed}")
    finally:
        dist.destroy_process_group()


def test_both_ranks_see_a_flag_at_the_same_call_with_spaced_exchanges(tmp_path: Path) -> None:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    mp.start_processes(_worker, args=(free_port(), str(tmp_path)), nprocs=2, start_method="spawn")
    results = [Path(tmp_path, f"rank{r}.txt").read_text().split() for r in (0, 1)]
    (seen0, collectives0, agreed0), (seen1, collectives1, agreed1) = results
    assert seen0 == seen1 != "None" and agreed0 == agreed1 == "2"
    assert 150 < int(seen0) < 150 + 2 * 16 + 2  # within two of the widest intervals
    assert collectives0 == collectives1 and int(collectives0) < 400 / 4  # spaced: far fewer collectives than calls
