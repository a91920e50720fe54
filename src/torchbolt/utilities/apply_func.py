"""Apply a function to every element of a nested collection, and move batches between devices."""

from __future__ import annotations

import dataclasses
from collections import OrderedDict, defaultdict
from collections.abc import Callable, Mapping, Sequence
from copy import copy
from functools import partial
from typing import Any

import torch
from torch import Tensor


def _is_namedtuple(obj: object) -> bool:
    return isinstance(obj, tuple) and hasattr(obj, "_asdict") and hasattr(obj, "_fields")


def _is_dataclass_instance(obj: object) -> bool:
    return dataclasses.is_dataclass(obj) and not isinstance(obj, type)


def apply_to_collection(
    data: Any,
    dtype: type | Any | tuple[type | Any, ...],
    function: Callable,
    *args: Any,
    wrong_dtype: type | tuple[type, ...] | None = None,
    include_none: bool = True,
    allow_frozen: bool = False,
    **kwargs: Any,
) -> Any:
    """Call ``function(element, *args, **kwargs)`` on every element of ``data`` of type ``dtype``.

    Recurses through mappings, sequences, namedtuples and dataclasses and rebuilds them with the
    same types. Elements of other types are returned unchanged.

    Args:
        data: the collection.
        dtype: the element type(s) ``function`` applies to.
        function: the function.
        wrong_dtype: element type(s) never passed to ``function`` even if they match ``dtype``.
        include_none: keep elements for which ``function`` returned ``None``.
        allow_frozen: allow frozen dataclasses (their fields are set through ``object.__setattr__``).

    Example::

        >>> apply_to_collection({"a": torch.ones(1), "b": [2]}, torch.Tensor, lambda t: t * 3)
        {'a': tensor([3.]), 'b': [2]}
    """
    if isinstance(data, dtype) and (wrong_dtype is None or not isinstance(data, wrong_dtype)):
        return function(data, *args, **kwargs)
    # fast paths for the common batch shapes
    if isinstance(data, list) and type(data) is list:
        out_list = [
            apply_to_collection(d, dtype, function, *args, wrong_dtype=wrong_dtype, include_none=include_none,
                                allow_frozen=allow_frozen, **kwargs)
            for d in data
        ]
        return out_list if include_none else [x for x in out_list if x is not None]
    if isinstance(data, tuple) and type(data) is tuple:
        out_tuple = [
            apply_to_collection(d, dtype, function, *args, wrong_dtype=wrong_dtype, include_none=include_none,
                                allow_frozen=allow_frozen, **kwargs)
            for d in data
        ]
        return tuple(out_tuple if include_none else [x for x in out_tuple if x is not None])
    if isinstance(data, Mapping):
        items = []
        for k, v in data.items():
            v = apply_to_collection(v, dtype, function, *args, wrong_dtype=wrong_dtype, include_none=include_none,
                                    allow_frozen=allow_frozen, **kwargs)
            if include_none or v is not None:
                items.append((k, v))
        if isinstance(data, defaultdict):
            return type(data)(data.default_factory, OrderedDict(items))
        return type(data)(items)  # type: ignore[call-arg]
    # rarer containers, kept out of line so the common cases above stay a single call deep
    if _is_namedtuple(data) or (isinstance(data, Sequence) and not isinstance(data, (str, bytes))):
        return _apply_to_sequence(data, dtype, function, args, wrong_dtype, include_none, allow_frozen, kwargs)
    if _is_dataclass_instance(data):
        return _apply_to_dataclass(data, dtype, function, args, wrong_dtype, include_none, allow_frozen, kwargs)
    return data


def _apply_to_sequence(
    data: Sequence,
    dtype: type | Any | tuple[type | Any, ...],
    function: Callable,
    args: tuple[Any, ...],
    wrong_dtype: type | tuple[type, ...] | None,
    include_none: bool,
    allow_frozen: bool,
    kwargs: dict[str, Any],
) -> Any:
    """``apply_to_collection`` for a namedtuple or a sequence other than a plain list/tuple/str/bytes.

    The result has ``data``'s type: a namedtuple is rebuilt from positional fields, any other
    sequence from a list of the results.
    """
    out = []
    for d in data:
        v = apply_to_collection(d, dtype, function, *args, wrong_dtype=wrong_dtype, include_none=include_none,
                                allow_frozen=allow_frozen, **kwargs)
        if include_none or v is not None:
            out.append(v)
    return type(data)(*out) if _is_namedtuple(data) else type(data)(out)  # type: ignore[call-arg]


