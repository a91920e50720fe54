"""The batch-size finder: the largest batch size whose training steps do not run out of memory.

Each trial trains ``steps_per_trial`` steps at one batch size (re-creating the training dataloader,
which reads the size from the model or datamodule attribute). ``"power"`` doubles the size until a
trial runs out of memory and keeps the last size that worked; ``"binsearch"`` then bisects between
the last success and the first failure.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from torchbolt.tuner._search import SearchRun
from torchbolt.utilities.combined_loader import CombinedLoader
from torchbolt.utilities.exceptions import MisconfigurationException
from torchbolt.utilities.memory import garbage_collection_cuda, is_oom_error
from torchbolt.utilities.parsing import lightning_getattr, lightning_hasattr, lightning_setattr
from torchbolt.utilities.rank_zero import rank_zero_info, rank_zero_warn

if TYPE_CHECKING:
    from torchbolt.trainer.trainer import Trainer


def _check_batch_size_finder_args(mode: str, steps_per_trial: int, init_val: int, max_trials: int,
                                  margin: float = 0.05, max_val: int = 8192) -> None:
    if isinstance(margin, bool) or not isinstance(margin, (int, float)) or not 0.0 <= margin < 1.0:
        raise MisconfigurationException(
            f"`scale_batch_size(margin={margin!r})` is invalid: `margin` should be between 0 and 1 (0 included)."
        )
    if not isinstance(max_val, int) or isinstance(max_val, bool) or max_val < 1:
        raise MisconfigurationException(f"`scale_batch_size(max_val={max_val!r})` is invalid: expected an int >= 1.")
    if mode not in ("power", "binsearch"):
        raise MisconfigurationException(
            f"`scale_batch_size(mode={mode!r})` is invalid: use 'power' or 'binsearch'."
        )
    for name, value in (("steps_per_trial", steps_per_trial), ("init_val", init_val), ("max_trials", max_trials)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise MisconfigurationException(f"`scale_batch_size({name}={value!r})` is invalid: expected an int >= 1.")


def _check_can_scale(trainer: Trainer, batch_arg_name: str) -> None:
    """Raises MisconfigurationException when the batch size cannot be searched in this fit."""
    model = trainer.lightning_module
    if trainer.world_size > 1 or trainer.strategy.distributed_sampler_kwargs is not None:
        raise MisconfigurationException("The Batch size finder is not supported with distributed strategies.")
    ctx = trainer.run_context
    fit_loop = ctx.fit_loop if ctx is not None else None
    if fit_loop is not None and fit_loop.source.explicit.get("train") is not None:
        raise MisconfigurationException(
            "The Batch size finder cannot be used with dataloaders passed directly to `.fit()`. Please disable"
            " the feature or incorporate the dataloader into your LightningModule or LightningDataModule."
        )
    if not lightning_hasattr(model, batch_arg_name):
        raise MisconfigurationException(
            f"Field {batch_arg_name} not found in `model`, `datamodule`, nor their `hparams` attributes."
        )
    hparams = getattr(model, "_hparams", None)
    if hasattr(model, batch_arg_name) and hparams is not None and batch_arg_name in hparams:
        rank_zero_warn(
            f"Field `model.{batch_arg_name}` and `model.hparams.{batch_arg_name}` are mutually exclusive!"
            f" `model.{batch_arg_name}` will be used as the initial batch size for scaling. If this is not the"
            " intended behavior, please remove either one."
        )


def _scale_batch_size(
    trainer: Trainer,
    mode: str = "power",
    steps_per_trial: int = 3,
    init_val: int = 2,
    max_trials: int = 25,
    batch_arg_name: str = "batch_size",
    margin: float = 0.05,
    max_val: int = 8192,
) -> int | None:
    """Find the batch size inside the running ``fit``; set it on the model/datamodule; restore the rest.

    ``max_val`` caps every size tried (the search stops once a trial at the cap succeeds); ``margin``
    (binsearch only) lowers the size found by that fraction, a safety buffer for memory that varies.

    Returns:
        The batch size found, or ``None`` under ``fast_dev_run``.
    """
    _check_batch_size_finder_args(mode, steps_per_trial, init_val, max_trials, margin, max_val)
    if trainer.fast_dev_run:
        rank_zero_warn("Skipping batch size scaler since `fast_dev_run` is enabled.")
        return None
    _check_can_scale(trainer, batch_arg_name)
    # validation is skipped: a training step at a batch size needs more memory than evaluating one
    with SearchRun(trainer, [], max_steps=steps_per_trial, max_epochs=-1, min_epochs=None, min_steps=None,
                   limit_train_batches=1.0, limit_val_batches=0, num_sanity_val_steps=0,
                   val_check_interval=1.0) as search:
        new_size, _ = _adjust_batch_size(trainer, search, batch_arg_name, value=init_val, max_val=max_val)
        run = _run_power_scaling if mode == "power" else _run_binary_scaling
        new_size = run(trainer, search, new_size, batch_arg_name, max_trials, max_val)
    if mode == "binsearch" and margin > 0:
        reduced = max(1, int(new_size * (1 - margin)))
        if reduced != new_size:
            rank_zero_info(f"Applying a margin of {margin:.1%}: batch size {new_size} -> {reduced}")
            new_size = reduced
    garbage_collection_cuda()
    lightning_setattr(trainer.lightning_module, batch_arg_name, new_size)
    ctx = trainer.run_context
    loop = ctx.fit_loop if ctx is not None else None
    if loop is not None:
        loop.setup_train_data()  # the loader at the size found: what the fit trains on, and `trainer.train_dataloader`
    rank_zero_info(f"Finished batch size finder, will continue with full run using batch size {new_size}")
    return new_size


def _trial(search: SearchRun) -> bool:
    """Run one trial; ``False`` when it ran out of memory (any other error propagates).

    After a failure the memory the trial held is released (the exception and its frames are gone by
    then); a successful trial's memory is freed by reference counting when its loop is replaced.
    """
    try:
        search.run()
        succeeded = True
    except RuntimeError as exception:
        if not is_oom_error(exception):
            raise
        succeeded = False
    finally:
        search.trainer.lightning_module.zero_grad(set_to_none=True)
    if not succeeded:
        garbage_collection_cuda()
    return succeeded


def _reached_cap(size: int, max_val: int) -> bool:
    if size >= max_val:
        rank_zero_info(f"Reached the maximum batch size limit of {max_val}. Stopping search.")
        return True
    return False


def _run_power_scaling(trainer: Trainer, search: SearchRun, new_size: int, batch_arg_name: str,
                       max_trials: int, max_val: int = 8192) -> int:
    """Double until a trial fails, then return the last size that worked (halve while nothing has worked)."""
    any_success = False
    for _ in range(max_trials):
        if _trial(search):
            if _reached_cap(new_size, max_val):
                break
            new_size, changed = _adjust_batch_size(trainer, search, batch_arg_name, factor=2.0, desc="succeeded",
                                                   max_val=max_val)
            if not changed:
                break
            any_success = True
            continue
        new_size, _ = _adjust_batch_size(trainer, search, batch_arg_name, factor=0.5, desc="failed")
        if any_success:
            break
    return new_size


def _run_binary_scaling(trainer: Trainer, search: SearchRun, new_size: int, batch_arg_name: str,
                        max_trials: int, max_val: int = 8192) -> int:
    """Double until a trial fails, then bisect between the last success and the first failure."""
    low, high, count = 1, None, 0
    while True:
        if _trial(search):
            count += 1
            if count > max_trials or _reached_cap(new_size, max_val):
                break
            low = new_size
            if high is not None:
                if high - low <= 1:
                    break
                new_size, changed = _adjust_batch_size(trainer, search, batch_arg_name, value=(high + low) // 2,
                                                       desc="succeeded")
            else:
                new_size, changed = _adjust_batch_size(trainer, search, batch_arg_name, factor=2.0,
                                                       desc="succeeded", max_val=max_val)
            if not changed:
                break
            continue
        high = new_size
        new_size, _ = _adjust_batch_size(trainer, search, batch_arg_name, value=(high + low) // 2, desc="failed")
        if high - low <= 1:
            break
    return new_size


def _dataset_length(loader: Any) -> int | None:
    """The number of samples behind a training loader (the largest dataset of a combined loader)."""
    loaders = loader.flattened if isinstance(loader, CombinedLoader) else [loader]
    lengths = []
    for item in loaders:
        dataset = getattr(item, "dataset", None)
        try:
            lengths.append(len(dataset))  # type: ignore[arg-type]
        except TypeError:
            continue
    return max(lengths) if lengths else None


def _adjust_batch_size(trainer: Trainer, search: SearchRun, batch_arg_name: str = "batch_size", factor: float = 1.0,
                       value: int | None = None, desc: str | None = None, max_val: int | None = None
                       ) -> tuple[int, bool]:
    """Set the batch size to ``value`` (or the current one times ``factor``), capped at the dataset size
    and at ``max_val``.

    Returns:
        The new batch size and whether it differs from the current one.

    Raises:
        RuntimeError: when even a batch size of 1 does not fit in memory.
    """
    model = trainer.lightning_module
    batch_size = lightning_getattr(model, batch_arg_name)
    assert search.ctx is not None
    loader, _ = search.ctx.data.train_loader(search.source)
    length = _dataset_length(loader)
    if length is not None and batch_size >= length:
        rank_zero_info(f"The batch size {batch_size} is greater or equal than the length of your dataset.")
        return batch_size, False
    new_size = value if value is not None else int(batch_size * factor)
    if max_val is not None and new_size > max_val:
        if desc:
            rank_zero_info(f"Batch size {new_size} exceeds the limit max_val={max_val}: trying {max_val}")
        new_size = max_val
    if new_size < 1:
        raise RuntimeError(
            f"Batch size {batch_size} ran out of memory and there is no smaller batch size to try: the model does"
            " not fit in memory even with one sample per batch."
        )
    if desc:
        rank_zero_info(f"Batch size {batch_size} {desc}, trying batch size {new_size}")
    lightning_setattr(model, batch_arg_name, new_size)
    return new_size, new_size != batch_size

