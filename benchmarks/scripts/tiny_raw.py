"""A tiny training script written by hand (the reference of ``benchmarks/first_step.py``).

    python benchmarks/scripts/tiny_raw.py

Prints ``MARK <name> <time.time()>`` when the interpreter reaches the script, when the imports are
done, at the first optimizer step and at the end.
"""

import time

print(f"MARK script {time.time()}", flush=True)

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402
from torch.utils.data import DataLoader, TensorDataset  # noqa: E402

print(f"MARK imports {time.time()}", flush=True)


def first_step_mark(optimizer: torch.optim.Optimizer, args: object, kwargs: object) -> None:
    if not getattr(optimizer, "_marked", False):
        optimizer._marked = True  # type: ignore[attr-defined]
        print(f"MARK first_step {time.time()}", flush=True)


def main() -> None:
    torch.manual_seed(0)
    x = torch.randn(64 * 50, 32)
    loader = DataLoader(TensorDataset(x, (x[:, 0] > 0).long()), batch_size=64)
    model = nn.Sequential(nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 2))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    optimizer.register_step_post_hook(first_step_mark)
    for x, y in loader:
        loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    print(f"MARK end {time.time()}", flush=True)


if __name__ == "__main__":
    main()
