"""Each precision's effect on parameters, inputs and activations, through ``Trainer(precision=...)``."""

from __future__ import annotations

from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

import torchbolt as pl
from torchbolt.plugins.precision import DoublePrecision, HalfPrecision, MixedPrecision, Precision
from torchbolt.utilities.exceptions import MisconfigurationException


def _loader(n: int = 32, batch_size: int = 8) -> DataLoader:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 16, generator=g)
    y = (x[:, 0] > 0).long()
    return DataLoader(TensorDataset(x, y), batch_size=batch_size)


class Recorder(pl.LightningModule):
    """Records the dtypes a training step sees."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 2))
        self.seen: dict[str, Any] = {}

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        x, y = batch
        logits = self(x)
        self.seen.update(
            input=x.dtype, labels=y.dtype, activation=logits.dtype, param=self.net[0].weight.dtype,
            new_tensor=torch.zeros(1).dtype, default=torch.get_default_dtype(),
        )
        loss = F.cross_entropy(logits.float(), y)
        self.log("loss", loss)
        return loss

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1)


def _fit(precision: Any = None, plugins: Any = None, model: pl.LightningModule | None = None,
         **kwargs: Any) -> tuple[pl.Trainer, Any]:
    model = model or Recorder()
    kwargs.setdefault("max_epochs", 1)
    trainer = pl.Trainer(
        accelerator="cpu", precision=precision, plugins=plugins, logger=False,
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False, **kwargs,
    )
    trainer.fit(model, _loader())
    return trainer, model


def test_32_true_changes_nothing() -> None:
    trainer, model = _fit("32-true")
    assert type(trainer.precision_plugin) is Precision
    assert model.seen == {"input": torch.float32, "labels": torch.int64, "activation": torch.float32,
                          "param": torch.float32, "new_tensor": torch.float32, "default": torch.float32}


def test_64_true_casts_parameters_inputs_and_new_tensors_to_float64() -> None:
    trainer, model = _fit("64-true")
    assert isinstance(trainer.precision_plugin, DoublePrecision)
    assert model.seen == {"input": torch.float64, "labels": torch.int64, "activation": torch.float64,
                          "param": torch.float64, "new_tensor": torch.float64, "default": torch.float64}
    assert model.dtype == torch.float64
    assert torch.get_default_dtype() == torch.float32  # restored after every step


def test_bf16_mixed_on_cpu_computes_in_bfloat16_and_keeps_fp32_weights() -> None:
    trainer, model = _fit("bf16-mixed")
    plugin = trainer.precision_plugin
    assert isinstance(plugin, MixedPrecision) and plugin.scaler is None and plugin.device == "cpu"
    assert model.seen["activation"] == torch.bfloat16
    assert model.seen["param"] == torch.float32
    assert model.seen["input"] == torch.float32  # autocast casts inside ops; the batch is left alone


@pytest.mark.parametrize(("precision", "dtype"), [("16-true", torch.float16), ("bf16-true", torch.bfloat16)])
def test_true_half_precisions_cast_everything_but_integer_labels(precision: str, dtype: torch.dtype) -> None:
    trainer, model = _fit(precision)
    assert isinstance(trainer.precision_plugin, HalfPrecision)
    assert model.seen == {"input": dtype, "labels": torch.int64, "activation": dtype, "param": dtype,
                          "new_tensor": dtype, "default": dtype}
    assert all(p.dtype == dtype for p in model.parameters())
    assert torch.get_default_dtype() == torch.float32


def _train_weights(precision: str) -> dict[str, Tensor]:
    torch.manual_seed(3)
    model = Recorder()
    _fit(precision, model=model, max_epochs=3)
    return {k: v.float() for k, v in model.state_dict().items()}


def test_bf16_mixed_on_cpu_matches_fp32_within_tolerance() -> None:
    fp32 = _train_weights("32-true")
    bf16 = _train_weights("bf16-mixed")
    for key in fp32:
        assert torch.allclose(fp32[key], bf16[key], atol=2e-2, rtol=0), key
    assert any(not torch.equal(fp32[k], bf16[k]) for k in fp32)  # it did compute in lower precision


def test_16_mixed_on_cpu_raises_suggesting_bf16_mixed() -> None:
    with pytest.raises(MisconfigurationException, match=r"16-mixed.*'cpu'.*bf16-mixed"):
        pl.Trainer(accelerator="cpu", precision="16-mixed")


@pytest.mark.parametrize(("alias", "canonical"), [(64, "64-true"), ("64", "64-true"), (32, "32-true"),
                                                  ("32", "32-true"), ("bf16", "bf16-mixed")])
def test_precision_aliases_resolve_to_canonical_strings(alias: Any, canonical: str) -> None:
    trainer = pl.Trainer(accelerator="cpu", precision=alias, logger=False, max_epochs=1)
    assert trainer.precision == canonical


def test_int_16_means_16_mixed_and_fails_on_cpu_with_the_hint() -> None:
    with pytest.raises(MisconfigurationException, match="bf16-mixed"):
        pl.Trainer(accelerator="cpu", precision=16)


def test_unknown_precision_lists_the_valid_ones() -> None:
    with pytest.raises(MisconfigurationException, match=r"precision='8-true'.*bf16-mixed"):
        pl.Trainer(precision="8-true")


def test_precision_plugin_instance_in_plugins_is_used() -> None:
    plugin = DoublePrecision()
    trainer = pl.Trainer(accelerator="cpu", plugins=[plugin], logger=False, max_epochs=1)
    assert trainer.precision_plugin is plugin
    assert trainer.precision == "64-true"


def test_half_precision_rejects_other_strings() -> None:
    with pytest.raises(ValueError, match="16-true"):
        HalfPrecision("16-mixed")  # type: ignore[arg-type]


def test_mixed_precision_rejects_a_scaler_for_bf16() -> None:
    with pytest.raises(MisconfigurationException, match="does not use a scaler"):
        MixedPrecision("bf16-mixed", "cpu", scaler=torch.amp.GradScaler("cpu"))


def test_init_module_creates_weights_in_the_precision_dtype() -> None:
    trainer = pl.Trainer(accelerator="cpu", precision="bf16-true", logger=False, max_epochs=1)
    with trainer.init_module():
        layer = nn.Linear(4, 4)
    assert layer.weight.dtype == torch.bfloat16
    assert torch.get_default_dtype() == torch.float32
