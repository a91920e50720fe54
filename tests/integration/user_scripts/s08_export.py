"""Load a checkpoint, then export with to_torchscript (script and trace) and to_onnx; outputs must match."""

import json

import torch
from torch.utils.data import DataLoader, TensorDataset

import torchbolt as pl


class Exportable(pl.LightningModule):
    def __init__(self, width: int = 8):
        super().__init__()
        self.save_hyperparameters()
        self.net = torch.nn.Sequential(torch.nn.Linear(5, width), torch.nn.ReLU(), torch.nn.Linear(width, 2))
        self.example_input_array = torch.randn(3, 5)

    def forward(self, x):
        return self.net(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        return torch.nn.functional.cross_entropy(self(x), y)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def main():
    pl.seed_everything(5)
    x = torch.randn(64, 5)
    y = (x[:, 0] > 0).long()
    trainer = pl.Trainer(max_epochs=2, logger=False, enable_progress_bar=False, enable_model_summary=False,
                         default_root_dir="export")
    model = Exportable(width=12)
    trainer.fit(model, DataLoader(TensorDataset(x, y), batch_size=16))
    path = trainer.checkpoint_callback.best_model_path
    trainer.save_checkpoint("manual.ckpt")

    restored = Exportable.load_from_checkpoint(path, map_location="cpu")
    restored.eval()
    sample = torch.randn(4, 5)
    with torch.no_grad():
        expected = restored(sample)
    scripted = restored.to_torchscript()
    torch.jit.save(scripted, "model_script.pt")
    traced = restored.to_torchscript(file_path="model_trace.pt", method="trace")
    loaded = torch.jit.load("model_script.pt")
    restored.to_onnx("model.onnx", export_params=True)
    manual = Exportable.load_from_checkpoint("manual.ckpt")
    result = {
        "width": restored.hparams.width,
        "script_close": bool(torch.allclose(loaded(sample), expected)),
        "trace_close": bool(torch.allclose(traced(sample), expected)),
        "manual_same": all(torch.equal(a, b) for a, b in zip(manual.state_dict().values(),
                                                              restored.state_dict().values())),
        "original_same": all(torch.equal(a, b) for a, b in zip(model.state_dict().values(),
                                                                restored.state_dict().values())),
        "restored_training": restored.training,
        "restored_device": str(restored.device),
    }
    with open("result.json", "w") as f:
        json.dump(result, f)


if __name__ == "__main__":
    main()
