"""bf16-mixed on CPU with Rich bar/summary, SWA, finetuning, accumulation schedule, Timer and MetricCollection."""

import json
import os

import torch
from torch.utils.data import DataLoader, TensorDataset
from torchmetrics import MetricCollection
from torchmetrics.classification import MulticlassAccuracy, MulticlassF1Score

import torchbolt as pl
from torchbolt.callbacks import (
    BackboneFinetuning,
    GradientAccumulationScheduler,
    RichModelSummary,
    RichProgressBar,
    StochasticWeightAveraging,
    Timer,
)


class FineTuner(pl.LightningModule):
    def __init__(self):
        super().__init__()
        self.save_hyperparameters()
        self.backbone = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU())
        self.head = torch.nn.Linear(16, 3)
        self.val_metrics = MetricCollection({"acc": MulticlassAccuracy(num_classes=3),
                                             "f1": MulticlassF1Score(num_classes=3)}, prefix="val/")
        self.dtypes = set()

    def forward(self, x):
        return self.head(self.backbone(x))

    def training_step(self, batch, batch_idx):
        x, y = batch
        logits = self(x)
        self.dtypes.add(str(logits.dtype))
        loss = torch.nn.functional.cross_entropy(logits, y)
        self.log("train_loss", loss, prog_bar=True, batch_size=len(x))
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.val_metrics.update(self(x), y)
        self.log_dict(self.val_metrics)

    def configure_optimizers(self):
        return torch.optim.Adam(filter(lambda p: p.requires_grad, self.parameters()), lr=1e-2)


def main():
    pl.seed_everything(2)
    x = torch.randn(96, 8)
    y = torch.randint(0, 3, (96,))
    loader = DataLoader(TensorDataset(x, y), batch_size=8)
    timer = Timer()
    finetune = BackboneFinetuning(unfreeze_backbone_at_epoch=1, backbone_initial_ratio_lr=0.1)
    trainer = pl.Trainer(
        max_epochs=4, precision="bf16-mixed", accelerator="cpu",
        callbacks=[RichProgressBar(), RichModelSummary(max_depth=2), StochasticWeightAveraging(swa_lrs=1e-2, swa_epoch_start=3),
                   GradientAccumulationScheduler(scheduling={0: 1, 2: 2}), timer, finetune],
        default_root_dir="zoo",
    )
    model = FineTuner()
    trainer.fit(model, loader, loader)
    trainable_after_fit = all(p.requires_grad for p in model.backbone.parameters())
    validated = trainer.validate(model, loader)
    result = {
        "dtypes": sorted(model.dtypes),
        "precision": trainer.precision,
        "global_step": trainer.global_step,
        "timer_train_s": timer.time_elapsed("train"),
        "backbone_trainable_after_fit": trainable_after_fit,
        "backbone_frozen_by_validate_setup": not any(p.requires_grad for p in model.backbone.parameters()),
        "n_param_groups": len(trainer.optimizers[0].param_groups),
        "validated_keys": sorted(validated[0]),
        "log_dir": trainer.log_dir,
        "files": sorted(os.listdir(trainer.log_dir)),
    }
    with open("result.json", "w") as f:
        json.dump(result, f)


if __name__ == "__main__":
    main()
