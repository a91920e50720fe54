"""Tuner(trainer).lr_find and scale_batch_size, the 2.x spelling of auto_lr_find / auto_scale_batch_size."""

import json

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

import torchbolt as pl
from torchbolt.tuner import Tuner


class TunableModel(pl.LightningModule):
    def __init__(self, learning_rate: float = 1e-3, batch_size: int = 2):
        super().__init__()
        self.save_hyperparameters()
        self.learning_rate = learning_rate
        self.batch_size = batch_size
        self.layer = torch.nn.Linear(8, 2)
        g = torch.Generator().manual_seed(0)
        self.x = torch.randn(256, 8, generator=g)
        self.y = (self.x[:, 0] > 0).long()

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = F.cross_entropy(self.layer(x), y)
        self.log("train_loss", loss)
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.log("val_loss", F.cross_entropy(self.layer(x), y))

    def train_dataloader(self):
        return DataLoader(TensorDataset(self.x, self.y), batch_size=self.batch_size, shuffle=True)

    def val_dataloader(self):
        return DataLoader(TensorDataset(self.x[:64], self.y[:64]), batch_size=self.batch_size)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.learning_rate)


def main():
    pl.seed_everything(3)
    model = TunableModel()
    trainer = pl.Trainer(max_epochs=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, default_root_dir="tune")
    tuner = Tuner(trainer)
    lr_finder = tuner.lr_find(model, min_lr=1e-5, max_lr=1.0, num_training=30)
    suggestion = lr_finder.suggestion()
    fig = lr_finder.plot(suggest=True)
    fig.savefig("lr.png")
    new_bs = tuner.scale_batch_size(model, mode="power", steps_per_trial=2, init_val=4, max_trials=4)
    trainer.fit(model)
    result = {
        "suggestion": suggestion,
        "model_lr": model.learning_rate,
        "hparams_lr": model.hparams.learning_rate,
        "results_keys": sorted(lr_finder.results),
        "n_points": len(lr_finder.results["lr"]),
        "new_batch_size": new_bs,
        "model_batch_size": model.batch_size,
        "global_step": trainer.global_step,
        "optimizer_lr": trainer.optimizers[0].param_groups[0]["lr"],
        "leftover": sorted(p.name for p in __import__("pathlib").Path(".").rglob("*") if p.is_file()),
    }
    with open("result.json", "w") as f:
        json.dump(result, f)


if __name__ == "__main__":
    main()
