"""``AdvancedProfiler``: a ``cProfile`` profile per action, reported as ``pstats`` tables."""

from __future__ import annotations

import cProfile
import io
import os
import pstats
from collections import defaultdict
from pathlib import Path
from typing import Any

from torchbolt.profilers.profiler import Profiler
from torchbolt.utilities.cloud_io import get_filesystem


class AdvancedProfiler(Profiler):
    """Profile every function called during each action with ``cProfile`` (verbose; for finding hot spots).

    Args:
        dirpath: directory of the report (and ``.prof`` dumps); default ``trainer.log_dir`` with ``filename``.
        filename: write the report to ``<dirpath>/<stage>-<filename>.txt`` instead of printing it.
        line_count_restriction: functions listed per action: a count (int) or a fraction (float in [0, 1]).
        dump_stats: also write each action's raw profile to ``<dirpath>/<stage>-<filename>-<action>.prof``
            (open it with ``pstats`` or snakeviz).

    Raises:
        ValueError: when an action is stopped without being started.

    Example::

        trainer = Trainer(profiler=AdvancedProfiler(filename="perf", line_count_restriction=20))
    """

    def __init__(self, dirpath: str | os.PathLike | None = None, filename: str | None = None,
                 line_count_restriction: float = 1.0, dump_stats: bool = False) -> None:
        super().__init__(dirpath=Path(dirpath) if dirpath is not None else None, filename=filename)
        self.profiled_actions: dict[str, cProfile.Profile] = defaultdict(cProfile.Profile)
        self.line_count_restriction = line_count_restriction
        self.dump_stats = dump_stats
        self._active: list[str] = []

    def start(self, action_name: str) -> None:
        # cProfile allows one active profile: the outer action pauses while a nested one runs
        if self._active:
            self.profiled_actions[self._active[-1]].disable()
        self._active.append(action_name)
        self.profiled_actions[action_name].enable()

    def stop(self, action_name: str) -> None:
        profile = self.profiled_actions.get(action_name)
        if profile is None or action_name not in self._active:
            raise ValueError(f"Attempting to stop recording an action ({action_name}) which was never started.")
        profile.disable()
        self._active.remove(action_name)
        if self._active:
            self.profiled_actions[self._active[-1]].enable()

    def summary(self) -> str:
        stats = {}
        for action, profile in self.profiled_actions.items():
            if self.dump_stats:
                self._dump(action, profile)
            stream = io.StringIO()
            pstats.Stats(profile, stream=stream).strip_dirs().sort_stats("cumulative").print_stats(
                self.line_count_restriction)
            stats[action] = stream.getvalue()
        return self._stats_to_str(stats)

    def _dump(self, action: str, profile: cProfile.Profile) -> None:
        if not self.dirpath:
            raise ValueError("`AdvancedProfiler(dump_stats=True)` needs a `dirpath` (or a Trainer log_dir).")
        path = os.path.join(self.dirpath, self._prepare_filename(action_name=action, extension=".prof"))
        fs = get_filesystem(path)
        fs.makedirs(str(self.dirpath), exist_ok=True)
        # pstats writes only local files: marshal the stats ourselves so remote paths work too
        import marshal

        profile.create_stats()
        with fs.open(path, "wb") as f:
            f.write(marshal.dumps(profile.stats))  # type: ignore[attr-defined]

    def teardown(self, stage: str | None) -> None:
        super().teardown(stage=stage)
        self.profiled_actions.clear()
        self._active = []

    def __reduce__(self) -> tuple[Any, ...]:
        # cProfile.Profile objects cannot be pickled (spawned processes start empty profiles)
        return (self.__class__, (), {"dirpath": self.dirpath, "filename": self.filename,
                                     "line_count_restriction": self.line_count_restriction,
                                     "dump_stats": self.dump_stats})
