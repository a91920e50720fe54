"""``LambdaCallback``: a callback built from functions, one per hook."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torchbolt.callbacks.callback import Callback

_HOOKS = frozenset(
    name for name, value in vars(Callback).items()
    if callable(value) and not name.startswith("_") and name not in ("state_dict", "load_state_dict")
)


class LambdaCallback(Callback):
    r"""Run the given function at each named hook (same arguments as the ``Callback`` hook).

    Example::

        trainer = Trainer(callbacks=[LambdaCallback(on_train_epoch_end=lambda trainer, module: print("done"))])

    Raises:
        TypeError: a keyword that is not a ``Callback`` hook.
    """

    def __init__(self, **hooks: Callable[..., Any]) -> None:
        unknown = sorted(set(hooks) - _HOOKS)
        if unknown:
            raise TypeError(f"`LambdaCallback` got {unknown}, which are not Callback hooks. Known hooks: {sorted(_HOOKS)}")
        for name, fn in hooks.items():
            if fn is not None:
                setattr(self, name, fn)
