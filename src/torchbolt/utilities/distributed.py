"""Helpers for data and collectives under distributed strategies (all built on ``torch.distributed``)."""

from __future__ import annotations

import contextlib
import gc
import math
import os
import time
from collections.abc import Iterable, Iterator
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor
from torch.utils.data import BatchSampler, DataLoader, Dataset, DistributedSampler, IterableDataset, Sampler

from torchbolt.utilities.data import _dataloader_init_kwargs, _is_dataloader_shuffled
from torchbolt.utilities.exceptions import MisconfigurationException
from torchbolt.utilities.rank_zero import rank_zero_info

# gloo's default is 30 minutes: a crashed or diverged rank would keep the others waiting that long
DEFAULT_GLOO_TIMEOUT = timedelta(minutes=5)
DEFAULT_NCCL_TIMEOUT = timedelta(minutes=10)

_OPS = {"sum": "SUM", "max": "MAX", "min": "MIN", "mean": "SUM", "avg": "SUM", "product": "PRODUCT"}


def is_distributed_initialized() -> bool:
    return dist.is_available() and dist.is_initialized()


def default_timeout(backend: str) -> timedelta:
    """The process-group timeout: ``TORCHBOLT_PG_TIMEOUT`` seconds when set, else 5 min (gloo) / 10 min."""
    env = os.environ.get("TORCHBOLT_PG_TIMEOUT")
    if env:
        return timedelta(seconds=float(env))
    return DEFAULT_GLOO_TIMEOUT if backend == "gloo" else DEFAULT_NCCL_TIMEOUT


# How long an exiting process lets gloo's worker threads finish releasing their last work (see below).
_GLOO_DRAIN_S = 0.2


def close_process_groups() -> None:
    """Destroy every process group and let gloo's worker threads go idle before the interpreter ends.

    A gloo worker thread drops its reference to a finished collective's tensors just *after* the
    caller's ``wait()`` returns. When that reference is the last one, the thread must take the GIL;
    if the interpreter is already finalizing by then, the thread is killed and the whole process
    aborts (``terminate called without an active exception``, SIGABRT) although the run finished.
    Destroying the groups joins those threads only when nothing else (a DDP wrapper, an FSDP device
    mesh, the user's own references) still holds a group, so after destroying, unreachable objects
    are collected and the threads get a short moment to finish, while Python is still fully alive.
    """
    if not is_distributed_initialized():
        return
    with contextlib.suppress(Exception):  # a peer may already be gone
        dist.destroy_process_group()
    gc.collect()
    time.sleep(_GLOO_DRAIN_S)


def init_process_group(backend: str, global_rank: int, world_size: int, main_address: str, main_port: int,
                       timeout: timedelta) -> bool:
    """Create the default process group (env:// rendezvous); returns ``False`` when one already exists.

    Raises:
        RuntimeError: when an existing group has a different world size or rank.
    """
    if is_distributed_initialized():
        if dist.get_world_size() != world_size or dist.get_rank() != global_rank:
            raise RuntimeError(
                f"A process group already exists with rank {dist.get_rank()} of {dist.get_world_size()}, but this"
                f" run needs rank {global_rank} of {world_size}. Destroy it first"
                " (`torch.distributed.destroy_process_group()`)."
            )
        return False
    os.environ["MASTER_ADDR"] = main_address
    os.environ["MASTER_PORT"] = str(main_port)
    rank_zero_info(f"Initializing distributed: GLOBAL_RANK: {global_rank}, MEMBER: {global_rank + 1}/{world_size}")
    store = _torchrun_attempt_store(main_address, main_port, world_size, timeout)
    if store is not None:
        dist.init_process_group(backend, store=store, rank=global_rank, world_size=world_size, timeout=timeout)
    else:
        dist.init_process_group(backend, rank=global_rank, world_size=world_size, timeout=timeout)
    return True


