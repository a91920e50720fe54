"""String enums whose members compare equal to their value in any letter case."""

from __future__ import annotations

from enum import Enum
from typing import Any, Literal, TypeVar

_E = TypeVar("_E", bound="LightningEnum")


class LightningEnum(str, Enum):
    """A ``str`` enum that equals its value regardless of case: ``GradClipAlgorithmType.NORM == "Norm"``.

    Members hash like their lower-case value, so a member and its spelling find the same dict entry.
    """

    @classmethod
    def from_str(cls: type[_E], value: str, source: Literal["key", "value", "any"] = "key") -> _E:
        """The member whose name (``source="key"``), value (``"value"``) or either (``"any"``) is ``value``.

        Case is ignored. Raises ``ValueError`` listing the accepted spellings when nothing matches.
        """
        if source not in ("key", "value", "any"):
            raise ValueError(f"`source` must be 'key', 'value' or 'any', got {source!r}")
        wanted = value.lower()
        for member in cls:
            if source in ("key", "any") and member.name.lower() == wanted:
                return member
            if source in ("value", "any") and str(member.value).lower() == wanted:
                return member
        accepted = [m.name if source == "key" else m.value for m in cls]
        raise ValueError(f"{value!r} is not a {cls.__name__}; expected one of {accepted}")

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Enum):
            other = other.value
        return isinstance(other, str) and str(self.value).lower() == other.lower()

    def __ne__(self, other: object) -> bool:
        return not self.__eq__(other)

    def __hash__(self) -> int:
        return hash(str(self.value).lower())

    def __str__(self) -> str:
        return str(self.value)

    def __format__(self, spec: Any) -> str:
        return format(str(self.value), spec)


class GradClipAlgorithmType(LightningEnum):
    """How ``gradient_clip_val`` is applied: ``"value"`` clamps each element, ``"norm"`` rescales the total norm."""

    VALUE = "value"
    NORM = "norm"


__all__ = ["GradClipAlgorithmType", "LightningEnum"]
