"""strategy='ddp_spawn' on 2 CPU processes: sync_dist logging, rank-zero checkpoint, weights back in the parent."""

import json
import sys

import torch
from torch.utils.data import DataLoader, TensorDataset

import torchbolt as pl
from torchbolt.callbacks import ModelCheckpoint


class DistModel(pl.LightningModule):
    def __init__(self):
        super().__init__()
        self.save_hyperparameters()
        self.layer = torch.nn.Linear(4, 1)

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = torch.nn.functional.mse_loss(self.layer(x), y)
        self.log("train_loss", loss, sync_dist=True)
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.log("val_loss", torch.nn.functional.mse_loss(self.layer(x), y), sync_dist=True)
        self.log("rank_seen", float(self.global_rank), reduce_fx="sum", sync_dist=True)

    def on_fit_end(self):
        if self.trainer.is_global_zero:
            self.print(f"world_size={self.trainer.world_size}")

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def main(strategy):
    pl.seed_everything(0)
    x = torch.randn(64, 4)
    y = x.sum(dim=1, keepdim=True)
    loader = DataLoader(TensorDataset(x, y), batch_size=8)
    model = DistModel()
    before = model.layer.weight.detach().clone()
    checkpoint = ModelCheckpoint(dirpath="ckpts", monitor="val_loss", filename="{epoch}-{val_loss:.3f}")
    trainer = pl.Trainer(accelerator="cpu", devices=2, strategy=strategy, max_epochs=2, logger=False,
                         callbacks=[checkpoint], enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(model, loader, loader)
    if trainer.is_global_zero:
        reloaded = DistModel.load_from_checkpoint(checkpoint.best_model_path)
        result = {
            "world_size": trainer.world_size,
            "strategy": type(trainer.strategy).__name__,
            "global_step": trainer.global_step,
            "weights_changed": not torch.equal(before, model.layer.weight.detach()),
            "reloaded_equals_trained": torch.allclose(reloaded.layer.weight, model.layer.weight.detach()),
            "best_model_path": checkpoint.best_model_path,
            "callback_metrics": {k: float(v) for k, v in trainer.callback_metrics.items()},
        }
        with open("result.json", "w") as f:
            json.dump(result, f)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "ddp_spawn")
