"""``Tuner``: run the learning-rate finder or the batch-size finder before training."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal

from torchbolt.utilities.exceptions import MisconfigurationException
from torchbolt.utilities.rank_zero import rank_zero_warn

if TYPE_CHECKING:
    from torchbolt.core.datamodule import LightningDataModule
    from torchbolt.core.module import LightningModule
    from torchbolt.trainer.trainer import Trainer
    from torchbolt.tuner.lr_finder import _LRFinder

_METHODS = ("fit", "validate", "test", "predict")


class Tuner:
    """Finds a good learning rate or the largest batch size that fits, for a Trainer and a model.

    Each method runs ``trainer.fit`` (``scale_batch_size(method=...)``: or ``validate``/``test``/``predict``)
    just long enough to search, restores the model, optimizer and Trainer to where they were, sets the
    found value on the model (or datamodule), and returns.

    Example::

        trainer = Trainer(max_epochs=10)
        tuner = Tuner(trainer)
        tuner.scale_batch_size(model)              # sets model.batch_size (or model.hparams.batch_size)
        lr_finder = tuner.lr_find(model)           # sets model.lr (or model.learning_rate, hparams too)
        lr_finder.plot(suggest=True).savefig("lr_find.png")
        trainer.fit(model)

    Args:
        trainer: the Trainer to tune with.
    """

    def __init__(self, trainer: Trainer) -> None:
        self._trainer = trainer

    def scale_batch_size(
        self,
        model: LightningModule,
        train_dataloaders: Any = None,
        val_dataloaders: Any = None,
        dataloaders: Any = None,
        datamodule: LightningDataModule | None = None,
        method: Literal["fit", "validate", "test", "predict"] = "fit",
        mode: str = "power",
        steps_per_trial: int = 3,
        init_val: int = 2,
        max_trials: int = 25,
        batch_arg_name: str = "batch_size",
        margin: float = 0.05,
        max_val: int = 8192,
    ) -> int | None:
        """Find the largest batch size whose steps do not run out of memory.

        With ``method="fit"`` each trial trains ``steps_per_trial`` steps; with ``"validate"``, ``"test"``
        or ``"predict"`` it runs that many batches of the stage's loader (``val_dataloader``,
        ``test_dataloader``, ``predict_dataloader``), which must be a single one. Training needs more
        memory than evaluating at the same size: tune each method you run.

        Args:
            model: the model; its (or the datamodule's) ``*_dataloader`` must read ``batch_arg_name``.
            train_dataloaders: not supported (the loader must be re-created for each size); use a
                datamodule or the model's ``train_dataloader``.
            val_dataloaders: validation loaders for the ``fit`` the search runs in.
            dataloaders: not supported for the same reason as ``train_dataloaders`` (``method != "fit"``).
            datamodule: a LightningDataModule.
            method: the Trainer method the size is searched for: ``"fit"``, ``"validate"``, ``"test"`` or
                ``"predict"``.
            mode: ``"power"`` (double until out of memory) or ``"binsearch"`` (then bisect).
            steps_per_trial: steps (batches) run at each size.
            init_val: the first size tried.
            max_trials: the most trials (``"binsearch"``: successful trials; failures narrow the
                interval and end the search on their own); ``0`` runs none and keeps ``init_val``.
            batch_arg_name: the attribute holding the batch size, looked up on the model, ``model.hparams``,
                the datamodule and ``datamodule.hparams``.
            margin: ``"binsearch"`` only: lower the size found by this fraction (``0 <= margin < 1``).
            max_val: the largest size tried.

        Returns:
            The batch size found (also set on the model/datamodule), or ``None`` under ``fast_dev_run``.

        Raises:
            MisconfigurationException: for dataloaders passed directly, several loaders of an evaluation
                stage, a missing attribute, or a distributed strategy.
            ValueError: when the Trainer already has a ``BatchSizeFinder`` callback.
        """
        _check_tuner_configuration(train_dataloaders, val_dataloaders, dataloaders, method)
        from torchbolt.callbacks.batch_size_finder import BatchSizeFinder

        if any(isinstance(cb, BatchSizeFinder) for cb in self._trainer.callbacks):
            raise ValueError(
                "Trainer is already configured with a `BatchSizeFinder` callback. Please remove it if you want to"
                " use the Tuner."
            )
        finder = BatchSizeFinder(mode=mode, steps_per_trial=steps_per_trial, init_val=init_val,
                                 max_trials=max_trials, batch_arg_name=batch_arg_name, margin=margin, max_val=max_val)
        finder._early_exit = True
        trainer = self._trainer
        run: dict[str, Any] = {
            "fit": lambda: trainer.fit(model, train_dataloaders, val_dataloaders, datamodule),
            "validate": lambda: trainer.validate(model, dataloaders, datamodule=datamodule),
            "test": lambda: trainer.test(model, dataloaders, datamodule=datamodule),
            "predict": lambda: trainer.predict(model, dataloaders, datamodule=datamodule),
        }
        self._run_with(finder, run[method])
        return finder.optimal_batch_size

    def lr_find(
        self,
        model: LightningModule,
        train_dataloaders: Any = None,
        val_dataloaders: Any = None,
        dataloaders: Any = None,
        datamodule: LightningDataModule | None = None,
        method: Literal["fit", "validate", "test", "predict"] = "fit",
        min_lr: float = 1e-8,
        max_lr: float = 1,
        num_training: int = 100,
        mode: str = "exponential",
        early_stop_threshold: float | None = 4.0,
        update_attr: bool = True,
        attr_name: str = "",
    ) -> _LRFinder | None:
        """Run a learning-rate range test and (``update_attr``) set the suggested rate on the model.

        Args:
            model: the model; ``configure_optimizers`` must return one optimizer.
            train_dataloaders: training loaders (or a datamodule).
            val_dataloaders: validation loaders (not used by the search).
            dataloaders: must be ``None`` (``method="fit"``).
            datamodule: a LightningDataModule.
            method: must be ``"fit"``.
            min_lr: the first learning rate tried (> 0).
            max_lr: the last learning rate tried (> 0; below ``min_lr`` the rate decreases, with a warning).
            num_training: how many steps (learning rates) to try (>= 1; ``suggestion()`` needs at least 13
                with its default skips, and returns ``None`` with fewer).
            mode: ``"exponential"`` (log-spaced rates) or ``"linear"``.
            early_stop_threshold: stop when the smoothed loss exceeds this times the best loss (``None``: never).
            update_attr: set the suggestion on ``model.lr``/``model.learning_rate`` (and ``hparams``).
            attr_name: the attribute to set instead of ``lr``/``learning_rate``.

        Returns:
            The result (``.results``, ``.suggestion()``, ``.plot()``), or ``None`` under ``fast_dev_run``.

        Raises:
            MisconfigurationException: for ``method != "fit"``, several optimizers or invalid arguments.
            AttributeError: when ``update_attr`` and the model has no learning-rate attribute.
            ValueError: when the Trainer already has a ``LearningRateFinder`` callback.
        """
        if method != "fit":
            raise MisconfigurationException("method='fit' is the only valid configuration to run lr finder.")
        _check_tuner_configuration(train_dataloaders, val_dataloaders, dataloaders, method)
        from torchbolt.callbacks.lr_finder import LearningRateFinder

        if any(isinstance(cb, LearningRateFinder) for cb in self._trainer.callbacks):
            raise ValueError(
                "Trainer is already configured with a `LearningRateFinder` callback. Please remove it if you want to"
                " use the Tuner."
            )
        finder = LearningRateFinder(min_lr=min_lr, max_lr=max_lr, num_training_steps=num_training, mode=mode,
                                    early_stop_threshold=early_stop_threshold, update_attr=update_attr,
                                    attr_name=attr_name)
        finder._early_exit = True
        trainer = self._trainer
        self._run_with(finder, lambda: trainer.fit(model, train_dataloaders, val_dataloaders, datamodule))
        return finder.optimal_lr

    def _run_with(self, callback: Any, run: Callable[[], Any]) -> None:
        """Run the Trainer method with the tuner callback first among the callbacks, then remove it."""
        trainer = self._trainer
        trainer.callbacks = [callback, *trainer.callbacks]
        try:
            run()
        finally:
            trainer.callbacks = [cb for cb in trainer.callbacks if cb is not callback]


def _check_tuner_configuration(train_dataloaders: Any, val_dataloaders: Any, dataloaders: Any, method: str) -> None:
    if method not in _METHODS:
        raise ValueError(f"method {method!r} is invalid. Should be one of {_METHODS}.")
    if method == "fit":
        if dataloaders is not None:
            raise MisconfigurationException(
                f"In tuner with method={method!r}, `dataloaders` argument should be None, please consider setting"
                " `train_dataloaders` and `val_dataloaders` instead."
            )
    elif train_dataloaders is not None or val_dataloaders is not None:
        raise MisconfigurationException(
            f"In tuner with `method`={method!r}, `train_dataloaders` and `val_dataloaders` arguments should be None,"
            " please consider setting `dataloaders` instead."
        )


def _tune(
    trainer: Trainer,
    model: LightningModule,
    train_dataloaders: Any = None,
    val_dataloaders: Any = None,
    dataloaders: Any = None,
    datamodule: LightningDataModule | None = None,
    scale_batch_size_kwargs: dict[str, Any] | None = None,
    lr_find_kwargs: dict[str, Any] | None = None,
    method: Literal["fit", "validate", "test", "predict"] = "fit",
) -> dict[str, Any]:
    """The Lightning 1.x ``trainer.tune``: batch-size scaling (``auto_scale_batch_size``), then the LR finder
    (``auto_lr_find``), each only when its Trainer flag is set."""
    config = trainer
    result: dict[str, Any] = {}
    if not config.auto_scale_batch_size and not config.auto_lr_find:
        rank_zero_warn(
            "`trainer.tune()` did nothing: pass `Trainer(auto_lr_find=True)` and/or `auto_scale_batch_size=True`,"
            " or call `Tuner(trainer).lr_find(model)` / `.scale_batch_size(model)` directly."
        )
        return result
    tuner = Tuner(trainer)
    if config.auto_scale_batch_size:
        kwargs = dict(scale_batch_size_kwargs or {})
        if isinstance(config.auto_scale_batch_size, str):
            kwargs.setdefault("mode", config.auto_scale_batch_size)
        kwargs.setdefault("margin", 0.0)  # Lightning 1.x's finder returned the size it found, with no margin
        result["scale_batch_size"] = tuner.scale_batch_size(
            model, train_dataloaders=train_dataloaders, val_dataloaders=val_dataloaders, dataloaders=dataloaders,
            datamodule=datamodule, method=method, **kwargs)
    if config.auto_lr_find:
        kwargs = dict(lr_find_kwargs or {})
        kwargs.setdefault("update_attr", True)
        if isinstance(config.auto_lr_find, str):
            kwargs.setdefault("attr_name", config.auto_lr_find)
        result["lr_find"] = tuner.lr_find(
            model, train_dataloaders=train_dataloaders, val_dataloaders=val_dataloaders, dataloaders=dataloaders,
            datamodule=datamodule, method=method, **kwargs)
    return result
