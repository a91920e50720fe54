"""Where a progress display is written, and the pieces both bars share: mode choice and plain-line text.

A redrawing bar (carriage returns) only makes sense on a terminal. Off a terminal (a SLURM log, a pipe,
a CI log) every redraw becomes one more line, so the default bar writes one plain line now and then
instead. ``TORCHBOLT_PROGRESS=bar|plain|auto`` or the bar's ``mode=`` argument overrides the detection.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from typing import Any, Literal, TextIO

from torchbolt.utilities.exceptions import MisconfigurationException

ENV_VAR = "TORCHBOLT_PROGRESS"
MODES = ("auto", "bar", "plain")
DisplayMode = Literal["bar", "plain"]

#: seconds between two redraws of a bar on a terminal when no ``refresh_rate`` is given
DEFAULT_REFRESH_INTERVAL = 0.2
#: seconds between two plain lines off a terminal (a line is also written at each epoch's end)
DEFAULT_PLAIN_INTERVAL = 30.0


def check_mode(mode: object, owner: str) -> str:
    """``mode`` lower-cased if it is one of :data:`MODES`; otherwise a clear error naming ``owner``."""
    if not isinstance(mode, str) or mode.strip().lower() not in MODES:
        raise MisconfigurationException(
            f"`{owner}(mode={mode!r})` is invalid: pass 'auto' (a bar on a terminal, plain lines elsewhere),"
            " 'bar' or 'plain'."
        )
    return mode.strip().lower()


def check_interval(value: object, argument: str, owner: str) -> float:
    """``value`` as a float if it is a finite number of seconds > 0; otherwise an error naming the argument."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise MisconfigurationException(
            f"`{owner}({argument}={value!r})` is invalid: pass a number of seconds > 0."
        )
    return float(value)


def check_refresh_rate(value: object, owner: str) -> int | None:
    """``None`` (redraw on a time budget) or an int >= 0 (redraw every that many batches, 0 disables)."""
    if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 0):
        raise MisconfigurationException(
            f"`{owner}(refresh_rate={value!r})`: pass a non-negative int (0 disables the bar), or leave it"
            " unset to redraw on a time budget."
        )
    return value


def env_mode() -> str | None:
    """The mode asked for by ``TORCHBOLT_PROGRESS`` (``None`` when unset or empty).

    Raises:
        MisconfigurationException: when the variable holds something other than auto, bar or plain.
    """
    raw = os.environ.get(ENV_VAR, "")
    value = raw.strip().lower()
    if not value:
        return None
    if value not in MODES:
        raise MisconfigurationException(
            f"The environment variable {ENV_VAR}={raw!r} is invalid: set it to 'bar' (redraw in place),"
            " 'plain' (one line now and then) or 'auto', or unset it."
        )
    return value


def is_interactive(stream: TextIO | Any) -> bool:
    """Whether carriage-return redraws display in place on ``stream``: a terminal or a Jupyter output."""
    # Jupyter/IPython kernels render "\r" in place although their streams are not terminals
    if type(stream).__module__.startswith("ipykernel"):
        return True
    isatty = getattr(stream, "isatty", None)
    try:
        return bool(isatty()) if callable(isatty) else False
    except (ValueError, OSError):  # a closed or detached stream
        return False


def resolve_mode(mode: str | None, stream: TextIO | Any) -> DisplayMode:
    """The display to use: an explicit ``mode`` argument (``"bar"``, ``"plain"``), else ``TORCHBOLT_PROGRESS``,
    else, for ``"auto"``, what ``stream`` is and, for ``None`` (a bar the user built without a mode), a bar."""
    chosen = mode if mode not in (None, "auto") else (env_mode() or mode)
    if chosen is None:
        return "bar"  # as in Lightning: a TQDMProgressBar the user chose draws a bar wherever it writes
    if chosen == "auto":
        return "bar" if is_interactive(stream) else "plain"
    return "bar" if chosen == "bar" else "plain"


def format_duration(seconds: float) -> str:
    """``H:MM:SS`` (hours unbounded)."""
    whole = max(int(seconds), 0)
    return f"{whole // 3600}:{whole % 3600 // 60:02d}:{whole % 60:02d}"


def format_value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def format_metrics(metrics: Mapping[str, Any]) -> str:
    """``key=value`` pairs separated by spaces, floats with 4 significant digits."""
    return " ".join(f"{key}={format_value(value)}" for key, value in metrics.items())


def count_text(done: int, total: int | float) -> str:
    """``"done/total"``, or ``"done"`` when the total is unknown (an iterable without length)."""
    return f"{done}/{int(total)}" if math.isfinite(total) else str(done)


def rate_text(batches: int, seconds: float) -> str:
    return f"{batches / seconds:.1f} it/s" if seconds > 0 and batches > 0 else "- it/s"
