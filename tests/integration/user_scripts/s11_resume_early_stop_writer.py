"""EarlyStopping that stops, save_last + resume from "last", test() without a model, a prediction writer."""

import json
import os
import warnings

import torch
from torch.utils.data import TensorDataset

import torchbolt as pl
from torchbolt.callbacks import BasePredictionWriter, EarlyStopping, ModelCheckpoint


class Plateau(pl.LightningModule):
    def __init__(self, lr: float = 0.0, hidden: int = 4):
        super().__init__()
        self.save_hyperparameters()
        self.net = torch.nn.Sequential(torch.nn.Linear(3, hidden), torch.nn.Linear(hidden, 1))

    def forward(self, x):
        return self.net(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = torch.nn.functional.mse_loss(self(x), y)
        return {"loss": loss, "n": len(x)}

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.log("val_loss", torch.nn.functional.mse_loss(self(x), y))

    def test_step(self, batch, batch_idx):
        x, y = batch
        self.log("test_loss", torch.nn.functional.mse_loss(self(x), y))

    def predict_step(self, batch, batch_idx, dataloader_idx=0):
        x, _ = batch
        return self(x)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.hparams.lr)


class Writer(BasePredictionWriter):
    def write_on_epoch_end(self, trainer, pl_module, predictions, batch_indices):
        torch.save({"predictions": predictions, "batch_indices": batch_indices}, os.path.join("preds.pt"))


def main():
    pl.seed_everything(0)
    x = torch.randn(40, 3)
    dm = pl.LightningDataModule.from_datasets(train_dataset=TensorDataset(x, x.sum(1, keepdim=True)),
                                              val_dataset=TensorDataset(x, x.sum(1, keepdim=True)),
                                              test_dataset=TensorDataset(x, x.sum(1, keepdim=True)),
                                              predict_dataset=TensorDataset(x, x.sum(1, keepdim=True)),
                                              batch_size=10)
    early = EarlyStopping(monitor="val_loss", patience=2, mode="min")  # lr=0: val_loss never improves
    stopper = pl.Trainer(max_epochs=20, callbacks=[early], logger=False, enable_progress_bar=False,
                         enable_model_summary=False, default_root_dir="es_run")
    stopper.fit(Plateau(), datamodule=dm)
    stopped = {"stopped_epoch": early.stopped_epoch, "wait_count": early.wait_count,
               "current_epoch": stopper.current_epoch, "should_stop": stopper.should_stop}

    ckpt = ModelCheckpoint(dirpath="ckpts", monitor="val_loss", save_last=True)
    trainer = pl.Trainer(max_epochs=2, callbacks=[ckpt], logger=False, enable_progress_bar=False,
                         enable_model_summary=False)
    trainer.fit(Plateau(lr=0.01), datamodule=dm)
    resumed = pl.Trainer(max_epochs=4, logger=False, enable_progress_bar=False, enable_model_summary=False,
                         callbacks=[ModelCheckpoint(dirpath="ckpts", monitor="val_loss", save_last=True)])
    resumed.fit(Plateau(lr=0.01), datamodule=dm, ckpt_path="last")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        tested = resumed.test(datamodule=dm)
    resumed_ckpt_path = resumed.ckpt_path

    writer = Writer(write_interval="epoch")
    predictor = pl.Trainer(logger=False, enable_progress_bar=False, enable_model_summary=False, callbacks=[writer])
    model = Plateau.load_from_checkpoint(ckpt.last_model_path, hidden=4, lr=0.5)
    out = predictor.predict(model, datamodule=dm, return_predictions=False)
    saved = torch.load("preds.pt", weights_only=True)
    result = {
        "first_fit": stopped,
        "last_model_path": ckpt.last_model_path,
        "ckpts": sorted(os.listdir("ckpts")),
        "resumed_epoch": resumed.current_epoch,
        "best_model_path": resumed.checkpoint_callback.best_model_path,
        "resumed_global_step": resumed.global_step,
        "test": tested,
        "test_ckpt_path": resumed_ckpt_path,
        "test_warnings": [str(w.message) for w in caught],
        "override_lr": model.hparams.lr,
        "predict_returned": out,
        "n_pred_batches": len(saved["predictions"]),
        "batch_indices": [list(map(list, b)) if b and isinstance(b[0], list) else b for b in saved["batch_indices"]],
    }
    with open("result.json", "w") as f:
        json.dump(result, f, default=str)


if __name__ == "__main__":
    main()
