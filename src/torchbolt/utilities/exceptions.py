"""Exceptions raised by torchbolt."""

from __future__ import annotations


class MisconfigurationException(Exception):
    """Raised when an argument, hook or return value is set up in a way torchbolt cannot run.

    The message always names the offending argument and how to fix it.
    """


class SIGTERMException(SystemExit):
    """Raised inside the fit loop at a step boundary after the process received SIGTERM."""


class _TunerExitException(Exception):
    """Raised by a tuner callback to end the ``fit`` it runs in once the search is done (not an error)."""
