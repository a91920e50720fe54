"""Small parsing helpers shared across the package."""

from __future__ import annotations

import sys
from argparse import Namespace
from collections.abc import MutableMapping, Sequence
from functools import partial
from types import FrameType
from typing import Any


class AttributeDict(dict[str, Any]):
    """A dict whose keys can also be read and written as attributes (``hparams.lr``).

    Example::

        >>> d = AttributeDict(lr=0.1)
        >>> d.lr
        0.1
    """

    def __getattr__(self, key: str) -> Any:
        try:
            return self[key]
        except KeyError as e:
            raise AttributeError(f"Missing attribute {key!r}") from e

    def __setattr__(self, key: str, val: Any) -> None:
        self[key] = val

    def __delattr__(self, key: str) -> None:
        try:
            del self[key]
        except KeyError as e:
            raise AttributeError(f"Missing attribute {key!r}") from e

    def __repr__(self) -> str:
        if not self:
            return ""
        width = max(len(str(k)) for k in self)
        return "\n".join(f'"{k}":'.ljust(width + 3) + f" {v}" for k, v in sorted(self.items(), key=lambda kv: str(kv[0])))

    def __getstate__(self) -> dict[str, Any]:
        return dict(self)

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.update(state)


_BASES = {("torchbolt.core.module", "LightningModule"), ("torchbolt.core.datamodule", "LightningDataModule"),
          ("torchbolt.callbacks.callback", "Callback")}


def is_overridden(method_name: str, instance: object, parent: type | None = None) -> bool:
    """Whether ``instance`` brings its own ``method_name`` instead of ``parent``'s (Lightning's rule).

    ``parent`` defaults to the torchbolt base class (LightningModule, LightningDataModule, Callback) in
    the instance's ancestry. What is compared is the code that would run: an attribute set on the
    instance is first unwrapped (``functools.wraps``/``update_wrapper`` via ``__wrapped__``,
    ``Mock(wraps=fn)``, ``functools.partial``), so a wrapper that only records calls to the inherited
    hook does not count as an override, while a lambda or a different function does. A ``None``
    attribute (``Model.configure_model = None``), and a ``Mock`` that wraps nothing, are not overrides.

    Used once per run to decide which hooks to call, never on the per-batch path.
    """
    if instance is None:
        return False
    if parent is None:
        # the torchbolt base class in the instance's ancestry (found by name: this low-level helper does not
        # import the classes it knows about)
        parent = next((cls for cls in type(instance).__mro__ if (cls.__module__, cls.__qualname__) in _BASES), None)
        if parent is None:
            raise ValueError("Expected a parent class to compare with")
    instance_fn = _unwrap_hook(getattr(instance, method_name, None))
    if instance_fn is None:
        return False
    parent_fn = _unwrap_hook(getattr(parent, method_name, None))
    if parent_fn is None:
        return True
    return _code_of(instance_fn) != _code_of(parent_fn)


def _unwrap_hook(attr: Any) -> Any:
    """The callable that ``attr`` finally runs: through one ``__wrapped__``, a ``Mock``'s wraps or a partial."""
    if attr is None:
        return None
    # no Mock can exist unless unittest.mock was imported: do not import it for nothing
    mock_module = sys.modules.get("unittest.mock")
    mock_type: Any = mock_module.Mock if mock_module is not None else ()
    if hasattr(attr, "__wrapped__") and not isinstance(attr, mock_type):
        attr = attr.__wrapped__
    if isinstance(attr, mock_type):
        attr = attr._mock_wraps
    elif isinstance(attr, partial):
        attr = attr.func
    return attr


def _code_of(fn: Any) -> Any:
    """The code object behind ``fn`` (bound method, function), or ``fn`` itself when it has none."""
    fn = getattr(fn, "__func__", fn)
    return getattr(fn, "__code__", fn)


def has_own_hook(method_name: str, instance: object, parent: type) -> bool:
    """Whether calling ``instance.method_name`` may do something that ``parent``'s default does not.

    Wider than :func:`is_overridden`: anything assigned on the instance itself (a recording wrapper, a
    mock) counts, because the hook dispatcher skips default no-op hooks and a caller who replaced the
    attribute expects it to run.
    """
    if getattr(instance, method_name, None) is None:
        return False
    if method_name in getattr(instance, "__dict__", {}):
        return True
    return is_overridden(method_name, instance, parent)


