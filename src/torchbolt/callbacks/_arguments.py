"""Constructor-argument checks shared by the built-in callbacks.

Each check raises a ``MisconfigurationException`` that names the callback, the argument, the value
and what is accepted, so a typo fails when the callback is built rather than mid-fit.
"""

from __future__ import annotations

from typing import Any

from torchbolt.utilities.exceptions import MisconfigurationException


def _fail(owner: str, arg: str, value: Any, expected: str) -> MisconfigurationException:
    return MisconfigurationException(f"`{owner}({arg}={value!r})` is invalid: expected {expected}.")


def check_int(owner: str, arg: str, value: Any, minimum: int | None, allow_none: bool = False) -> None:
    """Raise unless ``value`` is an int >= ``minimum`` (any int for ``None``; or ``None`` when ``allow_none``).

    Raises:
        MisconfigurationException: naming ``owner``, ``arg`` and the accepted values.

    Example::

        >>> check_int("EarlyStopping", "patience", 3, minimum=0)
    """
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, int) or (minimum is not None and value < minimum):
        expected = "an int" if minimum is None else f"an int >= {minimum}"
        raise _fail(owner, arg, value, expected + (" or None" if allow_none else ""))


def check_number(owner: str, arg: str, value: Any, allow_none: bool = False) -> None:
    """Raise unless ``value`` is a real number (or ``None`` when ``allow_none``).

    Raises:
        MisconfigurationException: naming ``owner``, ``arg`` and the accepted values.
    """
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _fail(owner, arg, value, "a number" + (" or None" if allow_none else ""))


def check_str(owner: str, arg: str, value: Any, allow_none: bool = False) -> None:
    """Raise unless ``value`` is a string (or ``None`` when ``allow_none``), e.g. a metric name.

    Raises:
        MisconfigurationException: naming ``owner``, ``arg`` and the accepted values.
    """
    if value is None and allow_none:
        return
    if not isinstance(value, str):
        raise _fail(owner, arg, value, "a string (the name of a logged metric)" + (" or None" if allow_none else ""))


def check_flag(owner: str, arg: str, value: Any, allow_none: bool = False) -> None:
    """Raise unless ``value`` is ``True`` or ``False`` (or ``None`` when ``allow_none``).

    A string such as ``"False"`` is truthy and would silently mean the opposite, hence the check.

    Raises:
        MisconfigurationException: naming ``owner``, ``arg`` and the accepted values.
    """
    if value is None and allow_none:
        return
    if not isinstance(value, (bool, int)):
        raise _fail(owner, arg, value, "True or False" + (" or None" if allow_none else ""))
