"""The same tiny training script with a default ``Trainer`` (``benchmarks/first_step.py``).

    python benchmarks/scripts/tiny_trainer.py torchbolt ROOT_DIR
    python benchmarks/scripts/tiny_trainer.py lightning ROOT_DIR

The first argument picks ``import torchbolt as pl`` or ``import pytorch_lightning as pl``; the rest of
the script is the same. ``Trainer(max_epochs=1, default_root_dir=ROOT_DIR)``: the default logger,
checkpointing, model summary and progress bar. Prints ``MARK <name> <time.time()>`` like
``tiny_raw.py``.
"""

import sys
import time

print(f"MARK script {time.time()}", flush=True)

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402
from torch.utils.data import DataLoader, TensorDataset  # noqa: E402

if sys.argv[1] == "torchbolt":
    import torchbolt as pl
else:
    import pytorch_lightning as pl  # type: ignore[no-redef]

print(f"MARK imports {time.time()}", flush=True)


def first_step_mark(optimizer: torch.optim.Optimizer, args: object, kwargs: object) -> None:
    if not getattr(optimizer, "_marked", False):
        optimizer._marked = True  # type: ignore[attr-defined]
        print(f"MARK first_step {time.time()}", flush=True)


class Tiny(pl.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 2))

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, y = batch
        loss = F.cross_entropy(self.net(x), y)
        self.log("train_loss", loss, prog_bar=True)
        return loss

    def configure_optimizers(self) -> torch.optim.Optimizer:
        optimizer = torch.optim.SGD(self.parameters(), lr=0.05)
        optimizer.register_step_post_hook(first_step_mark)
        return optimizer


def main() -> None:
    torch.manual_seed(0)
    x = torch.randn(64 * 50, 32)
    loader = DataLoader(TensorDataset(x, (x[:, 0] > 0).long()), batch_size=64)
    trainer = pl.Trainer(max_epochs=1, default_root_dir=sys.argv[2])
    trainer.fit(Tiny(), loader)
    print(f"MARK end {time.time()}", flush=True)


if __name__ == "__main__":
    main()
