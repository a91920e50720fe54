"""A LightningDataModule, log_dict in validation_step, outputs kept on self, ReduceLROnPlateau, two loggers."""

import json

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import torchbolt as pl
from torchbolt.loggers import CSVLogger, TensorBoardLogger


class RegressionData(pl.LightningDataModule):
    def __init__(self, batch_size: int = 16):
        super().__init__()
        self.save_hyperparameters()
        self.calls = []

    def prepare_data(self):
        self.calls.append("prepare_data")
        g = torch.Generator().manual_seed(0)
        x = torch.randn(320, 8, generator=g)
        torch.save((x, x @ torch.arange(8.0).unsqueeze(1) * 0.1), "data.pt")

    def setup(self, stage: str):
        self.calls.append(f"setup:{stage}")
        x, y = torch.load("data.pt")
        if stage == "fit":
            self.train_set = TensorDataset(x[:256], y[:256])
            self.val_set = TensorDataset(x[256:], y[256:])
        if stage == "test":
            self.test_set = TensorDataset(x[256:], y[256:])

    def train_dataloader(self):
        return DataLoader(self.train_set, batch_size=self.hparams.batch_size, shuffle=True)

    def val_dataloader(self):
        return DataLoader(self.val_set, batch_size=self.hparams.batch_size)

    def test_dataloader(self):
        return DataLoader(self.test_set, batch_size=self.hparams.batch_size)


class Regressor(pl.LightningModule):
    def __init__(self, lr: float = 0.05):
        super().__init__()
        self.save_hyperparameters()
        self.net = nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 1))
        self.validation_step_outputs = []
        self.epoch_end_means = []

    def forward(self, x):
        return self.net(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = F.mse_loss(self(x), y)
        self.log("train_loss", loss, on_step=True, on_epoch=True)
        return {"loss": loss}

    def validation_step(self, batch, batch_idx):
        x, y = batch
        pred = self(x)
        loss = F.mse_loss(pred, y)
        self.log_dict({"val_loss": loss, "val_mae": F.l1_loss(pred, y)}, prog_bar=True)
        self.validation_step_outputs.append(pred.detach())

    def on_validation_epoch_end(self):
        all_preds = torch.cat(self.validation_step_outputs)
        self.log("val_pred_mean", all_preds.mean())
        self.epoch_end_means.append(len(all_preds))
        self.validation_step_outputs.clear()

    def test_step(self, batch, batch_idx):
        x, y = batch
        self.log("test_loss", F.mse_loss(self(x), y))

    def configure_optimizers(self):
        optimizer = torch.optim.SGD(self.parameters(), lr=self.hparams.lr)
        scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="min", factor=0.5, patience=0)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "monitor": "val_loss"}}


def main():
    pl.seed_everything(7)
    dm = RegressionData(batch_size=32)
    model = Regressor()
    loggers = [CSVLogger(save_dir="logs", name="csv"), TensorBoardLogger(save_dir="logs", name="tb")]
    trainer = pl.Trainer(max_epochs=3, logger=loggers, log_every_n_steps=2, enable_progress_bar=False,
                         enable_model_summary=False, num_sanity_val_steps=2)
    trainer.fit(model, datamodule=dm)
    fit_metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    logged = sorted(trainer.logged_metrics)
    test = trainer.test(model, datamodule=dm)
    result = {
        "dm_calls": dm.calls,
        "fit_callback_metrics": fit_metrics,
        "logged_metrics": logged,
        "test": test,
        "epoch_end_sizes": model.epoch_end_means,
        "lr_after": trainer.optimizers[0].param_groups[0]["lr"],
        "logger_log_dir": trainer.logger.log_dir,
        "loggers": [type(lg).__name__ for lg in trainer.loggers],
        "tb_log_dir": trainer.loggers[1].log_dir,
    }
    with open("result.json", "w") as f:
        json.dump(result, f)


if __name__ == "__main__":
    main()