def _attr_holders(model: Any, attribute: str) -> list[Any]:
    """Every object that holds ``attribute``: the model, its ``hparams``, the datamodule, its ``hparams``.

    The datamodule (the model's Trainer's) comes last, so it wins when reading.
    """
    holders: list[Any] = []
    if hasattr(model, attribute):
        holders.append(model)
    # the public ``hparams`` (a subclass may replace it with its own namespace or dict)
    hparams = getattr(model, "hparams", None)
    if hparams is not None and _has_key(hparams, attribute):
        holders.append(hparams)
    trainer = getattr(model, "_trainer", None)
    datamodule = getattr(trainer, "datamodule", None) if trainer is not None else None
    if datamodule is not None:
        if hasattr(datamodule, attribute):
            holders.append(datamodule)
        dm_hparams = getattr(datamodule, "hparams", None)
        if dm_hparams is not None and _has_key(dm_hparams, attribute):
            holders.append(dm_hparams)
    return holders


def _has_key(container: Any, key: str) -> bool:
    """``key in container`` for a dict or anything defining ``__contains__``; ``hasattr`` otherwise."""
    if isinstance(container, dict) or hasattr(type(container), "__contains__"):
        try:
            return key in container
        except TypeError:
            pass
    return hasattr(container, key)


def lightning_hasattr(model: Any, attribute: str) -> bool:
    """Whether ``attribute`` is on the model, in ``model.hparams``, on the datamodule or in its ``hparams``."""
    return bool(_attr_holders(model, attribute))


def lightning_getattr(model: Any, attribute: str) -> Any:
    """Read ``attribute`` from where :func:`lightning_hasattr` finds it (the datamodule's value wins).

    Raises:
        AttributeError: when none of the four places holds it.
    """
    holders = _attr_holders(model, attribute)
    if not holders:
        raise AttributeError(
            f"{attribute} is neither stored in the model namespace nor the `hparams` namespace/dict, nor the"
            " datamodule."
        )
    holder = holders[-1]
    if isinstance(holder, dict):
        return holder[attribute]
    return getattr(holder, attribute)


def lightning_setattr(model: Any, attribute: str, value: Any) -> None:
    """Set ``attribute`` to ``value`` everywhere :func:`lightning_hasattr` finds it (model, hparams, datamodule).

    Example::

        lightning_setattr(model, "lr", 3e-4)   # updates model.lr and model.hparams.lr when both exist

    Raises:
        AttributeError: when none of the four places holds it.
    """
    holders = _attr_holders(model, attribute)
    if not holders:
        raise AttributeError(
            f"{attribute} is neither stored in the model namespace nor the `hparams` namespace/dict, nor the"
            " datamodule."
        )
    for holder in holders:
        if isinstance(holder, dict):
            holder[attribute] = value
        else:
            setattr(holder, attribute, value)


def is_picklable(obj: object) -> bool:
    """Whether ``pickle.dumps(obj)`` succeeds (a lambda or an open file does not)."""
    import pickle

    try:
        pickle.dumps(obj)
    except (pickle.PickleError, AttributeError, RuntimeError, TypeError):
        # RuntimeError: e.g. a scripted module, which refuses to be pickled
        return False
    return True


def clean_namespace(hparams: MutableMapping[str, Any] | Namespace) -> None:
    """Remove, in place, every entry of ``hparams`` whose value cannot be pickled (it could not be checkpointed)."""
    mapping = vars(hparams) if isinstance(hparams, Namespace) else hparams
    for key in [key for key, value in mapping.items() if not is_picklable(value)]:
        del mapping[key]


