"""``BatchSizeFinder``: the batch-size search as a callback (runs at the start of ``fit``, ``validate``,
``test`` or ``predict``)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from torchbolt.callbacks.callback import Callback
from torchbolt.utilities.exceptions import _TunerExitException
from torchbolt.utilities.parsing import lightning_setattr

if TYPE_CHECKING:
    from torchbolt.core.module import LightningModule
    from torchbolt.trainer.trainer import Trainer


class BatchSizeFinder(Callback):
    """Finds the largest batch size that fits in memory at the start of a run and runs with it.

    In ``fit`` each trial trains ``steps_per_trial`` steps; in ``validate``/``test``/``predict`` it
    evaluates (predicts) ``steps_per_trial`` batches, with the run's single loader of that stage, and
    the run then goes on with the loader re-created at the size found. Out-of-memory errors (``torch.OutOfMemoryError``,
    CUDA/cuDNN and CPU allocator errors) end a trial, any other error propagates. Afterwards the
    model, optimizer and Trainer are exactly as before; only the batch-size attribute (on the model,
    ``model.hparams``, the datamodule or its ``hparams``) holds the size found. The model's or
    datamodule's ``train_dataloader`` must build its loader from that attribute.

    Example::

        class LitModel(LightningModule):
            def __init__(self, batch_size=2):
                super().__init__()
                self.save_hyperparameters()
            def train_dataloader(self):
                return DataLoader(dataset, batch_size=self.hparams.batch_size)

        trainer = Trainer(callbacks=[BatchSizeFinder(mode="binsearch")])
        trainer.fit(LitModel())

    Args:
        mode: ``"power"`` (double until out of memory, keep the last size that worked) or ``"binsearch"``
            (then bisect between the last success and the first failure).
        steps_per_trial: training steps at each size.
        init_val: the first size tried.
        max_trials: the most trials (``"binsearch"``: successful trials); ``0`` keeps ``init_val``.
        batch_arg_name: the attribute holding the batch size.
        margin: ``"binsearch"`` only: lower the size found by this fraction (``0 <= margin < 1``), a buffer
            for memory use that varies between batches.
        max_val: the largest size tried.

    Raises:
        ValueError: for an unknown ``mode``.
        MisconfigurationException: (at ``setup``) under a distributed strategy; (at the search) for loaders
            passed directly, several evaluation loaders, or a missing batch-size attribute.
    """

    SUPPORTED_MODES = ("power", "binsearch")
    _is_tuner_callback = True

    def __init__(
        self,
        mode: str = "power",
        steps_per_trial: int = 3,
        init_val: int = 2,
        max_trials: int = 25,
        batch_arg_name: str = "batch_size",
        margin: float = 0.05,
        max_val: int = 8192,
    ) -> None:
        mode = mode.lower()
        if mode not in self.SUPPORTED_MODES:
            raise ValueError(f"`mode` should be either of {self.SUPPORTED_MODES}")
        self.optimal_batch_size: int | None = init_val
        self._mode = mode
        self._steps_per_trial = steps_per_trial
        self._init_val = init_val
        self._max_trials = max_trials
        self._batch_arg_name = batch_arg_name
        self._margin = margin
        self._max_val = max_val
        self._early_exit = False
        self._searched = False
        self._restored = False

    def scale_batch_size(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Run the search now and set the size found."""
        from torchbolt.tuner.batch_size_scaling import _scale_batch_size

        self.optimal_batch_size = _scale_batch_size(
            trainer, self._mode, self._steps_per_trial, self._init_val, self._max_trials, self._batch_arg_name,
            self._margin, self._max_val,
        )
        self._searched = True
        if self._early_exit:
            raise _TunerExitException()

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str | None = None) -> None:
        """Refuse what cannot be searched before the run starts: a distributed strategy (each rank would
        search on its own) and, for ``validate``/``test``/``predict``, several loaders of the stage (their
        loaders are requested here to count them)."""
        from torchbolt.tuner.batch_size_scaling import _check_eval_setup, _check_not_distributed

        _check_not_distributed(trainer)
        if stage is not None and stage != "fit":
            _check_eval_setup(trainer)

    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self._restored and self.optimal_batch_size is not None:
            # resumed: train with the size the interrupted run used, so the data order matches
            lightning_setattr(pl_module, self._batch_arg_name, self.optimal_batch_size)
            return
        self.scale_batch_size(trainer, pl_module)

    def on_validation_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        # `trainer.validate` only: validation inside `fit` runs at the training batch size search's result
        if trainer.sanity_checking or trainer.state.fn != "validate":
            return
        self.scale_batch_size(trainer, pl_module)

    def on_test_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.scale_batch_size(trainer, pl_module)

    def on_predict_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.scale_batch_size(trainer, pl_module)

    def state_dict(self) -> dict[str, Any]:
        if not self._searched and not self._restored:
            return {}
        return {"optimal_batch_size": self.optimal_batch_size}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.optimal_batch_size = state_dict["optimal_batch_size"]
        self._restored = True
