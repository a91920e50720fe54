"""Exact resume: the state a checkpoint holds beyond weights and counters, and how a fit replays it.

A fit restarted from a checkpoint continues bit for bit (CPU, fp32, deterministic algorithms)
because everything that shapes the rest of the run is saved and put back at the same point:

* the global random generators (python, numpy, torch, CUDA) at the moment the checkpoint was written;
* the same generators and the training loaders' own ``torch.Generator`` s as they were right before
  this epoch's training iterator was created: a mid-epoch resume rebuilds that iterator from them
  (same shuffled order, same worker base seed) and fetches the batches already done again, so
  dataloader workers reach the same random state as before; then the checkpoint-moment state is
  put back. A loader that has its own ``state_dict``/``load_state_dict`` (a stateful dataloader)
  is positioned with those instead of the replay;
* gradients accumulated in an unfinished accumulation window (automatic optimization) or left
  on the parameters (manual optimization);
* the training ``ResultCollection`` and the metric store (epoch aggregates, callback metrics);
* the accumulated state of the ``torchmetrics.Metric`` s that are attributes of the module, and the
  training log entries of those passed to ``self.log``;
* ``Progress`` phase flags telling which post-batch or epoch-end work was still due.

Under several processes, everything above that differs between processes (random states, loader
positions, gradients inside an accumulation window, log aggregates, metric states) is gathered from
every process into the global-zero process's checkpoint (``ranks``, one entry per global rank), and
on resume each process takes its own entry back (:func:`gather_rank_states`, :func:`rank_resume_state`).
"""

from __future__ import annotations

import weakref
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, IterableDataset

from torchbolt.trainer.states import TrainerStatus
from torchbolt.utilities.data import sized_len
from torchbolt.utilities.distributed import _EvenIterable
from torchbolt.utilities.rank_zero import PossibleUserWarning, rank_zero_warn
from torchbolt.utilities.seed import _collect_rng_states, _set_rng_states

if TYPE_CHECKING:
    from torchbolt.trainer.trainer import Trainer

# ------------------------------------------------------------------ random generators


def capture_rng() -> dict[str, Any]:
    """The current state of every global random generator (cheap: no conversion)."""
    return _collect_rng_states()


def set_rng(states: dict[str, Any]) -> None:
    """Put back states returned by :func:`capture_rng` or :func:`rng_from_checkpoint`."""
    _set_rng_states(states)


def rng_to_checkpoint(states: dict[str, Any]) -> dict[str, Any]:
    """RNG states as tensors, numbers and lists (what a weights-only load accepts)."""
    kind, keys, pos, has_gauss, cached = states["numpy"]
    version, internal, gauss = states["python"]
    plain: dict[str, Any] = {
        "torch": states["torch"],
        "numpy": [str(kind), torch.from_numpy(np.asarray(keys, dtype=np.int64)), int(pos), int(has_gauss),
                  float(cached)],
        # the 625 words of the Mersenne Twister as one tensor (a list would pickle 625 objects)
        "python": [int(version), torch.tensor(internal, dtype=torch.int64), gauss],
    }
    if "torch.cuda" in states:
        plain["torch.cuda"] = list(states["torch.cuda"])
    return plain


def rng_from_checkpoint(plain: dict[str, Any]) -> dict[str, Any]:
    """The inverse of :func:`rng_to_checkpoint`."""
    kind, keys, pos, has_gauss, cached = plain["numpy"]
    version, internal, gauss = plain["python"]
    states: dict[str, Any] = {
        "torch": plain["torch"].cpu().to(torch.uint8),
        "numpy": (kind, np.asarray(keys.cpu().numpy(), dtype=np.uint32), pos, has_gauss, cached),
        "python": (version, tuple(int(v) for v in internal.tolist()), gauss),
    }
    if "torch.cuda" in plain:
        states["torch.cuda"] = [s.cpu().to(torch.uint8) for s in plain["torch.cuda"]]
    return states


# ------------------------------------------------------------------ loaders


def _leaf_loaders(loader: Any) -> list[Any]:
    children = getattr(loader, "flattened", None)
    if isinstance(children, list):
        return [leaf for child in children for leaf in _leaf_loaders(child)]
    return [loader]


