"""Lightning 1.x arguments from tutorials keep working, with a warning naming the modern spelling."""

from __future__ import annotations

import re

import pytest
import torch

import torchbolt as pl
from torchbolt.utilities.exceptions import MisconfigurationException
from torchbolt.utilities.rank_zero import TorchboltDeprecationWarning


def _make(**kwargs: object) -> pl.Trainer:
    return pl.Trainer(max_epochs=1, logger=False, enable_checkpointing=False, **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(("legacy", "modern"), [(16, "16-mixed"), ("16", "16-mixed"), ("bf16", "bf16-mixed")])
def test_precision_aliases_warn_with_the_modern_name(legacy: object, modern: str) -> None:
    from torchbolt.trainer.config import normalize_precision

    with pytest.warns(TorchboltDeprecationWarning, match=f"precision='{modern}'"):
        assert normalize_precision(legacy) == modern


def test_precision_32_and_64_ints_are_plain_aliases() -> None:
    from torchbolt.trainer.config import normalize_precision

    assert normalize_precision(32) == "32-true" and normalize_precision(64) == "64-true"


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the failure without a GPU")
def test_gpus_argument_warns_then_fails_clearly_without_gpu() -> None:
    with pytest.warns(TorchboltDeprecationWarning, match="accelerator='gpu', devices=N"), \
            pytest.raises(MisconfigurationException, match="no GPU is available"):
        _make(gpus=1)


def test_gpus_zero_means_cpu() -> None:
    with pytest.warns(TorchboltDeprecationWarning, match="gpus=0"):
        trainer = _make(gpus=0, accelerator="cpu")
    assert trainer.strategy.root_device.type == "cpu"


@pytest.mark.parametrize(("kwarg", "value", "check"), [
    ("checkpoint_callback", False, lambda t: t.checkpoint_callback is None),
    ("replace_sampler_ddp", False, lambda t: t._config.use_distributed_sampler is False),
    ("weights_summary", None, lambda t: not any(type(c).__name__ == "ModelSummary" for c in t.callbacks)),
])
def test_renamed_arguments_map_to_the_new_ones(kwarg: str, value: object, check: object) -> None:
    with pytest.warns(TorchboltDeprecationWarning, match=kwarg):
        trainer = _make(**{kwarg: value})
    assert check(trainer)  # type: ignore[operator]


def test_distributed_backend_warns_and_selects_the_strategy() -> None:
    with pytest.warns(TorchboltDeprecationWarning, match="strategy=..."), \
            pytest.raises(MisconfigurationException, match="strategy='nonexistent'"):
        _make(distributed_backend="nonexistent")


def test_progress_bar_refresh_rate_sets_the_tqdm_refresh_rate() -> None:
    from torchbolt.callbacks import TQDMProgressBar

    with pytest.warns(TorchboltDeprecationWarning, match="progress_bar_refresh_rate"):
        trainer = _make(progress_bar_refresh_rate=20)
    assert isinstance(trainer.progress_bar_callback, TQDMProgressBar)
    assert trainer.progress_bar_callback.refresh_rate == 20


def test_progress_bar_refresh_rate_zero_disables_the_bar() -> None:
    with pytest.warns(TorchboltDeprecationWarning, match="progress_bar_refresh_rate"):
        trainer = _make(progress_bar_refresh_rate=0)
    assert trainer.progress_bar_callback is None


def test_progress_bar_refresh_rate_keeps_a_bar_passed_in_callbacks() -> None:
    from torchbolt.callbacks import TQDMProgressBar

    bar = TQDMProgressBar(refresh_rate=3)
    with pytest.warns(TorchboltDeprecationWarning, match="progress_bar_refresh_rate"):
        trainer = _make(progress_bar_refresh_rate=20, callbacks=bar)
    assert trainer.progress_bar_callback is bar and bar.refresh_rate == 3


@pytest.mark.parametrize(("kwarg", "hint"), [
    ("track_grad_norm", "grad_norm"),
    ("stochastic_weight_avg", "StochasticWeightAveraging"),
    ("num_processes", "accelerator='cpu', devices=N"),
    ("reload_dataloaders_every_epoch", "reload_dataloaders_every_n_epochs=1"),
    ("auto_select_gpus", "devices='auto'"),
    ("ipus", "has no replacement"),
])
def test_arguments_removed_in_2x_stay_a_type_error_naming_the_replacement(kwarg: str, hint: str) -> None:
    with pytest.raises(TypeError, match=rf"{kwarg}.*removed in Lightning 2.0.*{re.escape(hint)}"):
        _make(**{kwarg: 2})
