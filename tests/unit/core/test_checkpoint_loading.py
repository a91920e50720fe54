"""``load_from_checkpoint`` on torchbolt and PyTorch Lightning 2.x checkpoints, and hyperparameter files."""

from __future__ import annotations

import os
import pickle
from argparse import Namespace
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import torchbolt as pl
from torchbolt.core.saving import load_hparams_from_yaml, save_hparams_to_yaml


class Classifier(pl.LightningModule):
    def __init__(self, hidden: int = 8, lr: float = 0.1, betas: tuple[float, float] = (0.9, 0.99)) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.net = nn.Sequential(nn.Linear(4, hidden), nn.ReLU(), nn.Linear(hidden, 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        return self(batch[0]).sum()

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=self.hparams.lr)

    def train_dataloader(self) -> DataLoader:
        return DataLoader(TensorDataset(torch.randn(4, 4)), batch_size=2)


def fit_and_save(model: pl.LightningModule, path: Path) -> None:
    trainer = pl.Trainer(max_steps=1, logger=False, enable_progress_bar=False, enable_model_summary=False,
                         enable_checkpointing=False)
    trainer.fit(model)
    trainer.save_checkpoint(path)


class Data(pl.LightningDataModule):
    def __init__(self, batch_size: int = 16, root: str = "data") -> None:
        super().__init__()
        self.save_hyperparameters()


def lightning_checkpoint(model: nn.Module, hyper_parameters: dict[str, Any]) -> dict[str, Any]:
    """A checkpoint laid out exactly as PyTorch Lightning 2.6 writes one from ``ModelCheckpoint(monitor=
    "val_loss", save_last=True)`` plus ``EarlyStopping("val_loss")`` after 2 epochs of 3 batches."""

    def progress(total: int, current: int, keys: tuple[str, ...] = ("ready", "completed", "started", "processed")
                 ) -> dict[str, dict[str, int]]:
        return {"total": dict.fromkeys(keys, total), "current": dict.fromkeys(keys, current)}

    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1)
    batch = {**progress(6, 3), "is_last_batch": True}
    epoch = {"total": {"ready": 2, "completed": 1, "started": 2, "processed": 2},
             "current": {"ready": 2, "completed": 1, "started": 2, "processed": 2}}
    eval_loop = {"state_dict": {}, "batch_progress": {**progress(0, 0), "is_last_batch": False}}
    step = ("ready", "completed")
    return {
        "epoch": 1,
        "global_step": 6,
        "pytorch-lightning_version": "2.6.6",
        "state_dict": model.state_dict(),
        "loops": {
            "fit_loop": {
                "state_dict": {},
                "epoch_loop.state_dict": {"_batches_that_stepped": 6},
                "epoch_loop.batch_progress": batch,
                "epoch_loop.scheduler_progress": progress(2, 1, step),
                "epoch_loop.automatic_optimization.state_dict": {},
                "epoch_loop.automatic_optimization.optim_progress": {"optimizer": {
                    "step": progress(6, 3, step), "zero_grad": progress(6, 3, ("ready", "completed", "started"))}},
                "epoch_loop.manual_optimization.state_dict": {},
                "epoch_loop.manual_optimization.optim_step_progress": progress(0, 0, step),
                "epoch_loop.val_loop.state_dict": {},
                "epoch_loop.val_loop.batch_progress": {**progress(4, 2), "is_last_batch": True},
                "epoch_progress": epoch,
            },
            "validate_loop": eval_loop,
            "test_loop": eval_loop,
            "predict_loop": {"state_dict": {}, "batch_progress": progress(0, 0)},
        },
        "callbacks": {
            "EarlyStopping{'monitor': 'val_loss', 'mode': 'min'}": {
                "wait_count": 0, "stopped_epoch": 0, "best_score": torch.tensor(0.5), "patience": 3,
                "stopping_reason": 0, "stopping_reason_message": None,
            },
            "ModelCheckpoint{'monitor': 'val_loss', 'mode': 'min', 'every_n_train_steps': 0, 'every_n_epochs': 1,"
            " 'train_time_interval': None}": {
                "monitor": "val_loss", "best_model_score": torch.tensor(0.5), "best_model_path": "/ck/epoch=1-step=6.ckpt",
                "current_score": torch.tensor(0.5), "dirpath": "/ck",
                "best_k_models": {"/ck/epoch=1-step=6.ckpt": torch.tensor(0.5)},
                "kth_best_model_path": "/ck/epoch=1-step=6.ckpt", "kth_value": torch.tensor(0.5),
                "last_model_path": "/ck/last.ckpt",
            },
        },
        "optimizer_states": [optimizer.state_dict()],
        "lr_schedulers": [scheduler.state_dict()],
        "hparams_name": "kwargs",
        "hyper_parameters": hyper_parameters,
    }


