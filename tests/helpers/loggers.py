"""An in-memory logger that records exactly what the Trainer sends to loggers."""

from __future__ import annotations

from argparse import Namespace
from typing import Any

from torchbolt.loggers import Logger


class RecordingLogger(Logger):
    """Keeps every ``log_metrics`` call as ``(step, metrics)`` and every hyperparameter dict."""

    def __init__(self) -> None:
        super().__init__()
        self.metrics: list[tuple[int | None, dict[str, Any]]] = []
        self.hparams: list[dict[str, Any]] = []
        self.finalized: list[str] = []
        self.saves = 0

    @property
    def name(self) -> str:
        return "recording"

    @property
    def version(self) -> int:
        return 0

    def log_metrics(self, metrics: dict[str, Any], step: int | None = None) -> None:
        self.metrics.append((step, dict(metrics)))

    def log_hyperparams(self, params: dict[str, Any] | Namespace, *args: Any, **kwargs: Any) -> None:
        self.hparams.append(dict(vars(params) if isinstance(params, Namespace) else params))

    def save(self) -> None:
        self.saves += 1

    def finalize(self, status: str) -> None:
        self.finalized.append(status)

    def steps_of(self, key: str) -> list[int | None]:
        return [step for step, m in self.metrics if key in m]

    def values_of(self, key: str) -> list[Any]:
        return [m[key] for _, m in self.metrics if key in m]