def loader_generators(loader: Any) -> list[torch.Generator]:
    """The ``torch.Generator`` s a training loader draws its order and worker seeds from.

    A ``DataLoader(generator=...)`` and a sampler's ``generator`` are found; a loader that uses the
    global generator has none (the global state is saved separately).
    """
    found: list[torch.Generator] = []
    for leaf in _leaf_loaders(loader):
        sampler = getattr(leaf, "sampler", None)
        batch_sampler = getattr(leaf, "batch_sampler", None)
        for owner in (leaf, sampler, batch_sampler, getattr(batch_sampler, "sampler", None)):
            gen = getattr(owner, "generator", None)
            if isinstance(gen, torch.Generator) and all(gen is not g for g in found):
                found.append(gen)
    return found


def generator_states(loader: Any) -> list[Tensor]:
    return [gen.get_state() for gen in loader_generators(loader)] if loader is not None else []


def set_generator_states(loader: Any, states: list[Tensor]) -> None:
    generators = loader_generators(loader)
    if len(generators) != len(states):
        if states:
            rank_zero_warn(
                f"The checkpoint holds the state of {len(states)} dataloader generator(s) but the training"
                f" dataloader now has {len(generators)}; its order cannot be restored exactly."
            )
        return
    for gen, state in zip(generators, states):
        gen.set_state(state.cpu().to(torch.uint8))


def _has_state(obj: Any) -> bool:
    return callable(getattr(obj, "state_dict", None)) and callable(getattr(obj, "load_state_dict", None))


def _state_owner(leaf: Any) -> Any | None:
    """What holds a leaf loader's position: the loader itself when it has ``state_dict``/``load_state_dict``
    (torchdata's ``StatefulDataLoader``); the dataset of a plain ``DataLoader`` over an ``IterableDataset``
    that has them, when batches are fetched in this process (``num_workers=0``: with workers the
    dataset's copies advance inside them); else ``None``."""
    if _has_state(leaf):
        return leaf
    # under several processes a loader without a length is wrapped to stop every rank together
    loader = leaf.iterable if isinstance(leaf, _EvenIterable) else leaf
    if isinstance(loader, DataLoader) and loader.num_workers == 0 and isinstance(loader.dataset, IterableDataset) \
            and _has_state(loader.dataset):
        return loader.dataset
    return None


def _stateful(loader: Any) -> list[Any] | None:
    """What holds each leaf loader's position (see :func:`_state_owner`) when every leaf has one, else ``None``."""
    owners = [_state_owner(leaf) for leaf in _leaf_loaders(loader)]
    if owners and all(owner is not None for owner in owners):
        return owners
    return None


def loader_states(loader: Any, done: int | None = None) -> list[Any] | None:
    """Each leaf loader's own state when all of them are stateful.

    With the number of batches ``done`` this epoch, the state right after the ``done``-th batch was
    fetched by the epoch's iterator (from :func:`epoch_iterator`): a loader without a length is
    fetched one batch ahead of training, and the state after that look-ahead fetch would skip a batch
    on resume.
    """
    tracker = _TRACKERS.get(id(loader))
    if tracker is not None and tracker.loader is loader and done is not None:
        states = tracker.states_after(done)
        if states is not None:
            return states
    owners = _stateful(loader) if loader is not None else None
    return [owner.state_dict() for owner in owners] if owners is not None else None


class _PositionTracker(Iterator[Any]):
    """An epoch's iterator over a stateful loader without a length, which remembers the loader state
    before each of its last two fetches (one of them is the look-ahead fetch)."""

    def __init__(self, loader: Any, iterator: Iterator[Any], fetched: int) -> None:
        self.loader, self.iterator, self.fetched = loader, iterator, fetched
        self._before: dict[int, list[Any] | None] = {}
        # found by the loader, and only while the epoch's loop holds this iterator (the entry goes with
        # it, so the loop keeps no iterator, and no dataloader worker, alive after the epoch)
        _TRACKERS[id(loader)] = self

    def __next__(self) -> Any:
        # the state after `fetched` batches, taken before fetching the next one
        self._before = {k: v for k, v in self._before.items() if k == self.fetched - 1}
        self._before[self.fetched] = loader_states(self.loader)
        batch = next(self.iterator)
        self.fetched += 1
        return batch

    def states_after(self, done: int) -> list[Any] | None:
        return self._before.get(done)


_TRACKERS: weakref.WeakValueDictionary[int, _PositionTracker] = weakref.WeakValueDictionary()


