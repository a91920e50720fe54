"""Start test subprocesses with the default action for the signals tests send, whatever this run inherited.

A background job of a non-interactive shell (``make test &``, ``pytest ... &`` in a script) starts with
SIGINT and SIGQUIT ignored, and an ignored signal stays ignored across ``fork`` and ``exec``: a child Python
then installs no ``KeyboardInterrupt`` handler, and the SIGINT a test sends it does nothing (the test waits
for an exit that never comes). Likewise an inherited ignored SIGUSR1 looks like the user's own choice to
torchbolt, which then leaves it alone.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

# the signals tests send to the processes they start
RESET_SIGNALS = ("SIGINT", "SIGQUIT", "SIGTERM", "SIGUSR1")

# Runs in the new process before the command: resets the signals, then replaces itself with the command (same
# pid, so the test signals the command itself). A disposition of SIG_DFL survives exec. Not `preexec_fn`,
# which is unsafe in a multi-threaded parent such as a test run with torch loaded.
_RESET_AND_EXEC = (
    "import os, signal, sys\n"
    "for name in sys.argv[1].split(','):\n"
    "    signal.signal(getattr(signal, name), signal.SIG_DFL)\n"
    "os.execvp(sys.argv[2], sys.argv[2:])\n"
)


def with_default_signals(command: Sequence[str], signals: Sequence[str] = RESET_SIGNALS) -> list[str]:
    """``command``, started so that ``signals`` have their default action in it (pass to ``subprocess``)."""
    return [sys.executable, "-c", _RESET_AND_EXEC, ",".join(signals), *command]
