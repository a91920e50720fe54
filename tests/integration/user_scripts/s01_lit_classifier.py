"""The docs' LitClassifier on sklearn digits: metrics, checkpoints, early stopping, test on best, reload."""

import json
import os

import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from torch import nn
from torch.utils.data import DataLoader, TensorDataset, random_split
from torchmetrics import Accuracy

import torchbolt as pl
from torchbolt.callbacks import EarlyStopping, LearningRateMonitor, ModelCheckpoint
from torchbolt.loggers import CSVLogger


class LitClassifier(pl.LightningModule):
    def __init__(self, hidden_dim: int = 32, learning_rate: float = 1e-2):
        super().__init__()
        self.save_hyperparameters()
        self.l1 = nn.Linear(64, self.hparams.hidden_dim)
        self.l2 = nn.Linear(self.hparams.hidden_dim, 10)
        self.train_acc = Accuracy(task="multiclass", num_classes=10)
        self.val_acc = Accuracy(task="multiclass", num_classes=10)
        self.test_acc = Accuracy(task="multiclass", num_classes=10)

    def forward(self, x):
        return self.l2(torch.relu(self.l1(x)))

    def training_step(self, batch, batch_idx):
        x, y = batch
        logits = self(x)
        loss = F.cross_entropy(logits, y)
        self.train_acc(logits, y)
        self.log("train_loss", loss, prog_bar=True)
        self.log("train_acc", self.train_acc, on_step=True, on_epoch=True)
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        logits = self(x)
        loss = F.cross_entropy(logits, y)
        self.val_acc(logits, y)
        self.log("val_loss", loss, prog_bar=True)
        self.log("val_acc", self.val_acc, on_epoch=True)

    def test_step(self, batch, batch_idx):
        x, y = batch
        logits = self(x)
        self.test_acc(logits, y)
        self.log("test_acc", self.test_acc)
        self.log("test_loss", F.cross_entropy(logits, y))

    def predict_step(self, batch, batch_idx, dataloader_idx=0):
        x, _ = batch
        return self(x).argmax(dim=1)

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=self.hparams.learning_rate)


def main():
    pl.seed_everything(42)
    digits = load_digits()
    x = torch.tensor(digits.data, dtype=torch.float32) / 16.0
    y = torch.tensor(digits.target, dtype=torch.long)
    dataset = TensorDataset(x, y)
    train, val, test = random_split(dataset, [1200, 300, 297])
    train_loader = DataLoader(train, batch_size=64, shuffle=True)
    val_loader = DataLoader(val, batch_size=128)
    test_loader = DataLoader(test, batch_size=128)

    model = LitClassifier(hidden_dim=48)
    checkpoint = ModelCheckpoint(monitor="val_loss", mode="min", save_top_k=2, filename="{epoch}-{val_loss:.2f}")
    trainer = pl.Trainer(
        max_epochs=4,
        callbacks=[EarlyStopping(monitor="val_loss", mode="min", patience=3), checkpoint,
                   LearningRateMonitor(logging_interval="epoch")],
        logger=CSVLogger("logs", name="digits"),
        enable_progress_bar=False,
    )
    trainer.fit(model, train_loader, val_loader)
    test_results = trainer.test(ckpt_path="best", dataloaders=test_loader)
    predictions = trainer.predict(model, dataloaders=test_loader)

    best = LitClassifier.load_from_checkpoint(checkpoint.best_model_path)
    best.eval()
    with torch.no_grad():
        sample = x[:16]
        reloaded = best(sample).argmax(dim=1)
    result = {
        "best_model_path": checkpoint.best_model_path,
        "best_model_score": float(checkpoint.best_model_score),
        "ckpt_files": sorted(os.listdir(checkpoint.dirpath)),
        "hidden_dim": best.hparams.hidden_dim,
        "lr": best.hparams.learning_rate,
        "test_results": test_results,
        "n_pred_batches": len(predictions),
        "pred_shape": list(torch.cat(predictions).shape),
        "pred_acc": float((torch.cat(predictions) == torch.stack([test[i][1] for i in range(len(test))])).float().mean()),
        "reloaded_matches_best": bool(torch.equal(reloaded, best(sample).argmax(dim=1))),
        "reload_training": best.training,
        "log_dir": trainer.logger.log_dir,
        "callback_metrics": sorted(trainer.callback_metrics),
        "current_epoch": trainer.current_epoch,
        "global_step": trainer.global_step,
    }
    with open("result.json", "w") as f:
        json.dump(result, f)


if __name__ == "__main__":
    main()