def epoch_iterator(loader: Any, fetched: int = 0) -> Iterator[Any]:
    """``iter(loader)``, or, for a stateful loader without a length, an iterator that tracks its position
    for :func:`loader_states` (``fetched``: the batches of this epoch the loader was already past)."""
    iterator: Iterator[Any] = iter(loader)
    if sized_len(loader) is None and _stateful(loader) is not None:
        return _PositionTracker(loader, iterator, fetched)
    return iterator


def _load_loader_states(loader: Any, states: list[Any]) -> bool:
    owners = _stateful(loader)
    if owners is None or len(owners) != len(states):
        return False
    for owner, state in zip(owners, states):
        owner.load_state_dict(state)
    return True


# ------------------------------------------------------------------ gradients


def accumulated_grads(module: nn.Module) -> dict[str, Tensor]:
    """Every parameter's ``.grad`` (on the CPU), by parameter name."""
    return {name: p.grad.detach().cpu().clone() for name, p in module.named_parameters() if p.grad is not None}


def restore_grads(module: nn.Module, grads: dict[str, Tensor]) -> None:
    params = dict(module.named_parameters())
    for name, grad in grads.items():
        param = params.get(name)
        if param is not None:
            param.grad = grad.to(device=param.device, dtype=param.dtype).clone()


# ------------------------------------------------------------------ torchmetrics metrics


def _is_stateful_metric(module: Any) -> bool:
    # duck-typed torchmetrics.Metric (torchmetrics is never imported here): its states are named in `_defaults`
    return (callable(getattr(module, "compute", None)) and callable(getattr(module, "update", None))
            and isinstance(getattr(module, "_defaults", None), dict) and hasattr(module, "_update_count"))


def module_metrics(module: nn.Module | None) -> dict[str, Any]:
    """The ``torchmetrics.Metric`` s among the submodules of ``module``, by their name in it (nested
    ones too, e.g. the members of a ``MetricCollection``)."""
    if module is None:
        return {}
    return {name: m for name, m in module.named_modules() if name and _is_stateful_metric(m)}


def metric_names(module: nn.Module | None) -> dict[int, str]:
    """``id(metric)`` -> its name in ``module`` (for :meth:`ResultCollection.state_dict`)."""
    return {id(metric): name for name, metric in module_metrics(module).items()}


def _metric_state(metric: Any) -> dict[str, Any]:
    states: dict[str, Any] = {}
    for name in metric._defaults:
        value = getattr(metric, name)
        if isinstance(value, Tensor):
            states[name] = value.detach().cpu().clone()
        elif isinstance(value, list):
            states[name] = [v.detach().cpu().clone() if isinstance(v, Tensor) else v for v in value]
    return {"states": states, "update_count": int(metric._update_count)}


def metric_states(module: nn.Module | None, skip: list[Any] | None = None) -> dict[str, Any]:
    """The accumulated state of every ``Metric`` of ``module`` (on the CPU), by name, except those in ``skip``.

    Evaluation metrics passed to ``self.log`` belong in ``skip``: every evaluation resets them before
    using them again, so the original run never reads what they hold at the checkpoint moment.
    """
    skipped = {id(m) for m in skip or []}
    return {name: _metric_state(m) for name, m in module_metrics(module).items() if id(m) not in skipped}


def restore_metric_states(module: nn.Module | None, states: dict[str, Any]) -> dict[str, Any]:
    """Put the states from :func:`metric_states` back into ``module``'s metrics (on their device).

    Returns:
        ``module``'s metrics by name (for :meth:`ResultCollection.load_state_dict`).
    """
    metrics = module_metrics(module)
    for name, saved in states.items():
        metric = metrics.get(name)
        if metric is None:
            rank_zero_warn(f"The checkpoint holds the state of the metric {name!r}, which the module no longer has;"
                           " it is ignored.")
            continue
        device = getattr(metric, "device", None)
        for state_name, value in saved["states"].items():
            if state_name not in metric._defaults:
                continue
            if isinstance(value, list):
                value = [v.to(device) if isinstance(v, Tensor) else v for v in value]
            elif isinstance(value, Tensor):
                value = value.to(device)
            setattr(metric, state_name, value)
        metric._update_count = int(saved["update_count"])
        metric._computed = None  # a value computed before the restore is stale
    return metrics


# ------------------------------------------------------------------ several processes

