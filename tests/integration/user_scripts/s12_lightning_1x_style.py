"""A Lightning 1.x tutorial script: gpus=0, progress_bar_refresh_rate, weights_summary, auto_lr_find + tune()."""

import json
import warnings

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

import torchbolt as pl


class LitModel(pl.LightningModule):
    def __init__(self, learning_rate=1e-3):
        super().__init__()
        self.save_hyperparameters()
        self.learning_rate = learning_rate
        self.layer = torch.nn.Linear(6, 2)

    def forward(self, x):
        return self.layer(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = F.cross_entropy(self(x), y)
        self.log("train_loss", loss, on_epoch=True)
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        loss = F.cross_entropy(self(x), y)
        self.log("val_loss", loss)
        return loss

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=self.learning_rate)


def data():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(128, 6, generator=g)
    y = (x[:, 0] > 0).long()
    ds = TensorDataset(x, y)
    return DataLoader(ds, batch_size=16, shuffle=True), DataLoader(ds, batch_size=32)


def main():
    pl.seed_everything(42)
    train, val = data()
    model = LitModel()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer = pl.Trainer(gpus=0, max_epochs=2, progress_bar_refresh_rate=20, weights_summary=None,
                             auto_lr_find=True, checkpoint_callback=True, default_root_dir="legacy")
        tuned = trainer.tune(model, train, val, lr_find_kwargs={"num_training": 20})
        trainer.fit(model, train, val)
    result = {
        "warnings": sorted({str(w.message).split("`")[1] for w in caught if "1.x" in str(w.message)}),
        "tuned_keys": sorted(tuned),
        "lr_changed": model.learning_rate != 1e-3,
        "optimizer_lr_is_model_lr": trainer.optimizers[0].param_groups[0]["lr"] == model.learning_rate,
        "accelerator": type(trainer.accelerator).__name__,
        "global_step": trainer.global_step,
        "has_checkpoint": trainer.checkpoint_callback is not None,
        "refresh_rate": trainer.progress_bar_callback.refresh_rate,
        "val_loss": float(trainer.callback_metrics["val_loss"]),
    }
    with open("result.json", "w") as f:
        json.dump(result, f)


if __name__ == "__main__":
    main()
