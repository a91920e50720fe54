"""The few plain data types a weights-only checkpoint load accepts beyond torch's own.

``torch.load(weights_only=True)`` rebuilds tensors, numbers, strings and containers and refuses every
other class or function a pickle names, because unpickling can call anything it names. Real
PyTorch Lightning checkpoints often carry a handful of harmless types in ``hyper_parameters``; this
module allows exactly those, for the duration of one load (``torch.serialization`` allowlist
entries, added and removed around the call, never left behind):

- ``pathlib`` paths (``PosixPath``, ``WindowsPath``, the pure variants; a path of the other OS loads
  as its pure variant, e.g. ``PureWindowsPath`` on Linux, since the concrete one cannot exist there);
- ``argparse.Namespace`` (attributes set from plain data);
- ``AttributeDict``, under torchbolt's name and Lightning's (``lightning.fabric.utilities.data``,
  ``lightning_fabric.utilities.data``, ``pytorch_lightning.utilities.parsing``, ...), always loaded as
  :class:`torchbolt.utilities.parsing.AttributeDict` (Lightning is never imported);
- ``datetime.date``, ``time``, ``datetime``, ``timedelta``, ``timezone``;
- NumPy scalars and arrays of booleans, numbers, strings, bytes and datetimes (not ``dtype=object``);
- ``Enum`` members, under a stricter rule (:func:`enum_entries`): the enum class must already be
  imported (loading never imports a module named in a file) and be a real ``enum.Enum`` subclass; the
  member is looked up by value in the class's member table, so no code of the class runs. A value
  that is not a member loads as the plain value, with a warning.

Everything else stays refused, and :func:`refused_reference` names what the file referred to.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import enum
import io
import os
import pathlib
import pickletools
import re
import sys
import threading
import zipfile
from collections import OrderedDict
from collections.abc import Callable, Iterator
from typing import Any

import torch

from torchbolt.utilities.parsing import AttributeDict
from torchbolt.utilities.rank_zero import WarningCache

_Entry = tuple[Callable[..., Any], str]
_warning_cache = WarningCache()

# where an AttributeDict class has lived: torchbolt's, and Lightning's over the years
ATTRIBUTE_DICT_NAMES = (
    "torchbolt.utilities.parsing.AttributeDict",
    "lightning.fabric.utilities.data.AttributeDict",
    "lightning_fabric.utilities.data.AttributeDict",
    "lightning.pytorch.utilities.parsing.AttributeDict",
    "pytorch_lightning.utilities.parsing.AttributeDict",
)


# ---------------------------------------------------------------------- AttributeDict
_pending = threading.local()


class _AttributeDictFromPickle:
    """Loads a pickled ``AttributeDict`` (any of :data:`ATTRIBUTE_DICT_NAMES`) as a plain ``OrderedDict`` first.

    torch's weights-only unpickler fills only exact ``dict``/``OrderedDict``/``Counter`` objects with items,
    so the pickled object is built as an ``OrderedDict`` (its items set the usual way; the state some
    versions pickle besides is the same items again and is dropped) and remembered;
    :func:`restore_attribute_dicts` then turns it into an ``AttributeDict`` once the load finished.
    """

    def __new__(cls, *args: Any) -> Any:  # type: ignore[misc]
        built: OrderedDict[Any, Any] = OrderedDict(*args[:1])
        created = getattr(_pending, "created", None)
        if created is not None:
            created.append(built)
        return built


def restore_attribute_dicts(loaded: Any) -> Any:
    """``loaded`` with every object :class:`_AttributeDictFromPickle` built replaced by an ``AttributeDict``.

    Only containers (dicts, lists, tuples, sets) are searched; shared objects stay shared.
    """
    created = getattr(_pending, "created", None) or []
    if not created:
        return loaded
    targets = {id(obj) for obj in created}
    done: dict[int, Any] = {}

    def convert(obj: Any) -> Any:
        key = id(obj)
        if key in done:
            return done[key]
        if isinstance(obj, dict):
            result: Any = AttributeDict() if key in targets else obj
            done[key] = result
            items = [(k, convert(v)) for k, v in obj.items()]
            if result is obj:
                for k, v in items:
                    if v is not obj[k]:
                        obj[k] = v
            else:
                result.update(items)
            return result
        if isinstance(obj, list):
            done[key] = obj
            for i, v in enumerate(obj):
                obj[i] = convert(v)
            return obj
        if isinstance(obj, tuple) and not hasattr(obj, "_fields"):
            converted = tuple(convert(v) for v in obj)
            result = obj if all(a is b for a, b in zip(converted, obj)) else converted
            done[key] = result
            return result
        return obj

    return convert(loaded)


@contextlib.contextmanager
def collecting_attribute_dicts() -> Iterator[None]:
    """Track the ``AttributeDict`` objects one load builds (per thread), for :func:`restore_attribute_dicts`."""
    previous = getattr(_pending, "created", None)
    _pending.created = []
    try:
        yield
    finally:
        _pending.created = previous


# ---------------------------------------------------------------------- the allowlist
def _numpy_entries() -> list[_Entry]:
    try:
        import numpy as np
    except ImportError:
        return []
    reconstruct: Any = np.ndarray.__reduce__(np.zeros(1))[0]  # numpy's array rebuild function, wherever it lives
    scalar: Any = np.float64(0).__reduce__()[0]
    entries: list[_Entry] = [(np.ndarray, "numpy.ndarray"), (np.dtype, "numpy.dtype")]
    for module in ("numpy.core.multiarray", "numpy._core.multiarray"):  # NumPy 1 and NumPy 2 names
        entries += [(reconstruct, f"{module}._reconstruct"), (scalar, f"{module}.scalar")]
    # dtypes of plain data only: booleans, numbers, strings, bytes, void (structured), datetimes; not object
    for code in "?bBhHiIlLqQefdgFDGSUVMm":
        dtype_class = type(np.dtype(code))
        entries.append((dtype_class, f"{dtype_class.__module__}.{dtype_class.__qualname__}"))
    return entries


_plain_entries: list[_Entry] | None = None


def plain_data_entries() -> list[_Entry]:
    """The allowlist: ``(object, name in the pickle)`` pairs for the types this module's docstring lists."""
    global _plain_entries
    if _plain_entries is None:
        posix = os.name != "nt"
        entries: list[_Entry] = []
        for module in ("pathlib", "pathlib._local"):  # Python 3.13 moved the classes to pathlib._local
            entries += [
                (pathlib.PosixPath if posix else pathlib.PurePosixPath, f"{module}.PosixPath"),
                (pathlib.PureWindowsPath if posix else pathlib.WindowsPath, f"{module}.WindowsPath"),
                (pathlib.PurePosixPath, f"{module}.PurePosixPath"),
                (pathlib.PureWindowsPath, f"{module}.PureWindowsPath"),
                (pathlib.Path, f"{module}.Path"),
            ]
        entries.append((argparse.Namespace, "argparse.Namespace"))
        for cls in (datetime.date, datetime.time, datetime.datetime, datetime.timedelta, datetime.timezone):
            entries.append((cls, f"datetime.{cls.__name__}"))
        entries += [(_AttributeDictFromPickle, name) for name in ATTRIBUTE_DICT_NAMES]
        entries += _numpy_entries()
        _plain_entries = entries
    return _plain_entries