# the entries of the resume state that differ between processes
RANK_LOCAL_KEYS = ("rng", "epoch_rng", "generators", "epoch_generators", "loader_states", "grads", "results",
                   "epoch_log", "metrics", "metric_states")


def gather_rank_states(trainer: Trainer, state: dict[str, Any]) -> None:
    """Add every process's :data:`RANK_LOCAL_KEYS` entries of ``state`` to the global-zero process's
    ``state["ranks"]`` (a list by global rank), and the number of processes as ``state["world_size"]``.

    Every process must call this (it is a collective on the CPU process group), which it does when
    building a checkpoint (``Trainer.save_checkpoint`` runs on every process). After an exception,
    the other processes may not be saving at all, so only this process's state is kept then
    (:func:`rank_resume_state` warns when resuming from such a file).
    """
    world_size = trainer.world_size
    state["world_size"] = world_size
    if world_size <= 1 or trainer.state.status == TrainerStatus.INTERRUPTED:
        return
    local = {key: state[key] for key in RANK_LOCAL_KEYS if key in state}
    # tensors travel as raw bytes: pickling a tensor calls `torch.save`, which a process that writes no
    # checkpoint should not be seen doing (and raw bytes are cheaper to pickle)
    gathered = trainer.strategy.gather_object(_map_tensors(local, Tensor, _PackedTensor.pack))
    if gathered is not None and len(gathered) == world_size:
        gathered = [_map_tensors(entry, _PackedTensor, _PackedTensor.unpack) for entry in gathered]
        # this process's own entry is the same objects as the top level (saved once by torch.save)
        gathered[trainer.global_rank] = local
        state["ranks"] = gathered


@dataclass(frozen=True)
class _PackedTensor:
    """A dense tensor as its raw bytes, dtype, shape and device: pickles without any torch storage."""

    data: bytes
    dtype: torch.dtype
    shape: tuple[int, ...]
    device: str

    @staticmethod
    def pack(tensor: Tensor) -> Any:
        if type(tensor) is not Tensor or tensor.layout != torch.strided or tensor.is_quantized:
            return tensor  # pickled as before
        flat = tensor.detach().to("cpu").contiguous().reshape(-1)
        return _PackedTensor(flat.view(torch.uint8).numpy().tobytes(), tensor.dtype, tuple(tensor.shape),
                             str(tensor.device))

    def unpack(self) -> Tensor:
        if self.data:
            flat = torch.frombuffer(bytearray(self.data), dtype=torch.uint8).view(self.dtype)
        else:
            flat = torch.empty(0, dtype=self.dtype)
        tensor = flat.reshape(self.shape)
        # where pickling would have put it; a device this process does not have keeps it on the CPU
        try:
            return tensor.to(self.device)
        except (RuntimeError, AssertionError):
            return tensor


def _map_tensors(obj: Any, kind: type, fn: Any) -> Any:
    """``obj`` with ``fn`` applied to every ``kind`` instance (a tensor to pack, a packed tensor to unpack)
    inside dicts, lists and tuples; other objects are returned as they are (and pickled as they are)."""
    if isinstance(obj, kind):
        return fn(obj)
    if type(obj) in (dict, OrderedDict):
        return type(obj)((key, _map_tensors(value, kind, fn)) for key, value in obj.items())
    if type(obj) is list:
        return [_map_tensors(value, kind, fn) for value in obj]
    if isinstance(obj, tuple):
        items = [_map_tensors(value, kind, fn) for value in obj]
        return type(obj)(*items) if hasattr(obj, "_fields") else type(obj)(items)
    return obj


def rank_resume_state(trainer: Trainer, state: dict[str, Any] | None) -> dict[str, Any] | None:
    """The resume state of this process: ``state`` with this global rank's entry of ``state["ranks"]``.

    A checkpoint without per-process entries (written by an older torchbolt, by another tool, or after
    an exception) gives every process the global-zero process's state, as does one written by a
    different number of processes; both are not exact, and the second case warns.
    """
    if not state:
        return state
    world_size = trainer.world_size
    saved_world_size = state.get("world_size")
    ranks = state.get("ranks")
    if saved_world_size is not None and saved_world_size != world_size:
        rank_zero_warn(
            f"The checkpoint was written by {saved_world_size} process(es) and is resumed by {world_size}: every"
            " process continues from the random state, loader position and metric state of global rank 0, so the"
            " continuation is not exact. Resume with the same number of processes to continue exactly."
        )
        return state
    if isinstance(ranks, list) and len(ranks) == world_size:
        return {**state, **ranks[trainer.global_rank]}
    if world_size > 1 and saved_world_size is not None:
        rank_zero_warn(
            "The checkpoint holds only global rank 0's random state, loader position and metric state (it was"
            " written while handling an exception): every process continues from those, which is not exact."
        )
    return state


