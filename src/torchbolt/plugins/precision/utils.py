"""Small pieces the precision plug-ins share: casting floating-point tensors, a default-dtype context."""

from __future__ import annotations

from types import TracebackType
from typing import Any

import torch
from torch import Tensor

from torchbolt.utilities.apply_func import apply_to_collection


def _convert_fp_tensor(tensor: Tensor, dst_type: torch.dtype) -> Tensor:
    """``tensor`` cast to ``dst_type`` when it is floating point; integer tensors (labels, token ids) stay."""
    return tensor.to(dst_type) if torch.is_floating_point(tensor) else tensor


def convert_floating_point(data: Any, dst_type: torch.dtype) -> Any:
    """Every floating-point tensor in the collection ``data`` cast to ``dst_type``."""
    return apply_to_collection(data, Tensor, _convert_fp_tensor, dst_type=dst_type)


class _DtypeContextManager:
    """Within the block, ``torch.get_default_dtype()`` is ``dtype`` (new float tensors are created in it).

    A plain class rather than ``@contextmanager``: it is entered around every step by the true-half
    and double precisions, and a generator-based context costs several times more per use.
    """

    __slots__ = ("_dtype", "_previous")

    def __init__(self, dtype: torch.dtype) -> None:
        self._dtype = dtype
        self._previous = dtype

    def __enter__(self) -> None:
        self._previous = torch.get_default_dtype()
        torch.set_default_dtype(self._dtype)

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        torch.set_default_dtype(self._previous)
