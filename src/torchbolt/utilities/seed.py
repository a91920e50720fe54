"""Seeding of every random number generator a training run touches."""

from __future__ import annotations

import os
import random
from collections.abc import Generator
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch

from torchbolt.utilities.rank_zero import rank_zero_only, rank_zero_warn

_MAX_SEED = np.iinfo(np.uint32).max
_MIN_SEED = np.iinfo(np.uint32).min


def seed_everything(seed: int | None = None, workers: bool = False, verbose: bool = True) -> int:
    """Seed Python's ``random``, NumPy and PyTorch (CPU and every CUDA device).

    Args:
        seed: the seed; when ``None`` it is read from ``PL_GLOBAL_SEED`` or defaults to 0.
        workers: also derive distinct, reproducible seeds for every dataloader worker
            (the Trainer installs :func:`pl_worker_init_function` in loaders that have none).
        verbose: print the seed that was set.

    Returns:
        The seed that was set.

    The seed is stored in ``PL_GLOBAL_SEED`` so that processes started later (DDP ranks,
    dataloader workers) use the same one.
    """
    if seed is None:
        env_seed = os.environ.get("PL_GLOBAL_SEED")
        if env_seed is None:
            seed = 0
            rank_zero_warn(f"No seed found, seed set to {seed}")
        else:
            try:
                seed = int(env_seed)
            except ValueError:
                seed = 0
                rank_zero_warn(f"Invalid seed found: {env_seed!r}, seed set to {seed}")
    elif not isinstance(seed, int):
        seed = int(seed)

    if not (_MIN_SEED <= seed <= _MAX_SEED):
        rank_zero_warn(f"{seed} is not in bounds, numpy accepts from {_MIN_SEED} to {_MAX_SEED}")
        seed = 0

    if verbose:
        _print_seed(seed)
    os.environ["PL_GLOBAL_SEED"] = str(seed)
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # also seeds every CUDA device
    os.environ["PL_SEED_WORKERS"] = f"{int(workers)}"
    return seed


@rank_zero_only
def _print_seed(seed: int) -> None:
    print(f"Seed set to {seed}")


def reset_seed() -> None:
    """Re-apply the seed stored by :func:`seed_everything` (used in freshly started processes)."""
    seed = os.environ.get("PL_GLOBAL_SEED")
    if seed is None:
        return
    workers = os.environ.get("PL_SEED_WORKERS", "0")
    seed_everything(int(seed), workers=bool(int(workers)), verbose=False)


def pl_worker_init_function(worker_id: int, rank: int | None = None) -> None:
    """Seed ``random`` and NumPy in a dataloader worker from the worker's torch seed.

    PyTorch seeds each worker's torch generator with ``base_seed + worker_id`` but leaves NumPy
    and ``random`` as forked copies, so augmentations in ``__getitem__`` would repeat across workers.
    """
    global_rank = rank if rank is not None else rank_zero_only.rank
    process_seed = torch.initial_seed()
    base_seed = process_seed - worker_id
    seed_sequence = np.random.SeedSequence([base_seed, worker_id, global_rank])
    np.random.seed(seed_sequence.generate_state(4))
    torch_ss, stdlib_ss = seed_sequence.spawn(2)
    stdlib_seed = (stdlib_ss.generate_state(2, dtype=np.uint64).astype(object) * [1 << 64, 1]).sum()
    random.seed(stdlib_seed)
    del torch_ss


def _collect_rng_states(include_cuda: bool = True) -> dict[str, Any]:
    """The state of every global generator, as plain picklable data."""
    states: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": np.random.get_state(),
        "python": random.getstate(),
    }
    if include_cuda and torch.cuda.is_available() and torch.cuda.is_initialized():
        states["torch.cuda"] = torch.cuda.get_rng_state_all()
    return states


def _set_rng_states(states: dict[str, Any]) -> None:
    torch.set_rng_state(states["torch"])
    if "torch.cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["torch.cuda"])
    np.random.set_state(states["numpy"])
    version, state, gauss = states["python"]
    random.setstate((version, tuple(state), gauss))


@contextmanager
def isolate_rng(include_cuda: bool = True) -> Generator[None, None, None]:
    """Restore every global random generator to its state at entry when the block exits.

    Example::

        with isolate_rng():
            torch.rand(1)  # does not change what the next torch.rand returns outside
    """
    states = _collect_rng_states(include_cuda)
    try:
        yield
    finally:
        _set_rng_states(states)