def parse_class_init_keys(cls: type) -> tuple[str, str | None, str | None]:
    """The names ``cls.__init__`` gives to ``self``, to ``*args`` (or ``None``) and to ``**kwargs`` (or ``None``)."""
    import inspect

    parameters = list(inspect.signature(cls.__init__).parameters.values())  # type: ignore[misc]
    if not parameters:
        raise TypeError(f"`{cls.__name__}.__init__` takes no `self` parameter")
    args_name = next((p.name for p in parameters if p.kind is inspect.Parameter.VAR_POSITIONAL), None)
    kwargs_name = next((p.name for p in parameters if p.kind is inspect.Parameter.VAR_KEYWORD), None)
    return parameters[0].name, args_name, kwargs_name


def _init_owner_class(frame: FrameType) -> type | None:
    """The class whose ``__init__`` is running in ``frame`` (``None`` when the frame is no ``__init__``)."""
    if frame.f_code.co_name != "__init__" or frame.f_code.co_argcount == 0:
        return None
    owner = frame.f_locals.get("__class__")  # set when the __init__ uses super()
    if isinstance(owner, type):
        return owner
    self_obj = frame.f_locals.get(frame.f_code.co_varnames[0])
    return type(self_obj) if self_obj is not None else None


def get_init_args(frame: FrameType) -> dict[str, Any]:
    """The arguments of the ``__init__`` running in ``frame``, without ``self``, with ``**kwargs`` merged in.

    Returns an empty dict when ``frame`` is not an ``__init__``.
    """
    import inspect

    if _init_owner_class(frame) is None:
        return {}
    info = inspect.getargvalues(frame)
    found: dict[str, Any] = {name: info.locals[name] for name in info.args[1:] if name in info.locals}
    if info.varargs and info.locals.get(info.varargs):
        found[info.varargs] = info.locals[info.varargs]
    if info.keywords:
        found.update(info.locals.get(info.keywords) or {})
    return found


def collect_init_args(
    frame: FrameType, path_args: list[dict[str, Any]], inside: bool = False, classes: tuple[type, ...] = ()
) -> list[dict[str, Any]]:
    """Append the arguments of each ``__init__`` in a chain of calls to ``path_args`` and return it.

    Walks outwards from ``frame``: frames that are not an ``__init__`` (of a subclass of ``classes``, when
    given) are passed over until the first one is found; from there, each consecutive ``__init__`` frame
    (a ``super().__init__`` chain) adds its arguments (innermost first) and the first other frame ends
    the walk. ``inside=True`` means the walk is already in such a chain.
    """
    current: FrameType | None = frame
    while current is not None:
        owner = _init_owner_class(current)
        matches = owner is not None and (not classes or issubclass(owner, classes))
        if matches:
            path_args.append(get_init_args(current))
            inside = True
        elif inside:
            break
        current = current.f_back
    return path_args


def save_hyperparameters(
    obj: Any,
    *args: Any,
    ignore: Sequence[str] | str | None = None,
    frame: FrameType | None = None,
    given_hparams: dict[str, Any] | None = None,
) -> None:
    """Store ``__init__`` arguments as ``obj.hparams``, as ``obj.save_hyperparameters(...)`` does.

    ``obj`` must have ``save_hyperparameters`` (a ``LightningModule``, ``LightningDataModule`` or any
    ``HyperparametersMixin``). ``frame`` is the ``__init__`` frame to read (default: the caller's);
    ``given_hparams``, when passed, is used instead of reading a frame (``args`` and ``ignore`` still
    select from it).
    """
    import copy
    import inspect

    if not hasattr(obj, "save_hyperparameters") or not hasattr(obj, "_set_hparams"):
        raise TypeError(f"`obj` must be a HyperparametersMixin (e.g. a LightningModule), got {type(obj).__name__}")
    if given_hparams is None:
        if frame is None:
            current = inspect.currentframe()
            frame = current.f_back if current is not None else None
        obj.save_hyperparameters(*args, ignore=ignore, frame=frame)
        return
    ignored = {ignore} if isinstance(ignore, str) else set(ignore or [])
    names = [a for a in args if isinstance(a, str)] or list(given_hparams)
    unknown = [name for name in names if name not in given_hparams]
    if unknown:
        raise ValueError(f"`save_hyperparameters` got names that are not in `given_hparams`: {unknown}")
    obj._set_hparams({name: given_hparams[name] for name in names if name not in ignored})
    obj._hparams_initial = copy.deepcopy(obj._hparams)
