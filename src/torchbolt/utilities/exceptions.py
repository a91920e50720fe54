"""Exceptions raised by torchbolt."""

from __future__ import annotations


class MisconfigurationException(Exception):
    """Raised when an argument, hook or return value is set up in a way torchbolt cannot run.

    The message always names the offending argument and how to fix it.
    """


class _LoaderHookNotImplemented(MisconfigurationException, NotImplementedError):
    """A ``*_dataloader`` hook that was not implemented was called.

    Both a :class:`MisconfigurationException` (what Lightning raises, and what its users catch) and a
    ``NotImplementedError`` (what an unimplemented method conventionally raises).
    """


class _MisconfiguredRun(MisconfigurationException, RuntimeError):
    """A configuration the Trainer cannot run, where Lightning raises ``RuntimeError`` (and torchbolt raised
    :class:`MisconfigurationException`): both ``except`` clauses catch it."""


class SIGTERMException(SystemExit):
    """Raised inside the fit loop at a step boundary after the process received SIGTERM."""


class _TunerExitException(Exception):
    """Raised by a tuner callback to end the ``fit`` it runs in once the search is done (not an error)."""


class CorruptCheckpointError(RuntimeError):
    """Raised when a checkpoint file is truncated, corrupt or not a checkpoint at all.

    The message names the file. A checkpoint written by torchbolt is never left half-written (writes
    are atomic), so this points at a file copied incompletely or written by something else.
    """
