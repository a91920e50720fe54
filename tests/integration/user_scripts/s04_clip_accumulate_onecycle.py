"""Clipping + accumulation, OneCycleLR sized by estimated_stepping_batches, and seeded determinism."""

import json

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import torchbolt as pl


class Model(pl.LightningModule):
    def __init__(self, max_lr: float = 0.1):
        super().__init__()
        self.save_hyperparameters()
        self.layer = nn.Sequential(nn.Linear(10, 32), nn.Dropout(0.1), nn.ReLU(), nn.Linear(32, 2))
        self.stepping_batches = None

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = F.cross_entropy(self.layer(x), y)
        self.log("loss", loss)
        return loss

    def configure_optimizers(self):
        optimizer = torch.optim.SGD(self.parameters(), lr=self.hparams.max_lr, momentum=0.9)
        self.stepping_batches = self.trainer.estimated_stepping_batches
        scheduler = torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=self.hparams.max_lr, total_steps=self.stepping_batches)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


def run(seed):
    pl.seed_everything(seed, workers=True)
    x = torch.randn(200, 10)
    y = (x.sum(dim=1) > 0).long()
    loader = DataLoader(TensorDataset(x, y), batch_size=10, shuffle=True, num_workers=1)
    model = Model()
    trainer = pl.Trainer(max_epochs=3, accumulate_grad_batches=4, gradient_clip_val=0.5,
                         gradient_clip_algorithm="norm", deterministic=True, logger=False,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(model, loader)
    return model, trainer


def main():
    model_a, trainer_a = run(42)
    model_b, _ = run(42)
    same = all(torch.equal(a, b) for a, b in zip(model_a.state_dict().values(), model_b.state_dict().values()))
    scheduler = trainer_a.lr_scheduler_configs[0].scheduler
    result = {
        "global_step": trainer_a.global_step,
        "estimated_stepping_batches": model_a.stepping_batches,
        "scheduler_steps": scheduler.last_epoch,
        "final_lr": trainer_a.optimizers[0].param_groups[0]["lr"],
        "same_weights": same,
        "deterministic": torch.are_deterministic_algorithms_enabled(),
    }
    with open("result.json", "w") as f:
        json.dump(result, f)


if __name__ == "__main__":
    main()
