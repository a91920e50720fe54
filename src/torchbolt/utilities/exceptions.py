"""Exceptions raised by torchbolt."""

from __future__ import annotations


class MisconfigurationException(Exception):
    """Raised when an argument, hook or return value is set up in a way torchbolt cannot run.

    The message always names the offending argument and how to fix it.
    """


class SIGTERMException(SystemExit):
    """Raised inside the fit loop at a step boundary after the process received SIGTERM."""