def _torchrun_attempt_store(main_address: str, main_port: int, world_size: int, timeout: timedelta) -> Any | None:
    """torchrun's shared store, with this attempt's own key space; ``None``: let ``env://`` connect as usual.

    With the c10d rendezvous (and ``--standalone``) the workers connect to a key-value store that the
    torchrun agent keeps for its whole life (``TORCHELASTIC_USE_AGENT_STORE=True``), and
    ``init_process_group`` uses the same keys in every attempt. After a restart, a rank can then read
    the address another rank published in the previous attempt, and gloo fails to connect to the dead
    process (``Connection refused``), which costs another restart. Scoping the keys by
    ``TORCHELASTIC_RESTART_COUNT`` avoids that; the count is only known to agree between processes of
    one agent, so this is done when the whole job runs on this node (across nodes set
    ``TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1`` for torchrun, which gives every attempt a new store).
    """
    env = os.environ
    if env.get("TORCHELASTIC_USE_AGENT_STORE") != "True" or "TORCHELASTIC_RESTART_COUNT" not in env:
        return None
    if int(env.get("LOCAL_WORLD_SIZE", -1)) != world_size:
        return None
    client = dist.TCPStore(main_address, main_port, world_size=world_size, is_master=False, timeout=timeout)
    return dist.PrefixStore(f"torchbolt/attempt_{env['TORCHELASTIC_RESTART_COUNT']}", client)


def sync_tensor(tensor: Tensor, group: Any | None = None, reduce_op: str | None = "mean") -> Tensor:
    """All-reduce a copy of ``tensor`` with ``reduce_op`` ("mean", "sum", "max", "min"); identity without a group.

    Raises:
        ValueError: for an unknown ``reduce_op``.
    """
    if not is_distributed_initialized():
        return tensor
    op_name = "mean" if reduce_op is None else str(reduce_op).lower()
    if op_name not in _OPS:
        raise ValueError(f"`reduce_op={reduce_op!r}` is not supported; use 'mean', 'sum', 'max' or 'min'.")
    result = tensor.detach().clone()
    # gloo has no AVG and integer means would truncate: sum in floating point, then divide
    if op_name in ("mean", "avg") and not result.is_floating_point():
        result = result.to(torch.get_default_dtype())
    dist.all_reduce(result, op=getattr(dist.ReduceOp, _OPS[op_name]), group=group)
    if op_name in ("mean", "avg"):
        result = result / dist.get_world_size(group)
    return result


def gather_all_tensors(tensor: Tensor, group: Any | None = None, sync_grads: bool = False) -> Any:
    """``tensor`` from every process, stacked along a new leading dimension of size world size.

    When shapes differ between processes (e.g. a shorter last evaluation batch), the tensors are
    padded for the exchange, trimmed back, and returned as a list (they cannot be stacked).
    """
    if not is_distributed_initialized():
        return tensor
    tensor = tensor.contiguous()
    world = dist.get_world_size(group)
    if sync_grads:
        from torch.distributed.nn.functional import all_gather as differentiable_all_gather

        return torch.stack(differentiable_all_gather(tensor, group=group or dist.group.WORLD))
    shape = torch.tensor(tensor.shape, device=tensor.device, dtype=torch.long)
    shapes = [torch.zeros_like(shape) for _ in range(world)]
    dist.all_gather(shapes, shape, group=group)
    if all(torch.equal(s, shape) for s in shapes):
        out = [torch.empty_like(tensor) for _ in range(world)]
        dist.all_gather(out, tensor, group=group)
        return torch.stack(out)
    max_shape = torch.stack(shapes).max(dim=0).values.tolist()
    padded = tensor.new_zeros(max_shape)
    padded[tuple(slice(0, s) for s in tensor.shape)] = tensor
    out = [torch.empty_like(padded) for _ in range(world)]
    dist.all_gather(out, padded, group=group)
    trimmed = [o[tuple(slice(0, int(s)) for s in sh.tolist())] for o, sh in zip(out, shapes)]
    return trimmed  # type: ignore[return-value]


