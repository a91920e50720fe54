"""fast_dev_run, overfit_batches, float limit_*_batches, val_check_interval and check_val_every_n_epoch."""

import json

import torch
from torch.utils.data import DataLoader, TensorDataset

import torchbolt as pl


class Counting(pl.LightningModule):
    def __init__(self):
        super().__init__()
        self.layer = torch.nn.Linear(4, 1)
        self.train_batches = 0
        self.val_batches = 0
        self.val_epochs_at_step = []
        self.seen_train_idx = set()

    def training_step(self, batch, batch_idx):
        x, idx = batch
        self.train_batches += 1
        self.seen_train_idx.update(idx.tolist())
        loss = self.layer(x).pow(2).mean()
        self.log("train_loss", loss)
        return loss

    def validation_step(self, batch, batch_idx):
        x, _ = batch
        self.val_batches += 1
        self.log("val_loss", self.layer(x).pow(2).mean())

    def on_validation_epoch_end(self):
        if not self.trainer.sanity_checking:
            self.val_epochs_at_step.append(self.global_step)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)


def loaders():
    x = torch.randn(100, 4)
    ds = TensorDataset(x, torch.arange(100))
    return DataLoader(ds, batch_size=10, shuffle=True), DataLoader(ds, batch_size=10)


def run(**kwargs):
    model = Counting()
    trainer = pl.Trainer(enable_progress_bar=False, enable_model_summary=False, **kwargs)
    trainer.fit(model, *loaders())
    return {
        "train_batches": model.train_batches,
        "val_batches": model.val_batches,
        "val_at_steps": model.val_epochs_at_step,
        "global_step": trainer.global_step,
        "num_training_batches": trainer.num_training_batches,
        "num_val_batches": list(trainer.num_val_batches),
        "distinct_train_samples": len(model.seen_train_idx),
        "has_logger": trainer.logger is not None,
        "ckpt_callback": trainer.checkpoint_callback is not None,
    }


def main():
    pl.seed_everything(1)
    result = {
        "fast_dev_run": run(fast_dev_run=True, max_epochs=5),
        "fast_dev_run_3": run(fast_dev_run=3),
        "overfit": run(overfit_batches=2, max_epochs=3, logger=False, enable_checkpointing=False),
        "limits": run(limit_train_batches=0.5, limit_val_batches=0.2, max_epochs=2, logger=False,
                      enable_checkpointing=False, num_sanity_val_steps=0),
        "half_epoch_val": run(val_check_interval=0.5, max_epochs=2, logger=False, enable_checkpointing=False,
                              num_sanity_val_steps=0),
        "every_2_epochs": run(check_val_every_n_epoch=2, max_epochs=4, logger=False, enable_checkpointing=False,
                              num_sanity_val_steps=0),
        "val_every_3_steps": run(val_check_interval=3, check_val_every_n_epoch=None, max_steps=7, logger=False,
                                 enable_checkpointing=False, num_sanity_val_steps=0),
    }
    import os
    result["files"] = sorted(os.listdir("."))
    with open("result.json", "w") as f:
        json.dump(result, f)


if __name__ == "__main__":
    main()
