"""What leaves the Trainer for people to read: hyperparameters and metrics sent to the loggers, and
the results table ``validate``/``test`` print."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from torchbolt.trainer.logging import scalars
from torchbolt.trainer.states import TrainerFn
from torchbolt.utilities.exceptions import MisconfigurationException

if TYPE_CHECKING:
    from torchbolt.core.module import LightningModule
    from torchbolt.trainer.trainer import Trainer


def log_hyperparams(trainer: Trainer, model: LightningModule) -> None:
    """Send the datamodule's and the module's saved hyperparameters (merged; a clash of values is an
    error) and, when fitting, the model graph to every logger."""
    if not trainer.loggers or not trainer._enable_autolog_hparams:
        return
    hparams: dict[str, Any] = {}
    dm = trainer.datamodule
    if dm is not None and getattr(dm, "_log_hyperparams", False) and dm.hparams_initial:
        hparams.update(dm.hparams_initial)
    if getattr(model, "_log_hyperparams", False) and model.hparams_initial:
        module_hp = model.hparams_initial
        clash = [k for k in module_hp if k in hparams and _differs(hparams[k], module_hp[k])]
        if clash:
            raise MisconfigurationException(
                f"Error while merging hparams: the keys {clash} are present in both the LightningModule's and"
                " LightningDataModule's hparams but have different values."
            )
        hparams.update(module_hp)
    for logger in trainer.loggers:
        if hparams:
            logger.log_hyperparams(hparams)
        if trainer.state.fn == TrainerFn.FITTING:
            logger.log_graph(model)  # each logger decides (TensorBoard: only with `log_graph=True`)
        logger.save()


def log_to_loggers(trainer: Trainer, metrics: dict[str, Any], step: int | None = None,
                   add_epoch: bool = True) -> None:
    """Send ``metrics`` to every logger (converting to numbers: a host sync) at ``step``.

    ``step`` defaults to the number of optimizer-stepping batches, the x-axis loggers share. With
    ``add_epoch`` (the Trainer's own x-axis, as for training metrics and evaluation epoch metrics),
    a value the user logged as ``"step"`` replaces that x-axis; otherwise ``"epoch"`` is added.
    """
    if not trainer.loggers or not metrics:
        return
    values = scalars(metrics)
    if add_epoch:
        user_step = values.pop("step", None)
        if user_step is not None:
            step = int(user_step)
        else:
            values.setdefault("epoch", trainer.current_epoch)
    if step is None:
        step = trainer._progress.batches_that_stepped
    for logger in trainer.loggers:
        logger.log_metrics(values, step=step)
        logger.save()


def _differs(a: Any, b: Any) -> bool:
    try:
        return bool(a != b)
    except Exception:
        return a is not b


def print_results(results: list[dict[str, float]], stage: str) -> None:
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
