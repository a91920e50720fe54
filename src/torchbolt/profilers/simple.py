"""``SimpleProfiler``: wall time per action, reported as a table of mean / count / total / percentage."""

from __future__ import annotations

import os
import time
from collections import defaultdict
from pathlib import Path

from torchbolt.profilers.profiler import Profiler


class SimpleProfiler(Profiler):
    """Record how long each action (hook, step phase, dataloader fetch) takes; report per-action statistics.

    Args:
        dirpath: directory of the report file (default: ``trainer.log_dir`` when ``filename`` is set).
        filename: write the report to ``<dirpath>/<stage>-<filename>.txt`` instead of printing it.
        extended: add the call count and the percentage of the run's wall time to the table.

    Raises:
        ValueError: when an action is started twice, or stopped without being started.

    Example::

        trainer = Trainer(profiler="simple")   # or SimpleProfiler(filename="perf")
        trainer.fit(model)                     # the table is printed at the end of fit
    """

    def __init__(self, dirpath: str | Path | None = None, filename: str | None = None, extended: bool = True) -> None:
        super().__init__(dirpath=dirpath, filename=filename)
        self.current_actions: dict[str, float] = {}
        self.recorded_durations: dict[str, list[float]] = defaultdict(list)
        self.extended = extended
        self.start_time = time.perf_counter()

    def start(self, action_name: str) -> None:
        if action_name in self.current_actions:
            raise ValueError(f"Attempted to start {action_name} which has already started.")
        self.current_actions[action_name] = time.perf_counter()

    def stop(self, action_name: str) -> None:
        end = time.perf_counter()
        started = self.current_actions.pop(action_name, None)
        if started is None:
            raise ValueError(f"Attempting to stop recording an action ({action_name}) which was never started.")
        self.recorded_durations[action_name].append(end - started)

    def summary(self) -> str:
        sep = os.linesep
        title = (f"{self._stage.upper()} " if self._stage is not None else "") + "Profiler Report" + sep
        if not self.recorded_durations:
            return title
        total_wall = time.perf_counter() - self.start_time
        rows = [(action, sum(d) / len(d), len(d), sum(d)) for action, d in self.recorded_durations.items()]
        width = max(len(action) for action in self.recorded_durations)
        header: tuple[str, ...]
        body: list[tuple[str, ...] | None]
        if self.extended:
            header = ("Action", "Mean duration (s)", "Num calls", "Total time (s)", "Percentage %")
            rows.sort(key=lambda r: r[3], reverse=True)
            body = [("Total", "-", f"{sum(r[2] for r in rows)}", f"{total_wall:.5}", "100 %"), None]
            body += [(a, f"{mean:.5}", f"{n}", f"{total:.5}", f"{100.0 * total / total_wall:.5}")
                     for a, mean, n, total in rows]
        else:
            header = ("Action", "Mean duration (s)", "Total time (s)")
            rows.sort(key=lambda r: r[1], reverse=True)
            body = [(a, f"{mean:.5}", f"{total:.5}") for a, mean, _, total in rows]

        def line(cells: tuple[str, ...]) -> str:
            return f"{sep}|  {cells[0]:<{width}s}\t|" + "".join(f"  {c:<15}\t|" for c in cells[1:])

        rule = sep + "-" * len(line(header).expandtabs())
        out = title + rule + line(header) + rule
        for row in body:
            out += rule if row is None else line(row)
        return out + rule + sep