class AsyncFlagExchange:
    """Shares small integer flags between processes without blocking the training loop.

    An exchange starts a non-blocking all-reduce (MAX per bit) of this process's flags on a CPU
    (gloo) group and returns the result of the previous exchange, which has completed by then. Every
    process therefore sees the same agreed flags at the same call, one exchange late, and the loop
    never waits on the network or synchronizes the device.

    Exchanges are spaced by wall time, not every call: with fast steps a collective per step costs
    as much as the step itself on some machines (a second gloo collective beside the gradient
    all-reduce). Each exchange also carries every process's proposal for how many calls to skip until
    the next one (about ``target_interval_s`` of calls, at most ``max_interval``); all processes take the
    smallest proposal from the same result, so they skip the same calls and stay in step. A flag raised
    now is seen by every process within about two intervals.
    """

    _BITS = 8

    def __init__(self, group: Any | None, target_interval_s: float = 0.2, max_interval: int = 64) -> None:
        self.group = group
        self.target_interval_s = target_interval_s
        self.max_interval = max_interval
        self._pending: tuple[Tensor, Any] | None = None
        self._reset()

    def _reset(self) -> None:
        self._interval = 1  # calls between exchanges, as agreed at the last completed exchange
        self._skip = 0  # calls left to skip before the next exchange
        self._last = time.monotonic()

    def exchange(self, flags: int) -> int:
        if self._skip > 0:
            self._skip -= 1
            return 0
        agreed = 0
        if self._pending is not None:
            tensor, work = self._pending
            work.wait()
            values = tensor.tolist()
            agreed = sum(1 << i for i, bit in enumerate(values[:self._BITS]) if bit)
            self._interval = max(1, -int(values[self._BITS]))  # MAX of the negated proposals: the smallest
        now = time.monotonic()
        per_call = (now - self._last) / self._interval
        self._last = now
        proposal = self.max_interval if per_call <= 0 else int(self.target_interval_s / per_call)
        proposal = min(max(proposal, 1), self.max_interval)
        tensor = torch.tensor([(flags >> i) & 1 for i in range(self._BITS)] + [-proposal], dtype=torch.int32)
        work = dist.all_reduce(tensor, op=dist.ReduceOp.MAX, group=self.group, async_op=True)
        self._pending = (tensor, work)
        self._skip = self._interval - 1
        return agreed

    def finish(self) -> None:
        """Wait for the exchange in flight (every process must call this at the same point)."""
        if self._pending is not None:
            self._pending[1].wait()
            self._pending = None
        self._reset()

    def abandon(self) -> None:
        """Forget the exchange in flight (after a failure, when other processes may never join it)."""
        self._pending = None
        self._reset()


# ---------------------------------------------------------------------- samplers
class UnrepeatedDistributedSampler(DistributedSampler):
    """A ``DistributedSampler`` that never repeats a sample: rank ``r`` gets indices ``r, r + n, r + 2n, ...``.

    Used for evaluation so that metrics count each sample exactly once; ranks may therefore get one
    sample (and so one batch) more than others.
    """

    def __init__(self, dataset: Dataset, *args: Any, **kwargs: Any) -> None:
        super().__init__(dataset, *args, **kwargs)
        size = len(dataset)  # type: ignore[arg-type]
        self.num_samples = len(range(self.rank, size, self.num_replicas))
        self.total_size = size

    def __iter__(self) -> Iterator[int]:
        size = len(self.dataset)  # type: ignore[arg-type]
        if self.shuffle:
            g = torch.Generator()
            g.manual_seed(self.seed + self.epoch)
            indices = torch.randperm(size, generator=g).tolist()
        else:
            indices = list(range(size))
        return iter(indices[self.rank:self.total_size:self.num_replicas])


