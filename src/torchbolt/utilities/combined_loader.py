"""``CombinedLoader``: iterate several dataloaders together (several training loaders, or in sequence)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any, Literal

from torchbolt.utilities.data import sized_len

_Mode = Literal["max_size_cycle", "min_size", "max_size", "sequential"]
_MODES = ("max_size_cycle", "min_size", "max_size", "sequential")


def _is_node(obj: Any) -> bool:
    """A dict/list/tuple of iterables; one holding only numbers and strings (``[0, 1, 2]``) is itself an
    iterable of batches, not a collection of iterables."""
    if not isinstance(obj, (dict, list, tuple)):
        return False
    children = obj.values() if isinstance(obj, dict) else obj
    return not all(isinstance(child, (int, float, str)) for child in children)


def _flatten(iterables: Any) -> tuple[list[Any], Callable[[list[Any]], Any]]:
    """The leaf iterables of a (nested) list/tuple/dict, and a function rebuilding the same structure from
    as many values (``{"a": [x, y], "b": z}`` has the leaves ``[x, y, z]``)."""
    if not _is_node(iterables):
        return [iterables], lambda values: values[0]
    keys = list(iterables) if isinstance(iterables, dict) else list(range(len(iterables)))
    children = [_flatten(iterables[k]) for k in keys]
    sizes = [len(leaves) for leaves, _ in children]
    leaves = [leaf for child, _ in children for leaf in child]

    def rebuild(values: list[Any]) -> Any:
        parts, start = [], 0
        for (_, child_rebuild), size in zip(children, sizes):
            parts.append(child_rebuild(values[start:start + size]))
            start += size
        if isinstance(iterables, dict):
            return type(iterables)(zip(keys, parts)) if type(iterables) is not dict else dict(zip(keys, parts))
        if isinstance(iterables, tuple) and hasattr(iterables, "_fields"):  # a namedtuple
            return type(iterables)(*parts)
        return type(iterables)(parts)

    return leaves, rebuild


class CombinedLoader(Iterable):
    """Iterate a collection (list, tuple or dict) of iterables.

    Modes:
        ``max_size_cycle``: until the longest is exhausted, restarting shorter ones; batches mirror
        the collection's structure. ``min_size``: until the shortest is exhausted. ``max_size``:
        until the longest is exhausted, exhausted ones yield ``None``. ``sequential``: one after the
        other, yielding ``(batch, batch_idx, dataloader_idx)``.

    Example::

        loader = CombinedLoader({"a": loader_a, "b": loader_b}, mode="max_size_cycle")
        for batch in loader:   # {"a": batch_a, "b": batch_b}
            ...
    """

    def __init__(self, iterables: Any, mode: _Mode = "max_size_cycle") -> None:
        if mode not in _MODES:
            raise ValueError(f"`CombinedLoader(mode={mode!r})`: use one of {list(_MODES)}.")
        self._iterables = iterables
        self._mode = mode
        self._leaves, self._rebuild = _flatten(iterables)
        self._limits: list[int | float] | None = None

    @property
    def iterables(self) -> Any:
        """The collection of iterables, in the structure it was given (with any replaced leaves)."""
        return self._iterables

    @property
    def flattened(self) -> list[Any]:
        """The leaf iterables of the collection, depth first (``{"a": [x, y], "b": z}``: ``[x, y, z]``)."""
        return self._leaves

    @flattened.setter
    def flattened(self, flattened: list[Any]) -> None:
        # replacing the leaves (e.g. dataloaders rebuilt with another sampler) keeps `iterables` in step
        if len(flattened) != len(self._leaves):
            raise ValueError(
                f"`CombinedLoader.flattened` has {len(self._leaves)} iterables; it cannot be replaced by"
                f" {len(flattened)}."
            )
        self._leaves = list(flattened)
        self._iterables = self._rebuild(self._leaves)

    @property
    def mode(self) -> str:
        return self._mode

    @property
    def _flattened(self) -> list[Any]:
        return self.flattened

    def _lengths(self) -> list[int | float]:
        lengths = [sized_len(it) for it in self.flattened]
        out: list[int | float] = [float("inf") if n is None else n for n in lengths]
        if self._limits is not None:
            out = [min(n, limit) for n, limit in zip(out, self._limits)]
        return out

    def __len__(self) -> int:
        lengths = self._lengths()
        if self._mode == "min_size":
            total = min(lengths)
        elif self._mode == "sequential":
            total = sum(lengths)
        else:
            total = max(lengths)
        if total == float("inf"):
            raise TypeError("CombinedLoader has no length: an iterable has none")
        return int(total)

    def __iter__(self) -> Iterator[Any]:
        if self._mode == "sequential":
            return self._iter_sequential()
        return self._iter_parallel()

    def _iter_sequential(self) -> Iterator[Any]:
        lengths = self._lengths()
        for dl_idx, (iterable, limit) in enumerate(zip(self.flattened, lengths)):
            for batch_idx, batch in enumerate(iterable):
                if batch_idx >= limit:
                    break
                yield batch, batch_idx, dl_idx

    def _iter_parallel(self) -> Iterator[Any]:
        # the loaders' iterators start now, not at the first batch: creating them may draw from the global
        # generators (a DataLoader's base seed), and an exact resume restores them right after this call
        return self._parallel([iter(it) for it in self.flattened])

    def _parallel(self, iterators: list[Iterator[Any]]) -> Iterator[Any]:
        lengths = self._lengths()
        if self._mode == "min_size":
            total = min(lengths)
        else:
            total = max(lengths)
        exhausted = [False] * len(iterators)
        index = 0
        while index < total:
            values: list[Any] = []
            for i, iterator in enumerate(iterators):
                try:
                    if self._mode == "max_size" and exhausted[i]:
                        values.append(None)
                        continue
                    values.append(next(iterator))
                except StopIteration:
                    if self._mode == "min_size":
                        return
                    exhausted[i] = True
                    if all(exhausted):
                        return
                    if self._mode == "max_size":
                        values.append(None)
                        continue
                    iterators[i] = iter(self.flattened[i])
                    values.append(next(iterators[i]))
            yield self._rebuild(values)
            index += 1

    def reset(self) -> None:
        """Kept for Lightning compatibility; iterators are created per epoch."""