_lock = threading.Lock()
_in_use: dict[_Entry, int] = {}  # entries this module added to torch's allowlist -> loads using them


def _entry_name(entry: Any) -> str:
    if isinstance(entry, tuple):
        return str(entry[1])
    return f"{getattr(entry, '__module__', '')}.{getattr(entry, '__qualname__', '')}"


@contextlib.contextmanager
def allowed(entries: list[_Entry]) -> Iterator[None]:
    """Allow ``entries`` in weights-only loads inside the block, and only there.

    A name the caller already allowlisted with ``torch.serialization.add_safe_globals`` keeps the
    caller's meaning (it is not added again, and is never removed). Safe under concurrent loads.
    """
    serialization = torch.serialization
    if not hasattr(serialization, "get_safe_globals"):  # torch < 2.5 cannot map names: nothing extra loads
        yield
        return
    with _lock:
        user_names = {_entry_name(e) for e in serialization.get_safe_globals() if e not in _in_use}
        mine = [e for e in entries if e[1] not in user_names]
        fresh: list[Any] = [e for e in mine if _in_use.get(e, 0) == 0]
        for entry in mine:
            _in_use[entry] = _in_use.get(entry, 0) + 1
        if fresh:
            serialization.add_safe_globals(fresh)
    try:
        yield
    finally:
        with _lock:
            done = []
            for entry in mine:
                _in_use[entry] -= 1
                if _in_use[entry] == 0:
                    del _in_use[entry]
                    done.append(entry)
            if done:
                # torch offers no single-entry removal: rebuild its set without what this module added
                remaining = [e for e in serialization.get_safe_globals() if e not in done]
                serialization.clear_safe_globals()
                serialization.add_safe_globals(remaining)