def test_a_lightning_checkpoint_loads_weights_and_hyperparameters(tmp_path: Path) -> None:
    source = Classifier(hidden=12, lr=0.3)
    path = tmp_path / "lightning.ckpt"
    torch.save(lightning_checkpoint(source, {"hidden": 12, "lr": 0.3, "betas": (0.8, 0.9)}), path)
    model = Classifier.load_from_checkpoint(path)
    assert (model.hparams.hidden, model.hparams.lr, model.hparams.betas) == (12, 0.3, (0.8, 0.9))
    for key, value in source.state_dict().items():
        assert torch.equal(model.state_dict()[key], value)


def test_a_lightning_checkpoint_loads_the_datamodule_hyperparameters(tmp_path: Path) -> None:
    checkpoint = lightning_checkpoint(Classifier(), {"hidden": 8})
    checkpoint["datamodule_hparams_name"] = "kwargs"
    checkpoint["datamodule_hyper_parameters"] = {"batch_size": 64, "root": "/datasets"}
    torch.save(checkpoint, tmp_path / "lightning.ckpt")
    datamodule = Data.load_from_checkpoint(tmp_path / "lightning.ckpt")
    assert (datamodule.hparams.batch_size, datamodule.hparams.root) == (64, "/datasets")


def test_a_torchbolt_state_dict_loads_into_the_plain_module(tmp_path: Path) -> None:
    model = Classifier(hidden=6)
    fit_and_save(model, tmp_path / "tb.ckpt")
    state = torch.load(tmp_path / "tb.ckpt", weights_only=True)["state_dict"]
    plain = nn.Module()
    plain.net = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 2))
    plain.load_state_dict(state)
    assert torch.equal(plain.net[0].weight, model.net[0].weight)


def test_keyword_arguments_override_saved_hyperparameters(tmp_path: Path) -> None:
    torch.save(lightning_checkpoint(Classifier(hidden=12), {"hidden": 12, "lr": 0.3}), tmp_path / "a.ckpt")
    model = Classifier.load_from_checkpoint(tmp_path / "a.ckpt", lr=0.01)
    assert (model.hparams.hidden, model.hparams.lr) == (12, 0.01)


def test_hyperparameters_can_come_from_an_hparams_yaml_file(tmp_path: Path) -> None:
    torch.save(lightning_checkpoint(Classifier(hidden=5), {"hidden": 12}), tmp_path / "a.ckpt")
    save_hparams_to_yaml(tmp_path / "hparams.yaml", {"hidden": 5, "lr": 0.2})
    model = Classifier.load_from_checkpoint(tmp_path / "a.ckpt", hparams_file=tmp_path / "hparams.yaml")
    assert (model.hparams.hidden, model.hparams.lr) == (5, 0.2)