def _apply_to_dataclass(
    data: Any,
    dtype: type | Any | tuple[type | Any, ...],
    function: Callable,
    args: tuple[Any, ...],
    wrong_dtype: type | tuple[type, ...] | None,
    include_none: bool,
    allow_frozen: bool,
    kwargs: dict[str, Any],
) -> Any:
    """``apply_to_collection`` for a dataclass instance: a shallow copy with its ``init`` fields replaced.

    A field whose result is ``None`` keeps its old value when ``include_none`` is False.

    Raises:
        ValueError: for a frozen dataclass unless ``allow_frozen`` is True.
    """
    fields = {f.name: getattr(data, f.name) for f in dataclasses.fields(data) if f.init}
    result = copy(data)
    for name, value in fields.items():
        v = apply_to_collection(value, dtype, function, *args, wrong_dtype=wrong_dtype,
                                include_none=include_none, allow_frozen=allow_frozen, **kwargs)
        if not include_none and v is None:
            v = value
        try:
            setattr(result, name, v)
        except dataclasses.FrozenInstanceError as e:
            if not allow_frozen:
                raise ValueError(
                    "A frozen dataclass was passed to `apply_to_collection` but this is not allowed."
                ) from e
            object.__setattr__(result, name, v)
    return result


def _has_to(obj: Any) -> bool:
    return hasattr(obj, "to") and callable(obj.to)


def move_data_to_device(batch: Any, device: torch.device | str | int) -> Any:
    """Move every tensor (and every object with a ``.to(device)`` method) in ``batch`` to ``device``.

    CUDA copies from CPU are issued with ``non_blocking=True``: when the source is in pinned memory
    the copy overlaps with compute; otherwise PyTorch silently performs a normal copy.
    """
    if isinstance(device, str):
        device = torch.device(device)
    elif isinstance(device, int):
        device = torch.device("cuda", device)

    # CPU and MPS copies are synchronous whatever the flag says; only ask for overlap where it exists
    non_blocking = device.type not in ("cpu", "mps")

    def batch_to(data: Any) -> Any:
        if isinstance(data, Tensor):
            return data.to(device, non_blocking=non_blocking)
        out = data.to(device)
        return data if out is None else out

    # the most common batch shapes, without recursion; a tensor already on `device` is returned as is,
    # exactly what `.to(device)` would return, without the call
    if isinstance(batch, Tensor):
        return batch if batch.device == device else batch.to(device, non_blocking=non_blocking)
    batch_type = type(batch)
    if batch_type is tuple or batch_type is list:
        # `(inputs, targets)`: tensors are moved in place of the generic recursion (same result)
        out = [
            (item if item.device == device else item.to(device, non_blocking=non_blocking))
            if isinstance(item, Tensor) else apply_to_collection(item, dtype=_TransferableType, function=batch_to)
            for item in batch
        ]
        return tuple(out) if batch_type is tuple else out
    return apply_to_collection(batch, dtype=_TransferableType, function=batch_to)


def batch_mover(device: torch.device) -> Callable[[Any], Any]:
    """``move_data_to_device(batch, device)`` for one fixed ``device``: the loops build one when they start on a loader.

    A ``(inputs, targets)`` tuple (or a tensor) whose tensors are already on a CPU ``device`` is returned
    as is, the same object, with one attribute read per tensor (a tuple cannot be changed, so sharing it
    is safe; a list is copied, as ``move_data_to_device`` does). Everything else goes through
    :func:`move_data_to_device`, with the same result.
    """
    # partials of module-level functions, not closures: a Trainer holding one can still be pickled
    if device.type != "cpu":
        return partial(move_data_to_device, device=device)
    return partial(_to_cpu, device)


def _to_cpu(device: torch.device, batch: Any) -> Any:
    batch_type = type(batch)
    if batch_type is tuple:
        for item in batch:
            if not (isinstance(item, Tensor) and item.is_cpu):
                return move_data_to_device(batch, device)
        return batch
    if batch_type is Tensor and batch.is_cpu:
        return batch
    return move_data_to_device(batch, device)


class _TransferableMeta(type):
    def __instancecheck__(cls, instance: object) -> bool:
        return isinstance(instance, Tensor) or (_has_to(instance) and not isinstance(instance, type))


class _TransferableType(metaclass=_TransferableMeta):
    """Matches tensors and any object with a callable ``.to`` (for ``isinstance`` checks)."""


def convert_tensors_to_scalars(data: Any) -> Any:
    """Replace every single-element tensor in ``data`` by its Python number (a host sync)."""

    def to_item(value: Tensor) -> int | float | bool:
        if value.numel() != 1:
            raise ValueError(
                f"The metric `{value}` does not contain a single element, thus it cannot be converted to a scalar."
            )
        return value.item()

    return apply_to_collection(data, Tensor, to_item)
