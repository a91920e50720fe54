"""A custom Callback, rank_zero_only, ModelSummary, self.print and the module's trainer-facing properties."""

import json

import torch
from torch.utils.data import DataLoader, TensorDataset

import torchbolt as pl
from torchbolt.callbacks import Callback
from torchbolt.callbacks import ModelSummary as ModelSummaryCallback
from torchbolt.utilities import rank_zero_only
from torchbolt.utilities.model_summary import ModelSummary

EVENTS = []


@rank_zero_only
def record(event):
    EVENTS.append(event)


@pl.utilities.rank_zero_only
def record_too(event):
    EVENTS.append("too:" + event)


class PrintMetrics(Callback):
    def __init__(self):
        self.history = []

    def on_train_start(self, trainer, pl_module):
        record("train_start")

    def on_train_epoch_end(self, trainer, pl_module):
        metrics = trainer.callback_metrics
        self.history.append({k: float(v) for k, v in metrics.items()})
        record_too(f"epoch_end:{trainer.current_epoch}")

    def on_validation_end(self, trainer, pl_module):
        if not trainer.sanity_checking:
            record(f"val_loss={float(trainer.callback_metrics['val_loss']):.4f}")

    def state_dict(self):
        return {"n": len(self.history)}


class Net(pl.LightningModule):
    def __init__(self):
        super().__init__()
        self.encoder = torch.nn.Sequential(torch.nn.Linear(6, 12), torch.nn.ReLU(), torch.nn.Linear(12, 3))
        self.head = torch.nn.Linear(3, 1)
        self.example_input_array = torch.zeros(2, 6)
        self.facts = []

    def forward(self, x):
        return self.head(self.encoder(x))

    def training_step(self, batch, batch_idx):
        x, y = batch
        if batch_idx == 0:
            self.facts.append({"device": str(self.device), "epoch": self.current_epoch, "step": self.global_step,
                               "zero": self.trainer.is_global_zero, "local_rank": self.local_rank,
                               "global_rank": self.global_rank, "training": self.training})
            self.print(f"epoch {self.current_epoch} starts at step {self.global_step}")
        loss = torch.nn.functional.mse_loss(self(x), y)
        self.log("train_loss", loss, on_epoch=True, on_step=False)
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.log("val_loss", torch.nn.functional.mse_loss(self(x), y))

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=1e-2)


def main():
    model = Net()
    summary = ModelSummary(model, max_depth=2)
    x, y = torch.randn(64, 6), torch.randn(64, 1)
    loader = DataLoader(TensorDataset(x, y), batch_size=16)
    callback = PrintMetrics()
    trainer = pl.Trainer(max_epochs=2, callbacks=[callback, ModelSummaryCallback(max_depth=-1)],
                         logger=False, enable_progress_bar=False, default_root_dir="out")
    trainer.fit(model, loader, loader)
    ckpt = torch.load(trainer.checkpoint_callback.best_model_path, weights_only=True)
    result = {
        "summary_str": str(summary),
        "total_parameters": summary.total_parameters,
        "trainable_parameters": summary.trainable_parameters,
        "events": EVENTS,
        "history": callback.history,
        "facts": model.facts,
        "callback_state_keys": list(ckpt["callbacks"]),
        "ckpt_keys": sorted(ckpt),
    }
    with open("result.json", "w") as f:
        json.dump(result, f)


if __name__ == "__main__":
    main()
