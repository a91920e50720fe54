"""``LearningRateFinder``: the learning-rate range test as a callback (runs at the start of ``fit``)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from torchbolt.callbacks.callback import Callback
from torchbolt.utilities.exceptions import _TunerExitException
from torchbolt.utilities.parsing import lightning_setattr
from torchbolt.utilities.seed import isolate_rng

if TYPE_CHECKING:
    from torchbolt.core.module import LightningModule
    from torchbolt.trainer.trainer import Trainer
    from torchbolt.tuner.lr_finder import _LRFinder


class LearningRateFinder(Callback):
    """Finds a good initial learning rate at the start of ``fit``, sets it, and lets training continue with it.

    The search trains ``num_training_steps`` steps while the learning rate grows from ``min_lr`` to
    ``max_lr``, records the smoothed loss, then puts the model, optimizer, schedulers and Trainer back
    exactly as they were. With ``update_attr`` the suggestion (steepest descent of the loss curve) is
    written to ``model.lr``/``model.learning_rate`` (and ``hparams``) and to the optimizer's param groups.

    Example::

        finder = LearningRateFinder(num_training_steps=50)
        trainer = Trainer(callbacks=[finder], max_epochs=5)
        trainer.fit(model)
        finder.optimal_lr.suggestion(), finder.optimal_lr.plot(suggest=True)

    To search again later (e.g. when fine-tuning), subclass it, make ``on_fit_start`` do nothing and
    call ``self.lr_find(trainer, pl_module)`` from another hook.

    Args:
        min_lr: the first learning rate tried (> 0).
        max_lr: the last learning rate tried (> 0; below ``min_lr`` the rate decreases, with a warning).
        num_training_steps: how many steps (learning rates) to try (>= 1). Called in the middle of a
            fit (from a later hook), the search trains that many steps from the current ``global_step``.
        mode: ``"exponential"`` (log-spaced rates) or ``"linear"``.
        early_stop_threshold: stop when the smoothed loss exceeds this times the best one (``None``: never).
        update_attr: set the suggestion on the model's learning-rate attribute.
        attr_name: that attribute's name when it is not ``lr`` or ``learning_rate``.

    Raises:
        ValueError: for an unknown ``mode``.
    """

    SUPPORTED_MODES = ("linear", "exponential")
    # the Trainer runs tuner callbacks before all others, so they search before anything else reacts to fit start
    _is_tuner_callback = True

    def __init__(
        self,
        min_lr: float = 1e-8,
        max_lr: float = 1,
        num_training_steps: int = 100,
        mode: str = "exponential",
        early_stop_threshold: float | None = 4.0,
        update_attr: bool = True,
        attr_name: str = "",
    ) -> None:
        mode = mode.lower()
        if mode not in self.SUPPORTED_MODES:
            raise ValueError(f"`mode` should be either of {self.SUPPORTED_MODES}")
        self._min_lr = min_lr
        self._max_lr = max_lr
        self._num_training_steps = num_training_steps
        self._mode = mode
        self._early_stop_threshold = early_stop_threshold
        self._update_attr = update_attr
        self._attr_name = attr_name
        self._early_exit = False
        self.optimal_lr: _LRFinder | None = None
        self.lr_finder: _LRFinder | None = None
        # a run resumed from a checkpoint of a run that already searched does not search again
        self._restored_results: dict[str, Any] | None = None
        self._restored_suggestion: float | None = None
        self._suggestion: float | None = None

    def lr_find(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Run the search now; set the suggestion when ``update_attr``."""
        from torchbolt.tuner.lr_finder import _apply_lr, _lr_find

        with isolate_rng():
            self.optimal_lr = _lr_find(
                trainer, pl_module, min_lr=self._min_lr, max_lr=self._max_lr, num_training=self._num_training_steps,
                mode=self._mode, early_stop_threshold=self._early_stop_threshold, update_attr=self._update_attr,
                attr_name=self._attr_name,
            )
        self.lr_finder = self.optimal_lr
        self._suggestion = self.optimal_lr.suggestion() if self._update_attr and self.optimal_lr else None
        if self._early_exit:
            raise _TunerExitException()
        if self._suggestion is not None:
            _apply_lr(trainer, self._suggestion)

    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self._restored_results is None:
            self.lr_find(trainer, pl_module)
            return
        # resumed from a run that already searched: keep its choice (the optimizer state restored from
        # the checkpoint already holds that rate; the attribute gets it too)
        suggestion = self._restored_suggestion
        if self._update_attr and suggestion is not None:
            from torchbolt.tuner.lr_finder import _determine_lr_attr_name

            lightning_setattr(pl_module, _determine_lr_attr_name(pl_module, self._attr_name), suggestion)

    def state_dict(self) -> dict[str, Any]:
        if self.optimal_lr is None:
            return {}
        suggestion = self._suggestion if self._restored_results is None else self._restored_suggestion
        return {"results": {key: list(values) for key, values in self.optimal_lr.results.items()},
                "suggestion": suggestion}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        from torchbolt.tuner.lr_finder import _LRFinder

        self._restored_results = dict(state_dict["results"])
        self._restored_suggestion = state_dict.get("suggestion")
        finder = _LRFinder(self._mode, self._min_lr, self._max_lr, self._num_training_steps)
        finder.results = {key: list(values) for key, values in self._restored_results.items()}
        self.optimal_lr = self.lr_finder = finder