class _SamplerAsDataset(Dataset):
    """The indices a sampler yields in one epoch, as a dataset a ``DistributedSampler`` can split."""

    def __init__(self, sampler: Iterable[Any]) -> None:
        self._sampler = sampler
        self._indices: list[Any] | None = None

    def __getitem__(self, index: int) -> Any:
        if self._indices is None:
            self._indices = list(self._sampler)
        return self._indices[index]

    def __len__(self) -> int:
        return len(self._sampler)  # type: ignore[arg-type]

    def reset(self) -> None:
        self._indices = None


class DistributedSamplerWrapper(DistributedSampler):
    """Splits what a user's sampler yields (e.g. a ``WeightedRandomSampler``) between ranks.

    The wrapped sampler's order is kept (no extra shuffle); set ``unrepeated=True`` for evaluation.
    """

    def __init__(self, sampler: Sampler | Iterable[Any], *args: Any, unrepeated: bool = False,
                 **kwargs: Any) -> None:
        kwargs.setdefault("shuffle", False)
        self._unrepeated = unrepeated
        super().__init__(_SamplerAsDataset(sampler), *args, **kwargs)  # type: ignore[arg-type]
        if unrepeated:
            size = len(self.dataset)  # type: ignore[arg-type]
            self.num_samples = len(range(self.rank, size, self.num_replicas))
            self.total_size = size

    def __iter__(self) -> Iterator[Any]:
        dataset: _SamplerAsDataset = self.dataset  # type: ignore[assignment]
        dataset.reset()
        positions = (UnrepeatedDistributedSampler.__iter__(self) if self._unrepeated  # type: ignore[arg-type]
                     else super().__iter__())
        return iter([dataset[i] for i in positions])


def _distributed_sampler(loader: DataLoader, stage: str, sampler_kwargs: dict[str, Any]) -> Sampler:
    """The sampler that splits ``loader``'s samples between ranks for ``stage``."""
    kwargs = dict(sampler_kwargs)
    kwargs.setdefault("seed", int(os.environ.get("PL_GLOBAL_SEED", 0)))
    training = stage == "train"
    sampler = loader.sampler
    if isinstance(loader.batch_sampler, BatchSampler):
        sampler = loader.batch_sampler.sampler
    plain = type(sampler).__name__ in ("RandomSampler", "SequentialSampler")
    if plain:
        shuffle = _is_dataloader_shuffled(loader) if training else False
        cls = DistributedSampler if training else UnrepeatedDistributedSampler
        return cls(loader.dataset, shuffle=shuffle, **kwargs)
    return DistributedSamplerWrapper(sampler, unrepeated=not training, **kwargs)


def _inject_distributed_sampler(loader: DataLoader, stage: str, sampler_kwargs: dict[str, Any]) -> DataLoader:
    """Rebuild ``loader`` so each rank sees its share of the samples, keeping every other option.

    Training uses a (padded) ``DistributedSampler`` that keeps the loader's shuffling; evaluation
    uses an unpadded one so no sample is counted twice. Loaders that already split data
    (a ``DistributedSampler``) and iterable datasets are returned unchanged.

    Raises:
        MisconfigurationException: for a custom batch sampler that cannot be rebuilt around a new sampler.
    """
    if isinstance(loader.dataset, IterableDataset):
        return loader
    sampler = loader.sampler
    batch_sampler = loader.batch_sampler
    inner = batch_sampler.sampler if isinstance(batch_sampler, BatchSampler) else sampler
    if isinstance(sampler, DistributedSampler) or isinstance(inner, DistributedSampler):
        return loader
    new_sampler = _distributed_sampler(loader, stage, sampler_kwargs)
    if batch_sampler is None or type(batch_sampler) is BatchSampler:
        return type(loader)(**_dataloader_init_kwargs(loader, new_sampler))
    # a custom batch sampler: rebuild it around the distributed sampler when it follows BatchSampler's signature
    batch_size = getattr(batch_sampler, "batch_size", None)
    drop_last = getattr(batch_sampler, "drop_last", None)
    try:
        rebuilt = type(batch_sampler)(new_sampler, batch_size=batch_size, drop_last=drop_last)  # type: ignore[call-arg]
    except TypeError as e:
        raise MisconfigurationException(
            f"The {stage} dataloader uses a custom batch sampler `{type(batch_sampler).__name__}` that torchbolt"
            " cannot rebuild around a `DistributedSampler`. Split the data per rank yourself and pass"
            " `Trainer(use_distributed_sampler=False)`."
        ) from e
    kwargs = _dataloader_init_kwargs(loader)
    kwargs["batch_sampler"] = rebuilt
    kwargs.pop("sampler", None)
    kwargs.pop("batch_size", None)
    kwargs.pop("drop_last", None)
    return type(loader)(**kwargs)


