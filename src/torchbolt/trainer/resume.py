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
* ``Progress`` phase flags telling which post-batch or epoch-end work was still due.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from torchbolt.utilities.rank_zero import rank_zero_warn
from torchbolt.utilities.seed import _collect_rng_states, _set_rng_states

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


def _stateful(loader: Any) -> list[Any] | None:
    """The leaf loaders when every one has ``state_dict``/``load_state_dict``, else ``None``."""
    leaves = _leaf_loaders(loader)
    if leaves and all(callable(getattr(x, "state_dict", None)) and callable(getattr(x, "load_state_dict", None))
                      for x in leaves):
        return leaves
    return None


def loader_states(loader: Any) -> list[Any] | None:
    """Each leaf loader's own ``state_dict()`` when all of them are stateful."""
    leaves = _stateful(loader) if loader is not None else None
    return [leaf.state_dict() for leaf in leaves] if leaves is not None else None


def _load_loader_states(loader: Any, states: list[Any]) -> bool:
    leaves = _stateful(loader)
    if leaves is None or len(leaves) != len(states):
        return False
    for leaf, state in zip(leaves, states):
        leaf.load_state_dict(state)
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
        )

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
            iterator = iter(loader)
        else:
            if self.epoch_rng is not None:
                set_rng(self.epoch_rng)
                set_generator_states(loader, self.epoch_generators)
            else:
                rank_zero_warn(
                    "The checkpoint was written mid-epoch without torchbolt's resume state (another tool wrote"
                    f" it): skipping the {done} batches already done, but the shuffled order and random state"
                    " cannot be restored exactly."
                )
            iterator = iter(loader)
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
        return iterator  # type: ignore[no-any-return]
