"""Launchers: how the processes of a multi-process run are started."""

from torchbolt.strategies.launchers.launcher import Launcher
from torchbolt.strategies.launchers.multiprocessing import MultiProcessingLauncher
from torchbolt.strategies.launchers.subprocess_script import SubprocessScriptLauncher

# Lightning's private spellings of the same classes, for code written against them
_MultiProcessingLauncher = MultiProcessingLauncher
_SubprocessScriptLauncher = SubprocessScriptLauncher

__all__ = ["Launcher", "MultiProcessingLauncher", "SubprocessScriptLauncher"]
