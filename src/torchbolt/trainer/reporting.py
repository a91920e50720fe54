"""What leaves the Trainer for people to read, besides metrics (``logging.MetricSink`` sends those):
hyperparameters sent to the loggers, and the results table ``validate``/``test`` print."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

import torch

from torchbolt.trainer.states import TrainerFn

if TYPE_CHECKING:
    from torchbolt.trainer.context import RunContext


def log_hyperparams(ctx: RunContext, enabled: bool) -> None:
    """Send the datamodule's and the module's saved hyperparameters (merged; a clash of values is an
    error) and, when fitting, the model graph to every logger (``enabled``: ``enable_autolog_hparams``).

    Raises:
        RuntimeError: when a key is in both hparams with values of another type, another tensor object,
            or unequal values.
    """
    if not ctx.loggers or not enabled:
        return
    model = ctx.module
    hparams: dict[str, Any] = {}
    dm = ctx.datamodule
    if dm is not None and getattr(dm, "_log_hyperparams", False) and dm.hparams_initial:
        hparams.update(dm.hparams_initial)
    if getattr(model, "_log_hyperparams", False) and model.hparams_initial:
        module_hp = model.hparams_initial
        clash = [k for k in module_hp if k in hparams and _differs(hparams[k], module_hp[k])]
        if clash:
            # a RuntimeError, as in Lightning, so code written for it catches the same type
            raise RuntimeError(
                f"Error while merging hparams: the keys {clash} are present in both the LightningModule's and"
                " LightningDataModule's hparams but have different values."
            )
        hparams.update(module_hp)
    for logger in ctx.loggers:
        if hparams:
            logger.log_hyperparams(hparams)
        if ctx.fn == TrainerFn.FITTING:
            logger.log_graph(model)  # each logger decides (TensorBoard: only with `log_graph=True`)
        logger.save()


def _differs(a: Any, b: Any) -> bool:
    """Values of one key in both hparams clash: another type, another tensor object, or unequal."""
    if type(a) is not type(b):
        return True
    if isinstance(a, torch.Tensor):
        return a is not b
    try:
        return bool(a != b)
    except Exception:
        return a is not b


def print_results(results: list[dict[str, float]], stage: Literal["val", "test"]) -> None:
    """The table ``trainer.test``/``validate`` print: one row per metric, one column per dataloader."""
    metrics = sorted({k for r in results for k in r})
    if not metrics:
        return
    title = "Test metric" if stage == "test" else "Validate metric"
    headers = [title] + [f"DataLoader {i}" for i in range(len(results))]
    rows = []
    for key in metrics:
        row = [key]
        for r in results:
            value = r.get(key)
            row.append("" if value is None else f"{value:.6g}" if isinstance(value, float) else str(value))
        rows.append(row)
    widths = [max(len(h), *(len(r[i]) for r in rows)) + 4 for i, h in enumerate(headers)]
    line = "─" * sum(widths)
    out = [line, "".join(h.center(w) for h, w in zip(headers, widths)), line]
    out += ["".join(c.center(w) for c, w in zip(r, widths)) for r in rows]
    out.append(line)
    print("\n".join(out))
