"""BaseFinetuning / BackboneFinetuning: frozen until the given epoch, then trained at the given learning rate."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import torchbolt as pl
from torchbolt.callbacks import BackboneFinetuning, BaseFinetuning, Callback
from torchbolt.utilities.exceptions import MisconfigurationException


def _data() -> TensorDataset:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(16, 4, generator=g)
    return TensorDataset(x, x.sum(dim=1, keepdim=True))


class Model(pl.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.backbone = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU())
        self.head = nn.Linear(8, 1)

    def training_step(self, batch, batch_idx):
        x, y = batch
        return F.mse_loss(self.head(self.backbone(x)), y)

    def configure_optimizers(self):
        return torch.optim.SGD(filter(lambda p: p.requires_grad, self.parameters()), lr=0.1)

    def train_dataloader(self):
        return DataLoader(_data(), batch_size=16)  # one step per epoch


class Observe(Callback):
    """Per epoch: the backbone weight before and after, its gradient, and the param groups' learning rates."""

    def __init__(self) -> None:
        self.before: dict[int, torch.Tensor] = {}
        self.after: dict[int, torch.Tensor] = {}
        self.grad: dict[int, torch.Tensor] = {}
        self.lrs: dict[int, list[float]] = {}

    def on_train_epoch_start(self, trainer, pl_module):
        self.before[trainer.current_epoch] = pl_module.backbone[0].weight.detach().clone()

    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        grad = pl_module.backbone[0].weight.grad
        if grad is not None:
            self.grad[trainer.current_epoch] = grad.clone()
        self.lrs[trainer.current_epoch] = [g["lr"] for g in optimizer.param_groups]

    def on_train_epoch_end(self, trainer, pl_module):
        self.after[trainer.current_epoch] = pl_module.backbone[0].weight.detach().clone()


def _fit(model: pl.LightningModule, *callbacks: Callback, max_epochs: int = 5) -> pl.Trainer:
    trainer = pl.Trainer(max_epochs=max_epochs, logger=False, enable_progress_bar=False, enable_model_summary=False,
                         enable_checkpointing=False, callbacks=list(callbacks))
    trainer.fit(model)
    return trainer


def test_backbone_stays_frozen_until_the_epoch_then_trains_at_the_given_rate():
    observe = Observe()
    finetuning = BackboneFinetuning(unfreeze_backbone_at_epoch=2, backbone_initial_lr=0.01, lambda_func=lambda e: 3.0)
    _fit(Model(), finetuning, observe, max_epochs=6)
    for epoch in (0, 1):
        assert torch.equal(observe.before[epoch], observe.after[epoch])
        assert observe.lrs[epoch] == [0.1]
    # epoch 2: a second param group at 0.01; the update is exactly SGD at that rate
    assert observe.lrs[2] == [0.1, 0.01]
    torch.testing.assert_close(observe.after[2], observe.before[2] - 0.01 * observe.grad[2])
    # then multiplied by lambda_func(epoch + 1) each epoch, capped at the head's rate (should_align)
    assert observe.lrs[3] == pytest.approx([0.1, 0.03])
    assert observe.lrs[4] == pytest.approx([0.1, 0.09])
    assert observe.lrs[5] == pytest.approx([0.1, 0.1])


def test_default_initial_rate_is_a_ratio_of_the_current_rate():
    observe = Observe()
    _fit(Model(), BackboneFinetuning(unfreeze_backbone_at_epoch=1, backbone_initial_ratio_lr=0.5), observe,
         max_epochs=2)
    assert observe.lrs[1] == pytest.approx([0.1, 0.05])


def test_batch_norm_stays_trainable_while_the_backbone_is_frozen_with_train_bn():
    model = Model()
    BaseFinetuning.freeze(model.backbone, train_bn=True)
    assert not model.backbone[0].weight.requires_grad
    assert model.backbone[1].weight.requires_grad
    BaseFinetuning.freeze(model.backbone, train_bn=False)
    assert not model.backbone[1].weight.requires_grad and not model.backbone[1].track_running_stats


def test_custom_finetuning_subclass_unfreezes_in_its_finetune_function():
    class UnfreezeHeadLater(BaseFinetuning):
        def freeze_before_training(self, pl_module):
            self.freeze(pl_module.head)

        def finetune_function(self, pl_module, current_epoch, optimizer):
            if current_epoch == 1:
                self.unfreeze_and_add_param_group(pl_module.head, optimizer)  # lr: first group's / 10

    model = Model()
    head_before = model.head.weight.detach().clone()
    observe = Observe()
    trainer = _fit(model, UnfreezeHeadLater(), observe, max_epochs=2)
    assert observe.lrs[1] == pytest.approx([0.1, 0.01])
    assert not torch.equal(model.head.weight, head_before)
    assert len(trainer.optimizers[0].param_groups) == 2


def test_module_without_backbone_is_rejected():
    class NoBackbone(Model):
        def __init__(self):
            super().__init__()
            self.body = self.backbone
            del self.backbone

        def training_step(self, batch, batch_idx):
            x, y = batch
            return F.mse_loss(self.head(self.body(x)), y)

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    class Freezer(BackboneFinetuning):
        def freeze_before_training(self, pl_module):
            pass

    with pytest.raises(MisconfigurationException, match="backbone"):
        _fit(NoBackbone(), Freezer())
