"""The default progress bar, built on tqdm."""

from __future__ import annotations

import math
import sys
from typing import TYPE_CHECKING, Any

from tqdm import tqdm as _tqdm

from torchbolt.callbacks.progress.progress_bar import ProgressBar
from torchbolt.utilities.exceptions import MisconfigurationException

if TYPE_CHECKING:
    from torchbolt.core.module import LightningModule
    from torchbolt.trainer.trainer import Trainer

_PAD_SIZE = 5


class Tqdm(_tqdm):
    """tqdm with a fixed-width numeric format so the bar does not jump as values change."""

    @staticmethod
    def format_num(n: int | float | str) -> str:
        should_be_padded = isinstance(n, (float, str))
        if not isinstance(n, str):
            n = _tqdm.format_num(n)
            assert isinstance(n, str)
        if should_be_padded and "e" not in n:
            if "." not in n and len(n) < _PAD_SIZE:
                try:
                    _ = float(n)
                except ValueError:
                    return n
                n += "."
            n += "0" * (_PAD_SIZE - len(n))
        return n


def convert_inf(x: int | float | None) -> int | float | None:
    """tqdm wants ``None`` for an unknown total."""
    if x is None or math.isinf(x) or math.isnan(x):
        return None
    return x


class TQDMProgressBar(ProgressBar):
    """Training, validation, test and predict bars with the ``prog_bar`` metrics and the loss.

    Args:
        refresh_rate: refresh every this many batches (0 disables the bar). Each refresh converts
            the shown metrics to numbers, the bar's only host synchronization.
        process_position: the line of the bar, for several concurrent trainings.
        leave: keep the finished epoch bars on screen.
    """

    BAR_FORMAT = "{l_bar}{bar}| {n_fmt}/{total_fmt} [{elapsed}<{remaining}, {rate_noinv_fmt}{postfix}]"

    def __init__(self, refresh_rate: int = 1, process_position: int = 0, leave: bool = False) -> None:
        super().__init__()
        if not isinstance(refresh_rate, int) or isinstance(refresh_rate, bool) or refresh_rate < 0:
            raise MisconfigurationException(
                f"`TQDMProgressBar(refresh_rate={refresh_rate!r})`: pass a non-negative int (0 disables the bar)."
            )
        self._refresh_rate = refresh_rate
        self._process_position = process_position
        self._enabled = True
        self._leave = leave
        self._train_progress_bar: Tqdm | None = None
        self._val_progress_bar: Tqdm | None = None
        self._test_progress_bar: Tqdm | None = None
        self._predict_progress_bar: Tqdm | None = None
        self._last_loss: Any = None

    def __getstate__(self) -> dict:
        # the tqdm objects cannot be pickled (ddp_spawn)
        return {k: v if not isinstance(v, _tqdm) else None for k, v in vars(self).items()}

    @property
    def refresh_rate(self) -> int:
        return self._refresh_rate

    @property
    def process_position(self) -> int:
        return self._process_position

    @property
    def is_enabled(self) -> bool:
        return self._enabled and self.refresh_rate > 0

    def disable(self) -> None:
        self._enabled = False

    def enable(self) -> None:
        self._enabled = True

    @property
    def train_progress_bar(self) -> Tqdm:
        if self._train_progress_bar is None:
            raise TypeError(f"The `{type(self).__name__}._train_progress_bar` reference has not been set yet.")
        return self._train_progress_bar

    def _bar(self, desc: str, position: int, leave: bool) -> Tqdm:
        return Tqdm(desc=desc, position=2 * self.process_position + position, disable=self.is_disabled,
                    leave=leave, dynamic_ncols=True, file=sys.stdout, smoothing=0, bar_format=self.BAR_FORMAT)

    def init_sanity_tqdm(self) -> Tqdm:
        return self._bar(self.sanity_check_description, 0, False)

    def init_train_tqdm(self) -> Tqdm:
        return self._bar(self.train_description, 0, True)

    def init_validation_tqdm(self) -> Tqdm:
        # the validation bar sits below the training bar while fitting
        has_main_bar = self.trainer.state.fn == "fit"
        return self._bar(self.validation_description, int(has_main_bar), not has_main_bar)

    def init_test_tqdm(self) -> Tqdm:
        return self._bar(self.test_description, 0, True)

    def init_predict_tqdm(self) -> Tqdm:
        return self._bar(self.predict_description, 0, True)

    def _should_update(self, current: int, total: int | float) -> bool:
        return self.is_enabled and (current % self.refresh_rate == 0 or current == total)

    def _postfix(self, trainer: Trainer, pl_module: LightningModule) -> dict[str, Any]:
        metrics = self.get_metrics(trainer, pl_module)
        if self._last_loss is not None and "loss" not in metrics:
            # a host sync, but only at a refresh
            metrics = {"loss": float(self._last_loss), **metrics}
        return metrics

    # -- sanity check
    def on_sanity_check_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._val_progress_bar = self.init_sanity_tqdm()
        self._train_progress_bar = Tqdm(disable=True)  # a placeholder so the line is kept

    def on_sanity_check_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self._train_progress_bar is not None:
            self._train_progress_bar.close()
        if self._val_progress_bar is not None:
            self._val_progress_bar.close()
        self._train_progress_bar = None
        self._val_progress_bar = None

    # -- training
    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._train_progress_bar = self.init_train_tqdm()

    def on_train_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        bar = self.train_progress_bar
        bar.reset(convert_inf(self.total_train_batches))
        bar.initial = 0
        bar.set_description(f"Epoch {trainer.current_epoch}")
        self._last_loss = None

    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if isinstance(outputs, dict) and "loss" in outputs:
            self._last_loss = outputs["loss"] * trainer.accumulate_grad_batches
        n = batch_idx + 1
        if self._should_update(n, self.train_progress_bar.total or math.inf):
            bar = self.train_progress_bar
            bar.n = n
            bar.set_postfix(self._postfix(trainer, pl_module), refresh=False)
            bar.refresh()

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self._train_progress_bar is not None and not self.train_progress_bar.disable:
            self.train_progress_bar.set_postfix(self._postfix(trainer, pl_module))

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self._train_progress_bar is not None:
            self._train_progress_bar.close()

    # -- validation
    def on_validation_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not trainer.sanity_checking:
            self._val_progress_bar = self.init_validation_tqdm()

    def on_validation_batch_start(
        self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        if batch_idx == 0 and self._val_progress_bar is not None:
            self._current_eval_dataloader_idx = dataloader_idx
            bar = self._val_progress_bar
            bar.reset(convert_inf(self.total_val_batches_current_dataloader))
            bar.initial = 0
            desc = self.sanity_check_description if trainer.sanity_checking else self.validation_description
            bar.set_description(f"{desc} DataLoader {dataloader_idx}" if self._multiple_val(trainer) else desc)

    def _multiple_val(self, trainer: Trainer) -> bool:
        totals = trainer.num_sanity_val_batches if trainer.sanity_checking else trainer.num_val_batches
        return len(totals) > 1

    def on_validation_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        bar = self._val_progress_bar
        n = batch_idx + 1
        if bar is not None and self._should_update(n, bar.total or math.inf):
            bar.n = n
            bar.refresh()

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self._val_progress_bar is not None and not trainer.sanity_checking:
            self._val_progress_bar.close()
            self._val_progress_bar = None
        self._current_eval_dataloader_idx = None
        if self._train_progress_bar is not None and trainer.state.fn == "fit" and not trainer.sanity_checking:
            self._train_progress_bar.set_postfix(self._postfix(trainer, pl_module))

    # -- test
    def on_test_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._test_progress_bar = self.init_test_tqdm()

    def on_test_batch_start(
        self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        if batch_idx == 0 and self._test_progress_bar is not None:
            self._current_eval_dataloader_idx = dataloader_idx
            self._test_progress_bar.reset(convert_inf(self.total_test_batches_current_dataloader))
            self._test_progress_bar.initial = 0
            if len(trainer.num_test_batches) > 1:
                self._test_progress_bar.set_description(f"{self.test_description} DataLoader {dataloader_idx}")

    def on_test_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        bar = self._test_progress_bar
        n = batch_idx + 1
        if bar is not None and self._should_update(n, bar.total or math.inf):
            bar.n = n
            bar.refresh()

    def on_test_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self._test_progress_bar is not None:
            self._test_progress_bar.close()
        self._current_eval_dataloader_idx = None

    # -- predict
    def on_predict_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._predict_progress_bar = self.init_predict_tqdm()

    def on_predict_batch_start(
        self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        if batch_idx == 0 and self._predict_progress_bar is not None:
            self._current_eval_dataloader_idx = dataloader_idx
            self._predict_progress_bar.reset(convert_inf(self.total_predict_batches_current_dataloader))
            self._predict_progress_bar.initial = 0

    def on_predict_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        bar = self._predict_progress_bar
        n = batch_idx + 1
        if bar is not None and self._should_update(n, bar.total or math.inf):
            bar.n = n
            bar.refresh()

    def on_predict_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self._predict_progress_bar is not None:
            self._predict_progress_bar.close()
        self._current_eval_dataloader_idx = None

    def print(self, *args: Any, sep: str = " ", **kwargs: Any) -> None:
        active = (self._train_progress_bar or self._val_progress_bar or self._test_progress_bar
                  or self._predict_progress_bar)
        if active is not None and not active.disable:
            active.write(sep.join(map(str, args)), **kwargs)
        else:
            print(*args, sep=sep, **kwargs)
