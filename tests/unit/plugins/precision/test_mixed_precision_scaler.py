"""float16 mixed precision with a real ``GradScaler``: skipped steps, unscaled clipping, checkpointed state.

PyTorch's CPU autocast supports float16 and ``GradScaler("cpu")`` is the same algorithm as on CUDA,
so the plug-in is exercised here by passing it explicitly (``Trainer(precision="16-mixed")`` itself
refuses the CPU, pointing to ``"bf16-mixed"``).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

import torchbolt as pl
from torchbolt.plugins.precision import MixedPrecision
from torchbolt.trainer import optimization
from torchbolt.utilities.exceptions import MisconfigurationException
from torchbolt.utilities.rank_zero import WarningCache


def _loader(n: int = 40) -> DataLoader:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 8, generator=g)
    return DataLoader(TensorDataset(x, (x[:, 0] > 0).long()), batch_size=8)


class Model(pl.LightningModule):
    """Optionally poisons the gradients of one batch with ``inf``; records what the optimizer step sees."""

    def __init__(self, inf_at_batch: int | None = None) -> None:
        super().__init__()
        self.net = nn.Linear(8, 2)
        self.inf_at_batch = inf_at_batch
        self.weights_before_step: list[Tensor] = []
        self.weights_after_batch: list[Tensor] = []
        self.grad_norms_at_step: list[float] = []
        self.activation_dtype: torch.dtype | None = None
        self.batch_idx = -1

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        x, y = batch
        self.batch_idx = batch_idx
        logits = self.net(x)
        self.activation_dtype = logits.dtype
        return F.cross_entropy(logits.float(), y)

    def on_after_backward(self) -> None:
        if self.batch_idx == self.inf_at_batch:
            self.net.weight.grad[0, 0] = math.inf

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        self.weights_after_batch.append(self.net.weight.detach().clone())

    def configure_optimizers(self) -> torch.optim.Optimizer:
        optimizer = torch.optim.SGD(self.parameters(), lr=0.5)

        def record(opt: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
            # runs inside `scaler.step` just before the update: the gradients the optimizer uses
            self.grad_norms_at_step.append(float(torch.cat([p.grad.flatten() for p in self.parameters()]).norm()))

        optimizer.register_step_pre_hook(record)
        return optimizer


def _trainer(plugin: MixedPrecision, **kwargs: Any) -> pl.Trainer:
    kwargs.setdefault("max_epochs", 1)
    return pl.Trainer(accelerator="cpu", plugins=[plugin], logger=False, enable_checkpointing=False,
                      enable_progress_bar=False, enable_model_summary=False, **kwargs)


def test_step_with_an_inf_gradient_is_skipped_and_the_scale_lowered() -> None:
    plugin = MixedPrecision("16-mixed", "cpu", scaler=torch.amp.GradScaler("cpu", init_scale=1024.0))
    model = Model(inf_at_batch=2)
    trainer = _trainer(plugin)
    trainer.fit(model, _loader())
    after = model.weights_after_batch
    assert model.activation_dtype == torch.float16
    assert not torch.equal(after[1], after[0])  # normal steps update the weights
    assert torch.equal(after[2], after[1])  # the poisoned step left them alone
    assert not torch.equal(after[3], after[2])  # and training continued
    assert plugin.scaler is not None and plugin.scaler.get_scale() == 512.0  # halved once
    assert len(model.grad_norms_at_step) == 4  # the optimizer did not run on the skipped step
    assert trainer.global_step == 5  # Lightning counts skipped steps too


def test_gradients_are_unscaled_before_clipping_and_the_update() -> None:
    scale = 2.0**14
    unclipped = Model()
    _trainer(MixedPrecision("16-mixed", "cpu", scaler=torch.amp.GradScaler("cpu", init_scale=scale))).fit(
        unclipped, _loader())
    assert max(unclipped.grad_norms_at_step) < 10  # scaled gradients would be ~16384 times larger

    clipped = Model()
    _trainer(MixedPrecision("16-mixed", "cpu", scaler=torch.amp.GradScaler("cpu", init_scale=scale)),
             gradient_clip_val=1e-3).fit(clipped, _loader())
    assert all(norm <= 1e-3 * 1.001 for norm in clipped.grad_norms_at_step)


def test_scaler_state_is_saved_in_checkpoints_and_restored_on_resume(tmp_path: Path) -> None:
    plugin = MixedPrecision("16-mixed", "cpu", scaler=torch.amp.GradScaler("cpu", init_scale=1024.0))
    trainer = _trainer(plugin)
    trainer.fit(Model(inf_at_batch=1), _loader())
    ckpt = tmp_path / "amp.ckpt"
    trainer.save_checkpoint(ckpt)
    saved = torch.load(ckpt, weights_only=True)
    assert saved["MixedPrecision"]["scale"] == 512.0

    seen: dict[str, float] = {}

    class Resumed(Model):
        def on_train_start(self) -> None:
            scaler = self.trainer.precision_plugin.scaler
            seen["scale"] = scaler.get_scale()

    resumed = MixedPrecision("16-mixed", "cpu", scaler=torch.amp.GradScaler("cpu", init_scale=1024.0))
    _trainer(resumed, max_epochs=2).fit(Resumed(), _loader(), ckpt_path=str(ckpt))
    assert seen["scale"] == 512.0


def test_manual_optimization_clip_gradients_unscales_once() -> None:
    norms: list[float] = []

    class Manual(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.automatic_optimization = False
            self.net = nn.Linear(8, 2)

        def training_step(self, batch: Any, batch_idx: int) -> None:
            opt = self.optimizers()
            x, y = batch
            opt.zero_grad()
            self.manual_backward(F.cross_entropy(self.net(x).float(), y))
            self.clip_gradients(opt, gradient_clip_val=1e-3, gradient_clip_algorithm="norm")
            norms.append(float(torch.cat([p.grad.flatten() for p in self.parameters()]).norm()))
            opt.step()

        def configure_optimizers(self) -> torch.optim.Optimizer:
            return torch.optim.SGD(self.parameters(), lr=0.1)

    trainer = _trainer(MixedPrecision("16-mixed", "cpu", scaler=torch.amp.GradScaler("cpu", init_scale=2.0**14)))
    trainer.fit(Manual(), _loader())
    assert len(norms) == 5 and all(n <= 1e-3 * 1.001 for n in norms)
    assert trainer.global_step == 5


def test_lbfgs_is_rejected_with_a_scaler() -> None:
    class WithLBFGS(Model):
        def configure_optimizers(self) -> torch.optim.Optimizer:
            return torch.optim.LBFGS(self.parameters())

    trainer = _trainer(MixedPrecision("16-mixed", "cpu"))
    with pytest.raises(MisconfigurationException, match="LBFGS"):
        trainer.fit(WithLBFGS(), _loader())


def test_training_step_returning_none_skips_the_scaled_step(monkeypatch: pytest.MonkeyPatch) -> None:
    # a private warning cache: the "returned None" warning is shown once per process, and other tests expect it
    monkeypatch.setattr(optimization, "_warning_cache", WarningCache())

    class Skipping(Model):
        def training_step(self, batch: Any, batch_idx: int) -> Tensor | None:
            return None if batch_idx == 1 else super().training_step(batch, batch_idx)

    model = Skipping()
    trainer = _trainer(MixedPrecision("16-mixed", "cpu"))
    trainer.fit(model, _loader())
    assert torch.equal(model.weights_after_batch[1], model.weights_after_batch[0])
    assert len(model.grad_norms_at_step) == 4
