"""Lightning 1.x arguments from tutorials keep working, with a warning naming the modern spelling."""

from __future__ import annotations

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