# ---------------------------------------------------------------------- enums
def _resolve_imported(qualified: str) -> Any:
    """The object called ``qualified`` in an already-imported module, or ``None``; imports nothing, runs nothing.

    Attributes are read from ``__dict__``s, so no module ``__getattr__`` (lazy import) is triggered.
    """
    parts = qualified.split(".")
    for split in range(len(parts) - 1, 0, -1):
        module = sys.modules.get(".".join(parts[:split]))
        if module is None:
            continue
        obj: Any = module
        for attribute in parts[split:]:
            namespace = getattr(obj, "__dict__", None)
            if not isinstance(namespace, (dict, type(type.__dict__))) or attribute not in namespace:
                return None
            obj = namespace[attribute]
        return obj
    return None


def _enum_decoder(cls: type[enum.Enum], name: str) -> Callable[..., Any]:
    members = dict(cls.__dict__.get("_member_map_", {}))
    by_value = cls.__dict__.get("_value2member_map_", {})

    def decode(value: Any, *_: Any) -> Any:
        try:
            member = by_value.get(value)
        except TypeError:  # an unhashable value: compare with each member's
            member = None
        if member is None:
            member = next((m for m in members.values() if vars(m).get("_value_") == value), None)
        if member is None:
            _warning_cache.warn(
                f"The checkpoint holds {name}({value!r}), but {value!r} is not a value of {name} now: it loads as"
                " the plain value."
            )
            return value
        return member

    decode.__qualname__ = decode.__name__ = f"decode_{cls.__qualname__}"
    return decode


_enum_decoders: dict[tuple[type, str], _Entry] = {}


def enum_entries(names: list[str]) -> tuple[list[_Entry], list[str]]:
    """Allowlist entries for the names in ``names`` that are enums, and the names that are not.

    The rule: ``name`` must be an ``enum.Enum`` subclass (with the standard metaclass) in a module that
    is already imported. Its entry is a decoder that looks the member up by value; the class itself
    is never called, so neither a custom ``__new__`` nor ``_missing_`` runs.
    """
    entries: list[_Entry] = []
    refused: list[str] = []
    for name in names:
        obj = _resolve_imported(name)
        if isinstance(obj, type) and issubclass(obj, enum.Enum) and type(obj) is type(enum.Enum):
            key = (obj, name)
            if key not in _enum_decoders:
                _enum_decoders[key] = (_enum_decoder(obj, name), name)
            entries.append(_enum_decoders[key])
        else:
            refused.append(name)
    return entries, refused