class _EvenIterable:
    """Iterates ``iterable`` on every rank and stops all of them when any rank runs out (a "join").

    For training data without a length under several processes: one small CPU all-reduce per batch
    decides whether every rank still has a batch, so no rank waits in a collective forever.
    """

    def __init__(self, iterable: Iterable[Any], group: Any | None) -> None:
        self.iterable = iterable
        self.group = group
        self.stopped_early = False

    def __iter__(self) -> Iterator[Any]:
        # the wrapped iterator starts now, not at the first batch: creating it may draw from the global
        # generators (a DataLoader's base seed), and an exact resume restores them right after this call
        return self._iterate(iter(self.iterable))

    def _iterate(self, iterator: Iterator[Any]) -> Iterator[Any]:
        flag = torch.zeros(1, dtype=torch.int32)
        while True:
            try:
                batch: Any = next(iterator)
                flag[0] = 1
            except StopIteration:
                batch = None
                flag[0] = 0
            dist.all_reduce(flag, op=dist.ReduceOp.MIN, group=self.group)
            if not flag[0]:
                self.stopped_early = batch is not None
                return
            yield batch

    def __getattr__(self, name: str) -> Any:
        # expose `sampler`, `dataset`, ... of the wrapped loader (set_epoch, batch size inference)
        if name == "iterable":
            raise AttributeError(name)
        return getattr(self.iterable, name)


def _check_even_counts(counts: list[float], stage: str) -> None:
    finite = [c for c in counts if c != math.inf]
    if len(set(counts)) <= 1:
        return
    if len(finite) != len(counts):
        detail = "some ranks have a dataloader without a length and others have one"
    else:
        detail = "per rank: " + ", ".join(f"rank {r}: {int(c)}" for r, c in enumerate(counts))
    raise MisconfigurationException(
        f"The {stage} dataloaders have different numbers of batches on different ranks ({detail}). Every rank"
        " must run the same number of training batches, or the gradient synchronization waits forever."
        " Let torchbolt add a `DistributedSampler` (`Trainer(use_distributed_sampler=True)`, the default),"
        " give each rank an equal share, or set `limit_train_batches` to the smallest count."
    )


def is_shared_filesystem(strategy: Any, path: str | os.PathLike[str] | None = None, timeout: int = 3) -> bool:
    """Whether every rank of ``strategy`` sees the same files under ``path`` (default: the working directory).

    Every rank must call it. Rank 0 writes a uniquely named file; each other rank waits up to ``timeout``
    seconds for it to appear; the answer is ``True`` only when all ranks saw it. One process: ``True``.
    """
    import uuid
    from pathlib import Path

    if getattr(strategy, "world_size", 1) == 1:
        return True
    folder = Path(path if path is not None else os.getcwd())
    name = strategy.broadcast(f".shared_fs_probe_{uuid.uuid4().hex}" if strategy.is_global_zero else None)
    probe = folder / name
    if strategy.is_global_zero:
        probe.touch()
    seen = probe.exists()
    deadline = time.monotonic() + timeout
    while not seen and time.monotonic() < deadline:
        time.sleep(0.05)
        seen = probe.exists()
    everyone = bool(strategy.reduce_boolean_decision(seen, all=True))
    strategy.barrier()
    if strategy.is_global_zero:
        probe.unlink(missing_ok=True)
    return everyone
