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


def _frame_self(frame: types.FrameType) -> Any:
    code = frame.f_code
    if code.co_name != "__init__" or code.co_argcount == 0:
        return None
    return frame.f_locals.get(code.co_varnames[0])


def _argument_holding(frame: types.FrameType, value: Any) -> str | None:
    """The name of the ``__init__`` argument (of ``frame``'s object) that holds ``value``, if any."""
    init_args = _collect_init_args(frame, set())
    for name, arg in init_args.items():
        if arg is value:
            return name
    for name, arg in init_args.items():
        try:
            if arg == value:
                return name
        except Exception:  # an argument whose comparison fails (e.g. a tensor) cannot be the match
            continue
    return None


def _collect_init_args(frame: types.FrameType, ignore: set[str]) -> dict[str, Any]:
    """The named arguments of the ``__init__`` that owns ``frame``, with its ``**kwargs`` merged in.

    Walks out through the ``__init__`` frames of the same object (``super().__init__(...)`` chains)
    so that the outermost subclass's arguments win, as users expect.
    """
    owner = _frame_self(frame)
    frames: list[types.FrameType] = []
    current: types.FrameType | None = frame
    while current is not None and owner is not None and _frame_self(current) is owner:
        frames.append(current)
        current = current.f_back
    init_args: dict[str, Any] = {}
    for f in reversed(frames):
        args_info = inspect.getargvalues(f)
        local_vars = args_info.locals
        for name in args_info.args[1:]:
            if name in local_vars:
                init_args[name] = local_vars[name]
        if args_info.varargs and local_vars.get(args_info.varargs):
            init_args[args_info.varargs] = local_vars[args_info.varargs]
        if args_info.keywords:
            init_args.update(local_vars.get(args_info.keywords, {}))
    for name in ignore:
        init_args.pop(name, None)
    init_args.pop("__class__", None)
    return init_args


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
        if len(args) == 1 and not isinstance(args[0], str):
            # remembered under the `__init__` argument it came in as, so `load_from_checkpoint` passes
            # the saved values back as that argument (`__init__(self, config)` gets `config=...`)
            caller = frame if frame is not None else getattr(inspect.currentframe(), "f_back", None)
            self._hparams_name = _argument_holding(caller, args[0]) if caller is not None else None
            self._set_hparams(args[0])
            self._hparams_initial = copy.deepcopy(self._hparams)
            return
        if frame is None:
            current = inspect.currentframe()
            frame = current.f_back if current is not None else None
        if frame is None:
            return
        ignore_set = {ignore} if isinstance(ignore, str) else set(ignore or [])
        init_args = _collect_init_args(frame, ignore_set)
        if args:
            missing = [a for a in args if a not in init_args]
            if missing:
                raise ValueError(f"`save_hyperparameters` got names that are not `__init__` arguments: {missing}")
            hp = {a: init_args[a] for a in args}
        else:
            hp = init_args
        self._warn_if_modules(hp)
        self._hparams_name = "kwargs" if hp else None
        self._set_hparams(hp)
        self._hparams_initial = copy.deepcopy(self._hparams)

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
        elif isinstance(hp, (str, int, float, bool)) or hp is None:
            raise ValueError(f"Unsupported config type of {type(hp)}: pass a dict, Namespace or dataclass.")
        if isinstance(hp, dict) and not isinstance(hp, AttributeDict):
            hp = AttributeDict(hp)
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
