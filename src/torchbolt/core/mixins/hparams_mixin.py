"""``save_hyperparameters``: record a constructor's arguments as plain data."""

from __future__ import annotations

import copy
import inspect
import types
from argparse import Namespace
from collections.abc import MutableMapping, Sequence
from dataclasses import fields, is_dataclass
from typing import Any

from torch import nn

from torchbolt.utilities.parsing import AttributeDict
from torchbolt.utilities.rank_zero import rank_zero_warn

_PRIMITIVE_TYPES = (bool, int, float, str)


def _init_frame_args(frame: types.FrameType) -> tuple[Any, dict[str, Any]] | None:
    """``(self, arguments)`` of an ``__init__`` frame; ``None`` for any other frame.

    The arguments are the named parameters with the ``**kwargs`` contents merged in; ``*args`` is left
    out (positional extras have no names to store them under).
    """
    code = frame.f_code
    if code.co_name != "__init__" or code.co_argcount == 0:
        return None
    args_info = inspect.getargvalues(frame)
    local_vars = args_info.locals
    owner = local_vars.get(args_info.args[0])
    named = {name: local_vars[name] for name in args_info.args[1:] if name in local_vars}
    if args_info.keywords:
        named.update(local_vars.get(args_info.keywords) or {})
    named.pop("__class__", None)
    return owner, named


def _collect_init_args(frame: types.FrameType, ignore: set[str]) -> dict[str, Any]:
    """The arguments of the ``__init__`` that owns ``frame`` and of the enclosing ``__init__`` calls.

    Walks outwards while the callers are ``__init__`` methods of objects with hyperparameters: a
    ``super().__init__(...)`` chain, and also an object built inside another one's ``__init__``
    (a composed system), as Lightning does. Outer arguments win over inner ones of the same name.
    """
    layers: list[dict[str, Any]] = []
    current: types.FrameType | None = frame
    while current is not None:
        found = _init_frame_args(current)
        if found is None or not isinstance(found[0], HyperparametersMixin):
            break
        layers.append(found[1])
        current = current.f_back
    init_args: dict[str, Any] = {}
    for layer in layers:
        init_args.update(layer)
    for name in ignore:
        init_args.pop(name, None)
    return init_args


def _is_empty(value: Any) -> bool:
    try:
        return len(value) == 0
    except TypeError:
        return False


def _same_value(a: Any, b: Any) -> bool:
    if a is b:
        return True
    try:
        return bool(a == b)
    except Exception:  # e.g. tensors of several elements
        return False