# ------------------------------------------------------------------ the resume point


@dataclass
class ResumePoint:
    """What a fit needs from a checkpoint, beyond counters, to continue exactly where it was."""

    rng: dict[str, Any] | None = None
    epoch_rng: dict[str, Any] | None = None
    generators: list[Tensor] = field(default_factory=list)
    epoch_generators: list[Tensor] = field(default_factory=list)
    loader_states: list[Any] | None = None
    train_loaded_epoch: int | None = None
    grads: dict[str, Tensor] = field(default_factory=dict)
    results: dict[str, Any] | None = None
    epoch_log: dict[str, Tensor] = field(default_factory=dict)
    metric_states: dict[str, Any] = field(default_factory=dict)

    @property
    def exact(self) -> bool:
        """Whether the checkpoint carried the random state (torchbolt checkpoints do)."""
        return self.rng is not None

    @classmethod
    def from_checkpoint(cls, state: dict[str, Any] | None) -> ResumePoint:
        """Read the ``loops.fit_loop.torchbolt`` entry of a checkpoint (empty for other tools' files)."""
        if not state:
            return cls()
        rng = state.get("rng")
        epoch_rng = state.get("epoch_rng")
        return cls(
            rng=rng_from_checkpoint(rng) if rng else None,
            epoch_rng=rng_from_checkpoint(epoch_rng) if epoch_rng else None,
            generators=list(state.get("generators") or []),
            epoch_generators=list(state.get("epoch_generators") or []),
            loader_states=state.get("loader_states"),
            train_loaded_epoch=state.get("train_loaded_epoch"),
            grads=dict(state.get("grads") or {}),
            results=state.get("results"),
            epoch_log=dict(state.get("epoch_log") or {}),
            metric_states=dict(state.get("metric_states") or {}),
        )

    def restore_metrics(self, module: nn.Module | None) -> dict[str, Any]:
        """Put the module's ``Metric`` states back; returns its metrics by name (to restore their log entries)."""
        return restore_metric_states(module, self.metric_states)

    def restore_loader(self, loader: Any) -> None:
        """At an epoch start, give a rebuilt training loader the state the original one had reached:
        its own ``load_state_dict`` when it has one, else its generators' states."""
        if self.loader_states is not None and _load_loader_states(loader, self.loader_states):
            return
        set_generator_states(loader, self.generators)

    def replay_epoch(self, loader: Any, done: int) -> Iterator[Any]:
        """An iterator over ``loader`` positioned after its first ``done`` batches, with the random
        state of the checkpoint moment in place afterwards.

        Raises:
            RuntimeError: when the loader has fewer than ``done`` batches (different data than the
                checkpointed run).
        """
        if self.loader_states is not None and _load_loader_states(loader, self.loader_states):
            iterator = epoch_iterator(loader, fetched=done)
        else:
            if self.epoch_rng is not None:
                set_rng(self.epoch_rng)
                set_generator_states(loader, self.epoch_generators)
                rank_zero_warn(
                    f"You are resuming from a checkpoint that ended before the epoch ended, and the training"
                    f" dataloader cannot restore its position (it has no `state_dict`/`load_state_dict`): its"
                    f" first {done} batches of this epoch are fetched again and skipped, in the same order, so the"
                    " fit continues exactly but the data of those batches is loaded once more.",
                    category=PossibleUserWarning,
                )
            else:
                rank_zero_warn(
                    "The checkpoint was written mid-epoch without torchbolt's resume state (another tool wrote"
                    f" it): skipping the {done} batches already done, but the shuffled order and random state"
                    " cannot be restored exactly."
                )
            iterator = epoch_iterator(loader)
            for skipped in range(done):
                try:
                    next(iterator)
                except StopIteration:
                    raise RuntimeError(
                        f"Resuming mid-epoch needs to skip the {done} training batches already done, but the"
                        f" training dataloader ran out after {skipped}. Resume with the same training data."
                    ) from None
        if self.rng is not None:
            set_rng(self.rng)
        return iterator
