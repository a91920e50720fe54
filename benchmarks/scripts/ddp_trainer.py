"""The same data-parallel training with torchbolt (``benchmarks/scaling.py``), launched as a script.

    python benchmarks/scripts/ddp_trainer.py STEPS WARMUP 2    # Trainer(strategy="ddp", devices=2, accelerator="cpu")
    python benchmarks/scripts/ddp_trainer.py STEPS WARMUP 1    # Trainer(accelerator="cpu", devices=1)

With 2 devices the Trainer starts the second process itself (it runs this script again). The module
and the data are those of ``ddp_raw.py``; the Trainer puts a ``DistributedSampler`` in the loader. The
bar, logger, checkpointing and summary are off (the distributed training loop is what is compared);
the loss is logged with ``self.log`` every step. Rank 0 prints ``RESULT`` like ``ddp_raw.py``.
"""

import sys

import torch
import torch.nn.functional as F
from ddp_common import StepTimer, dataset
from torch import nn
from torch.utils.data import DataLoader

import torchbolt as pl


class Tiny(pl.LightningModule):
    def __init__(self, timer: StepTimer) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 2))
        self.timer = timer

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, y = batch
        loss = F.cross_entropy(self.net(x), y)
        self.log("train_loss", loss)
        return loss

    def configure_optimizers(self) -> torch.optim.Optimizer:
        optimizer = torch.optim.SGD(self.parameters(), lr=0.05)
        optimizer.register_step_post_hook(self.timer)
        return optimizer


def main() -> None:
    steps, warmup, devices = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    torch.manual_seed(0)
    data = dataset(steps * devices)
    timer = StepTimer(warmup)
    trainer = pl.Trainer(accelerator="cpu", devices=devices, strategy="ddp" if devices > 1 else "auto", max_epochs=1,
                         logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(Tiny(timer), DataLoader(data, batch_size=None))
    assert trainer.global_step == steps, trainer.global_step
    if trainer.is_global_zero:
        timer.report()


if __name__ == "__main__":
    main()