class HyperparametersMixin:
    """Gives a class ``save_hyperparameters()``, ``hparams`` and ``hparams_initial``."""

    __jit_unused_properties__: list[str] = ["hparams", "hparams_initial"]

    _hparams: Any

    def __init__(self) -> None:
        super().__init__()
        self._log_hyperparams: bool = True

    def save_hyperparameters(
        self,
        *args: Any,
        ignore: Sequence[str] | str | None = None,
        frame: types.FrameType | None = None,
        logger: bool = True,
    ) -> None:
        """Store the calling ``__init__``'s arguments in ``self.hparams``.

        They are written to checkpoints (``hyper_parameters``) and to the logger, and
        ``load_from_checkpoint`` passes them back to ``__init__``.

        Args:
            args: names of the arguments to keep (default: all), or a single dict/Namespace to store.
            ignore: argument names to leave out (e.g. a module passed in that is saved anyway).
            frame: the frame to read arguments from (default: the caller's).
            logger: also send the hyperparameters to the logger.

        Example::

            class LitModel(LightningModule):
                def __init__(self, lr: float = 1e-3, hidden: int = 64):
                    super().__init__()
                    self.save_hyperparameters()   # self.hparams.lr, self.hparams.hidden
        """
        self._log_hyperparams = logger
        if len(args) == 1 and not isinstance(args[0], str) and _is_empty(args[0]):
            return  # an empty config: nothing to store, and earlier hyperparameters stay
        if frame is None:
            current = inspect.currentframe()
            frame = current.f_back if current is not None else None
        ignore_list = [ignore] if isinstance(ignore, str) else [i for i in (ignore or []) if isinstance(i, str)]
        if is_dataclass(self):
            # a dataclass module has no hand-written ``__init__``: its init fields are the arguments
            init_args = {f.name: getattr(self, f.name) for f in fields(self) if f.init}
            init_args = {k: v for k, v in init_args.items() if k not in ignore_list}
        else:
            init_args = _collect_init_args(frame, set(ignore_list)) if frame is not None else {}
        objects = [arg for arg in args if not isinstance(arg, str)]
        hp: Any
        if not args:
            hp = init_args
            self._hparams_name = "kwargs" if hp else None
        elif len(objects) == 1:
            # a config object: remember which ``__init__`` argument it came in as, so that
            # ``load_from_checkpoint`` passes it back under that name
            hp = objects[0]
            names = [name for name, value in init_args.items() if _same_value(value, hp)]
            self._hparams_name = names[0] if names else None
        else:
            missing = [a for a in args if isinstance(a, str) and a not in init_args]
            if missing:
                raise ValueError(f"`save_hyperparameters` got names that are not `__init__` arguments: {missing}")
            hp = {a: init_args[a] for a in args if isinstance(a, str)}
            self._hparams_name = "kwargs"
        self._set_hparams(hp)
        # a subclass may drop what a base class's ``save_hyperparameters`` stored
        self.remove_ignored_hparams(ignore_list)
        if isinstance(self._hparams, MutableMapping):
            self._warn_if_modules(dict(self._hparams))
        self._hparams_initial = copy.deepcopy(self._hparams)

    def remove_ignored_hparams(self, ignore_list: list[str]) -> None:
        """Remove the named hyperparameters (e.g. ones a base class saved that a subclass ignores)."""
        hparams = getattr(self, "_hparams", None)
        if isinstance(hparams, MutableMapping):
            for key in ignore_list:
                hparams.pop(key, None)

    def _warn_if_modules(self, hp: dict[str, Any]) -> None:
        for name, value in hp.items():
            if isinstance(value, nn.Module):
                rank_zero_warn(
                    f"Attribute {name!r} is an instance of `nn.Module` and is already saved during checkpointing."
                    f" It is recommended to ignore them using `self.save_hyperparameters(ignore=[{name!r}])`."
                )

    def _set_hparams(self, hp: MutableMapping[str, Any] | Namespace | Any) -> None:
        if isinstance(hp, Namespace):
            hp = vars(hp)
        elif is_dataclass(hp) and not isinstance(hp, type):
            hp = {f.name: getattr(hp, f.name) for f in fields(hp)}
        elif isinstance(hp, _PRIMITIVE_TYPES):
            raise ValueError(
                f"Primitives {_PRIMITIVE_TYPES} are not allowed as hyperparameters: pass a dict, Namespace or"
                " dataclass, or the names of `__init__` arguments."
            )
        elif hp is None or not isinstance(hp, MutableMapping):
            raise ValueError(f"Unsupported config type of {type(hp)}: pass a dict, Namespace or dataclass.")
        if isinstance(hp, dict) and not isinstance(hp, AttributeDict):
            hp = AttributeDict(hp)
        current = getattr(self, "_hparams", None)
        if isinstance(hp, dict) and isinstance(current, dict):
            # a second call (e.g. a subclass after its base class) adds to what is stored
            current.update(hp)
        else:
            self._hparams = hp

    @property
    def hparams(self) -> AttributeDict:
        """The saved hyperparameters; assign to ``self.hparams.x`` to update one."""
        if not hasattr(self, "_hparams"):
            self._hparams = AttributeDict()
        hparams: AttributeDict = self._hparams
        return hparams

    @property
    def hparams_initial(self) -> AttributeDict:
        """A copy of the hyperparameters as they were when ``save_hyperparameters`` ran."""
        if not hasattr(self, "_hparams_initial"):
            return AttributeDict()
        initial: AttributeDict = copy.deepcopy(self._hparams_initial)
        return initial