def test_hparams_yaml_is_read_without_constructing_python_objects(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    (tmp_path / "hparams.yaml").write_text(f'lr: !!python/object/apply:os.system ["touch {marker}"]\n')
    with pytest.raises(yaml.constructor.ConstructorError):
        load_hparams_from_yaml(tmp_path / "hparams.yaml")
    assert not marker.exists()


def test_a_malicious_checkpoint_does_not_run_code_through_load_from_checkpoint(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self) -> Any:
            return (os.system, (f"touch {marker}",))

    checkpoint = lightning_checkpoint(Classifier(), {"hidden": 8})
    checkpoint["hyper_parameters"]["lr"] = Payload()
    torch.save(checkpoint, tmp_path / "evil.ckpt")
    with pytest.raises(pickle.UnpicklingError, match="weights_only=False"):
        Classifier.load_from_checkpoint(tmp_path / "evil.ckpt")
    assert not marker.exists()


def test_a_hyperparameter_that_is_not_plain_data_is_saved_as_its_repr_with_a_warning(tmp_path: Path) -> None:
    class WithObject(Classifier):
        def __init__(self, head: Any = None, width: int = 3, lr: float = 0.1) -> None:
            super().__init__(lr=lr)
            self.save_hyperparameters()

    with pytest.warns(UserWarning, match="Hyperparameter 'head' is a object"):
        fit_and_save(WithObject(head=object(), width=7), tmp_path / "m.ckpt")
    saved = torch.load(tmp_path / "m.ckpt", weights_only=True)["hyper_parameters"]
    assert saved["width"] == 7 and saved["head"].startswith("<object object")


def test_hyperparameters_saved_from_one_config_argument_are_passed_back_as_it(tmp_path: Path) -> None:
    class FromConfig(pl.LightningModule):
        def __init__(self, config: dict[str, Any]) -> None:
            super().__init__()
            self.save_hyperparameters(config)
            self.layer = nn.Linear(config["features"], 1)

    checkpoint = {"state_dict": FromConfig({"features": 3}).state_dict(), "hparams_name": "config",
                  "hyper_parameters": {"features": 3}}
    torch.save(checkpoint, tmp_path / "c.ckpt")
    assert FromConfig.load_from_checkpoint(tmp_path / "c.ckpt").layer.in_features == 3


def test_load_from_checkpoint_reads_an_fsspec_url(tmp_path: Path) -> None:
    import fsspec

    with fsspec.open("memory://loading/a.ckpt", "wb") as f:
        torch.save(lightning_checkpoint(Classifier(hidden=4), {"hidden": 4}), f)
    assert Classifier.load_from_checkpoint("memory://loading/a.ckpt").hparams.hidden == 4


def test_non_strict_loading_warns_about_missing_and_unexpected_keys(tmp_path: Path) -> None:
    checkpoint = lightning_checkpoint(Classifier(), {"hidden": 8})
    checkpoint["state_dict"]["extra.weight"] = torch.zeros(1)
    del checkpoint["state_dict"]["net.2.bias"]
    torch.save(checkpoint, tmp_path / "a.ckpt")
    with pytest.raises(RuntimeError, match="Missing key"):
        Classifier.load_from_checkpoint(tmp_path / "a.ckpt")
    with pytest.warns(UserWarning, match=r"missing keys \['net.2.bias'\], unexpected keys \['extra.weight'\]"):
        Classifier.load_from_checkpoint(tmp_path / "a.ckpt", strict=False)


def test_hparams_yaml_roundtrip_writes_plain_data(tmp_path: Path) -> None:
    save_hparams_to_yaml(tmp_path / "h.yaml", Namespace(lr=0.1, layers=(1, 2), name="x"))
    assert load_hparams_from_yaml(tmp_path / "h.yaml") == {"lr": 0.1, "layers": [1, 2], "name": "x"}


def test_fit_resumes_the_counters_of_a_lightning_written_checkpoint(tmp_path: Path) -> None:
    from torchbolt.demos.boring_classes import BoringModel

    torch.save(lightning_checkpoint(BoringModel(), {}), tmp_path / "lightning.ckpt")
    trainer = pl.Trainer(max_epochs=3, limit_train_batches=3, limit_val_batches=0, logger=False,
                         enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False)
    trainer.fit(BoringModel(), ckpt_path=tmp_path / "lightning.ckpt")
    # written at the end of epoch index 1 after 6 steps: one epoch of 3 steps is left
    assert (trainer.current_epoch, trainer.global_step) == (3, 9)
