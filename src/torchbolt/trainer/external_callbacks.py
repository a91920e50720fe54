"""Callbacks contributed by installed packages through entry points (as Lightning loads them).

A package can add callbacks to every Trainer by declaring, in its metadata, an entry point in the group
``lightning.pytorch.callbacks_factory`` (Lightning's; ``pytorch_lightning.callbacks_factory`` and
``torchbolt.callbacks_factory`` are read too) whose object is a function returning a callback, a list
of callbacks, or nothing::

    [project.entry-points."lightning.pytorch.callbacks_factory"]
    my_callbacks = "my_package.callbacks:factory"

Each Trainer calls every factory once and appends what it returns after the user's callbacks.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from torchbolt.callbacks.callback import Callback
from torchbolt.utilities.rank_zero import rank_zero_info

GROUPS = ("lightning.pytorch.callbacks_factory", "pytorch_lightning.callbacks_factory", "torchbolt.callbacks_factory")


@functools.lru_cache(maxsize=1)
def _factories() -> tuple[tuple[str, Callable[[], Any]], ...]:
    """(entry point name, factory) for every registered factory; the metadata is scanned once per process."""
    from importlib.metadata import entry_points

    installed = entry_points()  # one scan of the installed metadata for all groups
    found: list[tuple[str, Callable[[], Any]]] = []
    for group in GROUPS:
        for entry in installed.select(group=group):
            found.append((entry.name, entry.load()))
    return tuple(found)


def load_external_callbacks() -> list[Callback]:
    """The callbacks the registered factories return now (new instances for each Trainer).

    Raises:
        TypeError: a factory returned something that is not a callback.
    """
    callbacks: list[Callback] = []
    for name, factory in _factories():
        made = factory()
        if made is None:
            continue
        items = list(made) if isinstance(made, (list, tuple)) else [made]
        for item in items:
            if not isinstance(item, Callback):
                raise TypeError(
                    f"The callbacks factory {name!r} (entry point) returned {type(item).__name__}, not a Callback."
                )
        if items:
            rank_zero_info(f"Adding {len(items)} callbacks from entry point {name!r}:"
                           f" {', '.join(type(cb).__name__ for cb in items)}")
        callbacks.extend(items)
    return callbacks
