"""ModelParallelStrategy on CPU with gloo (`python model_parallel_checks.py OUT MODE`).

MODE "tp": tensor parallel over 2 ranks (mesh 1x2); MODE "dp": FSDP2 over 2 ranks (mesh 2x1). Each fits
uninterrupted (gradients clipped by norm, accumulated over 2 batches), then fits one epoch, saves, and
resumes to the end; "tp" also does this with one full file, fits a model created on the meta device, and
finally fits a model without `configure_model`; "dp" also resumes the sharded checkpoint "tp" saved (run
it after "tp", in the same OUT).
"""

from __future__ import annotations

import os
import sys
import warnings
from typing import Any

import torch
from common import IndexedData, trainer_kwargs, write_result
from torch import nn
from torch.utils.data import DataLoader

import torchbolt as pl
from torchbolt.strategies import ModelParallelStrategy


class Block(pl.LightningModule):
    """A transformer-style MLP block with a residual (``up`` split by columns, ``down`` by rows under tensor
    parallelism) and a replicated ``head``; Adam. Without a device mesh it is an ordinary module."""

    def __init__(self, batch_size: int = 8) -> None:
        super().__init__()
        self.up = nn.Linear(4, 16)
        self.down = nn.Linear(16, 4)
        self.head = nn.Linear(4, 2)
        self.batch_size = batch_size
        self.losses: list[float] = []
        self.seen: list[list[int]] = []

    def configure_model(self) -> None:
        mesh = self.device_mesh
        if mesh is None:
            return
        from torch.distributed.fsdp import FSDPModule, fully_shard
        from torch.distributed.tensor.parallel import ColwiseParallel, RowwiseParallel, parallelize_module

        if isinstance(self, FSDPModule):  # parallelized by an earlier run of this Trainer
            return
        if mesh["tensor_parallel"].size() > 1:
            parallelize_module(self, mesh["tensor_parallel"], {"up": ColwiseParallel(), "down": RowwiseParallel()})
        fully_shard(self.head, mesh=mesh["data_parallel"])
        fully_shard(self, mesh=mesh["data_parallel"])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(x + self.down(torch.relu(self.up(x))))

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        idx, x, y = batch
        loss = nn.functional.mse_loss(self(x), y)
        self.losses.append(loss.item())
        self.seen.append(idx.tolist())
        return loss

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.parameters(), lr=0.01)

    def train_dataloader(self) -> DataLoader:
        return DataLoader(IndexedData(32), batch_size=self.batch_size)


# what the single-process reference uses too: clipping must see the norm of the whole model
FIT_OPTIONS: dict[str, Any] = {"gradient_clip_val": 0.3, "accumulate_grad_batches": 2}


class NoConfigureModel(Block):
    configure_model = pl.LightningModule.configure_model  # type: ignore[assignment]


class NotSharded(Block):
    def configure_model(self) -> None:
        """Parallelizes nothing: with data_parallel_size > 1 the gradients are then never averaged."""


def fit_recording_warnings(dp: int, tp: int, **kwargs: Any) -> tuple[pl.Trainer, Block, list[str]]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer, model = fit(dp, tp, **kwargs)
    return trainer, model, [str(w.message) for w in caught]


def full_state(trainer: pl.Trainer, model: Block) -> dict:
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict

    opts = StateDictOptions(full_state_dict=True, cpu_offload=True)
    weights, optim = get_state_dict(model, trainer.strategy.optimizers[0], options=opts)
    return {"weights": weights, "exp_avg": {k: v["exp_avg"] for k, v in optim.get("state", {}).items()},
            "losses": model.losses, "seen": model.seen, "step": trainer.global_step}


def fit(dp: int, tp: int, epochs: int, ckpt_path: str | None = None, distributed: bool = True,
        model: Block | None = None, empty_init: bool = False, seed: int | None = 7) -> tuple[pl.Trainer, Block]:
    if seed is not None:
        pl.seed_everything(seed)
    strategy = ModelParallelStrategy(data_parallel_size=dp, tensor_parallel_size=tp,
                                     save_distributed_checkpoint=distributed)
    trainer = pl.Trainer(**trainer_kwargs(devices=dp * tp, strategy=strategy, max_epochs=epochs, **FIT_OPTIONS))
    if model is None:
        with trainer.init_module(empty_init=empty_init):
            model = Block(batch_size=8 // dp)
    trainer.fit(model, ckpt_path=ckpt_path)
    return trainer, model


def save_and_resume(out: str, mode: str, dp: int, tp: int, kind: str) -> None:
    trainer, model = fit(dp, tp, epochs=1, distributed=kind == "sharded")
    path = os.path.join(out, f"{mode}_{kind}.ckpt")
    trainer.save_checkpoint(path)
    write_result(out, f"{mode}_after_one_epoch_{kind}", trainer.global_rank, full_state(trainer, model))
    trainer, model = fit(dp, tp, epochs=2, ckpt_path=path, distributed=kind == "sharded")
    write_result(out, f"{mode}_resumed_{kind}", trainer.global_rank, full_state(trainer, model))


if __name__ == "__main__":
    OUT, MODE = sys.argv[1], sys.argv[2]
    dp, tp = (1, 2) if MODE == "tp" else (2, 1)
    trainer, model, messages = fit_recording_warnings(dp, tp, epochs=2)
    mesh = trainer.strategy.device_mesh  # type: ignore[attr-defined]
    write_result(OUT, f"{MODE}_uninterrupted", trainer.global_rank,
                 {**full_state(trainer, model), "mesh": list(mesh.shape), "mesh_names": list(mesh.mesh_dim_names or ()),
                  "module_mesh_is_strategy_mesh": model.device_mesh is mesh, "warnings": messages})
    save_and_resume(OUT, MODE, dp, tp, "sharded")
    if MODE == "tp":
        save_and_resume(OUT, MODE, dp, tp, "full")
        # created on the meta device, allocated and initialized after `configure_model` parallelized it
        torch.manual_seed(trainer.global_rank)  # a different random state per rank
        trainer, model = fit(dp, tp, epochs=1, empty_init=True, seed=None)
        from torch.distributed.tensor import DTensor

        full = [p.full_tensor() if isinstance(p, DTensor) else p for p in model.parameters()]
        write_result(OUT, "meta_init", trainer.global_rank,
                     {"losses": model.losses, "weights": full, "meta": any(p.is_meta for p in full)})
        try:
            fit(dp, tp, epochs=1, model=NoConfigureModel())
            error = ""
        except TypeError as e:
            error = str(e)
        write_result(OUT, "no_configure_model", trainer.global_rank, {"error": error})
    else:  # the tensor-parallel shards, loaded into FSDP2 shards on the other mesh dimension
        trainer, model = fit(dp, tp, epochs=2, ckpt_path=os.path.join(OUT, "tp_sharded.ckpt"))
        write_result(OUT, "dp_resumed_from_tp", trainer.global_rank, full_state(trainer, model))
        trainer, model, messages = fit_recording_warnings(dp, tp, epochs=1, model=NotSharded(batch_size=4))
        write_result(OUT, "not_sharded", trainer.global_rank, {"warnings": messages})