# ---------------------------------------------------------------------- what a refused file refers to
_STRING_OPS = frozenset({"SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8", "UNICODE", "STRING", "BINSTRING",
                         "SHORT_BINSTRING"})


def _pickle_globals(stream: io.BytesIO) -> list[str]:
    """The classes and functions one pickle names (GLOBAL and STACK_GLOBAL), read statically."""
    found: list[str] = []
    strings: list[str] = []
    memo: dict[int, str] = {}
    memo_size = 0  # MEMOIZE stores at the next index, whatever the value
    last: Any = None
    arg: Any
    for opcode, arg, _ in pickletools.genops(stream):
        name = opcode.name
        if name in _STRING_OPS:
            last = arg.decode("latin-1") if isinstance(arg, bytes) else arg
            strings.append(last)
            continue
        if name == "MEMOIZE":
            if isinstance(last, str):
                memo[memo_size] = last
            memo_size += 1
        elif name in ("BINPUT", "LONG_BINPUT", "PUT") and isinstance(last, str):
            memo[int(arg)] = last
        elif name in ("BINGET", "LONG_BINGET", "GET") and int(arg) in memo:
            last = memo[int(arg)]
            strings.append(last)
            continue
        elif name == "GLOBAL":
            found.append(str(arg).replace(" ", "."))
        elif name == "STACK_GLOBAL" and len(strings) >= 2:
            found.append(f"{strings[-2]}.{strings[-1]}")
        if name not in ("MEMOIZE", "BINPUT", "LONG_BINPUT", "PUT", "FRAME"):
            last = None
    return found


def referenced_globals(data: bytes) -> list[str]:
    """Every class or function the pickles in checkpoint bytes ``data`` name, in order, without duplicates.

    Reads a zip-format file's ``data.pkl``, or the pickles at the start of a legacy-format file or of a
    plain pickle. Nothing is imported or called.
    """
    names: list[str] = []
    streams: list[io.BytesIO] = []
    if data[:4] == b"PK\x03\x04":
        try:
            with zipfile.ZipFile(io.BytesIO(data)) as archive:
                pkl = next(n for n in archive.namelist() if n.endswith("data.pkl"))
                streams.append(io.BytesIO(archive.read(pkl)))
        except Exception:
            return []
    else:
        streams.append(io.BytesIO(data))
    for stream in streams:
        while stream.tell() < len(stream.getbuffer()):
            try:
                names += _pickle_globals(stream)
            except Exception:  # past the pickles (a legacy file's raw storage bytes) or damaged
                break
    return list(dict.fromkeys(names))


def _allowed_names() -> set[str]:
    names = {_entry_name(e) for e in plain_data_entries()}
    names |= {_entry_name(e) for e in getattr(torch.serialization, "get_safe_globals", list)()}
    try:  # torch's built-in allowlist (tensors, storages, dtypes, OrderedDict...)
        from torch._weights_only_unpickler import _get_allowed_globals

        names |= set(_get_allowed_globals())
    except Exception:
        names |= {"collections.OrderedDict", "collections.Counter", "builtins.set", "builtins.frozenset"}
    return names


def unsafe_references(data: bytes) -> list[str]:
    """The names in ``data``'s pickles that neither torch, the caller, nor :func:`plain_data_entries` allow."""
    allowed_names = _allowed_names()
    return [n for n in referenced_globals(data) if n not in allowed_names]


def refused_reference(message: str, data: bytes) -> str | None:
    """What a weights-only load refused, named from the file (statically) or from torch's message; ``None`` if unknown."""
    for pattern in (r"GLOBAL (\S+) was not an allowed global", r"Unsupported global: GLOBAL (\S+)",
                    r"GLOBAL ([\w.]+)", r"but got <class '([\w.]+)'>", r"unrecognized function (<[^>]+>|\S+)"):
        match = re.search(pattern, message)
        if match:
            return match.group(1)
    refs = unsafe_references(data)
    return refs[0] if refs else None
