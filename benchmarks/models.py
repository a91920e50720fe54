"""The benchmark workloads: models, pre-made batches, and the same training written three ways.

Each workload is trained by

* a hand-written PyTorch loop (:func:`raw_fit`), the reference;
* torchbolt (:func:`torchbolt_fit`);
* PyTorch Lightning (:func:`lightning_fit`), only when ``pytorch_lightning`` is installed.

All three start from the same initial weights and see the same batches in the same order, so the
final weights must be identical (the harness checks it). The time of a run is measured from the
first to the last training batch (``on_train_start`` -> ``on_train_end`` for the frameworks), so
it contains exactly the per-step work; the one-off cost of building a Trainer is reported apart.
"""

from __future__ import annotations

import contextlib
import copy
import math
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn


# ---------------------------------------------------------------------------- models
class TinyMLP(nn.Module):
    """The 32-32-2 MLP of the overhead goal: almost no compute, so the framework's cost shows."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 2))

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class MnistMLP(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 10))

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class SmallCNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        )
        self.head = nn.Linear(32 * 7 * 7, 10)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x).flatten(1))


class SmallTransformerLM(nn.Module):
    """A 2-layer causal transformer language model over a 256-token vocabulary (no dropout)."""

    def __init__(self, vocab: int = 256, dim: int = 64, layers: int = 2, heads: int = 4, seq: int = 32) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, dim)
        self.pos = nn.Parameter(torch.randn(seq, dim) * 0.02)
        layer = nn.TransformerEncoderLayer(dim, heads, dim_feedforward=4 * dim, dropout=0.0, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.head = nn.Linear(dim, vocab)
        self.register_buffer("mask", nn.Transformer.generate_square_subsequent_mask(seq), persistent=False)

    def forward(self, tokens: Tensor) -> Tensor:
        h = self.embed(tokens) + self.pos[: tokens.shape[1]]
        return self.head(self.encoder(h, mask=self.mask, is_causal=True))


def _classification_loss(model: nn.Module, batch: tuple[Tensor, Tensor]) -> Tensor:
    x, y = batch
    return F.cross_entropy(model(x), y)


def _lm_loss(model: nn.Module, batch: tuple[Tensor, Tensor]) -> Tensor:
    tokens, targets = batch
    logits = model(tokens)
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))


@dataclass
class Workload:
    """A model, how to make its batches, its loss and its optimizer."""

    name: str
    build: Callable[[], nn.Module]
    make_batch: Callable[[torch.Generator], tuple[Tensor, Tensor]]
    loss: Callable[[nn.Module, Any], Tensor]
    optimizer: Callable[[Any], torch.optim.Optimizer]
    steps: int
    description: str = ""


def _sgd(params: Any) -> torch.optim.Optimizer:
    return torch.optim.SGD(params, lr=0.05, momentum=0.9)


def _adam(params: Any) -> torch.optim.Optimizer:
    return torch.optim.Adam(params, lr=1e-3)


def _tiny_batch(g: torch.Generator) -> tuple[Tensor, Tensor]:
    x = torch.randn(64, 32, generator=g)
    return x, (x[:, 0] > 0).long()


def _mnist_batch(g: torch.Generator) -> tuple[Tensor, Tensor]:
    return torch.randn(64, 1, 28, 28, generator=g), torch.randint(0, 10, (64,), generator=g)


def _cnn_batch(g: torch.Generator) -> tuple[Tensor, Tensor]:
    return torch.randn(32, 1, 28, 28, generator=g), torch.randint(0, 10, (32,), generator=g)


def _lm_batch(g: torch.Generator) -> tuple[Tensor, Tensor]:
    tokens = torch.randint(0, 256, (8, 33), generator=g)
    return tokens[:, :-1].contiguous(), tokens[:, 1:].contiguous()


WORKLOADS: dict[str, Workload] = {
    "tiny_mlp": Workload("tiny_mlp", TinyMLP, _tiny_batch, _classification_loss, _sgd, 2000,
                         "32-32-2 MLP, batch 64, SGD"),
    "mnist_mlp": Workload("mnist_mlp", MnistMLP, _mnist_batch, _classification_loss, _sgd, 600,
                          "784-256-10 MLP, batch 64, SGD"),
    "small_cnn": Workload("small_cnn", SmallCNN, _cnn_batch, _classification_loss, _adam, 150,
                          "2 conv + linear on 28x28, batch 32, Adam"),
    "transformer_lm": Workload("transformer_lm", SmallTransformerLM, _lm_batch, _lm_loss, _adam, 150,
                               "2-layer d=64 causal LM, seq 32, batch 8, Adam"),
}


# ---------------------------------------------------------------------------- run settings
@dataclass(frozen=True)
class Variant:
    """How the training is configured (the same for the three implementations)."""

    name: str
    accumulate: int = 1
    val_every_epoch: bool = False
    progress_bar: bool = False


VARIANTS: dict[str, Variant] = {
    "plain": Variant("plain"),
    "accumulate_4": Variant("accumulate_4", accumulate=4),
    "validation": Variant("validation", val_every_epoch=True),
    "progress_bar": Variant("progress_bar", progress_bar=True),
}


class Batches:
    """Pre-made batches as a sized iterable (not a list: a list would mean several dataloaders)."""

    def __init__(self, batches: list[Any]) -> None:
        self.batches = batches

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self) -> Iterator[Any]:
        return iter(self.batches)


@dataclass
class Prepared:
    """Everything a run needs, made once so every implementation starts from the same state."""

    workload: Workload
    variant: Variant
    device: torch.device
    init_state: dict[str, Tensor]
    train: list[Any]
    val: list[Any] = field(default_factory=list)

    @property
    def steps(self) -> int:
        return len(self.train)


def prepare(workload: Workload, variant: Variant, device: torch.device, steps: int | None = None) -> Prepared:
    steps = steps or workload.steps
    g = torch.Generator().manual_seed(1234)
    torch.manual_seed(1234)
    init_state = {k: v.clone() for k, v in workload.build().state_dict().items()}
    train = [tuple(t.to(device) for t in workload.make_batch(g)) for _ in range(steps)]
    val = [tuple(t.to(device) for t in workload.make_batch(g)) for _ in range(max(1, steps // 10))] if (
        variant.val_every_epoch) else []
    return Prepared(workload, variant, device, init_state, train, val)


def _fresh_model(p: Prepared) -> nn.Module:
    model = p.workload.build()
    model.load_state_dict(p.init_state)
    return model.to(p.device)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Send progress bars and info prints to /dev/null (they would otherwise flood the table)."""
    with open(os.devnull, "w") as sink, contextlib.redirect_stderr(sink), contextlib.redirect_stdout(sink):
        yield


@dataclass
class RunResult:
    seconds: float  # first to last training batch (per-step work only)
    setup_seconds: float  # Trainer construction and fit setup (0 for the raw loop)
    state: dict[str, Tensor]


# ---------------------------------------------------------------------------- raw PyTorch
def _raw_precision(precision: str, device: torch.device, model: nn.Module) -> tuple[Any, Any, torch.dtype | None]:
    """(autocast context factory, GradScaler or None, dtype to cast inputs to) for the hand-written loop."""
    if precision in ("16-mixed", "bf16-mixed"):
        dtype = torch.float16 if precision == "16-mixed" else torch.bfloat16
        scaler = torch.amp.GradScaler(device.type) if precision == "16-mixed" else None
        return (lambda: torch.autocast(device.type, dtype=dtype)), scaler, None
    if precision in ("16-true", "bf16-true"):
        dtype = torch.float16 if precision == "16-true" else torch.bfloat16
        model.to(dtype)
        return contextlib.nullcontext, None, dtype
    return contextlib.nullcontext, None, None


def raw_fit(p: Prepared, sync_debug: bool = False, precision: str = "32-true") -> RunResult:
    """The reference: the loop a user writes by hand, doing the same work as the frameworks.

    Per batch: forward, loss (divided by the accumulation factor), ``zero_grad`` at the start of an
    accumulation window, backward, and ``optimizer.step`` at its end; the loss is kept for logging
    (detached) as ``self.log`` would; validation at the epoch end when the variant asks for it.
    Mixed precision is ``torch.autocast`` (and a ``GradScaler`` for float16), as the PyTorch docs write it.
    """
    model = _fresh_model(p)
    model.train()
    autocast, scaler, input_dtype = _raw_precision(precision, p.device, model)
    optimizer = p.workload.optimizer(model.parameters())
    loss_fn = p.workload.loss
    accumulate = p.variant.accumulate
    n = len(p.train)
    batches: Any = p.train
    last_loss: Tensor | None = None
    val_losses: list[Tensor] = []
    with _quiet() if p.variant.progress_bar else contextlib.nullcontext():
        bar = None
        if p.variant.progress_bar:
            from tqdm import tqdm

            bar = tqdm(total=n)  # created inside `_quiet()`, so it draws to /dev/null like the frameworks' bars
        _sync(p.device)
        start = time.perf_counter()
        with _sync_debug(sync_debug):
            for i, batch in enumerate(batches):
                if input_dtype is not None:
                    batch = tuple(t.to(input_dtype) if t.is_floating_point() else t for t in batch)
                with autocast():
                    loss = loss_fn(model, batch)
                if accumulate > 1:
                    loss = loss / accumulate
                if i % accumulate == 0:
                    optimizer.zero_grad()
                (scaler.scale(loss) if scaler is not None else loss).backward()
                if (i + 1) % accumulate == 0 or i + 1 == n:
                    if scaler is not None:
                        scaler.unscale_(optimizer)
                        scaler.step(optimizer)
                        scaler.update()
                    else:
                        optimizer.step()
                last_loss = loss.detach()  # what `self.log` keeps
                if bar is not None:
                    bar.update(1)
        if p.val:
            model.eval()
            with torch.inference_mode():
                for batch in p.val:
                    val_losses.append(loss_fn(model, batch))
            model.train()
        _sync(p.device)
        seconds = time.perf_counter() - start
        del last_loss, val_losses
        if bar is not None:
            bar.close()
    return RunResult(seconds, 0.0, {k: v.detach().clone() for k, v in model.state_dict().items()})


@contextlib.contextmanager
def _sync_debug(enabled: bool) -> Iterator[None]:
    """Make any host<->device synchronization raise (CUDA only)."""
    if not enabled:
        yield
        return
    torch.cuda.set_sync_debug_mode("error")
    try:
        yield
    finally:
        torch.cuda.set_sync_debug_mode("default")


# ---------------------------------------------------------------------------- frameworks
def _module_class(base: type, p: Prepared, timer: dict[str, float], sync_debug: bool) -> type:
    """A LightningModule subclass of ``base`` (torchbolt's or Lightning's) training ``p``'s workload."""
    loss_fn = p.workload.loss
    make_optimizer = p.workload.optimizer
    device = p.device

    class BenchModule(base):  # type: ignore[misc, valid-type]
        def __init__(self) -> None:
            super().__init__()
            self.model = _fresh_model(p)

        def forward(self, x: Tensor) -> Tensor:
            return self.model(x)

        def training_step(self, batch: Any, batch_idx: int) -> Tensor:
            loss = loss_fn(self.model, batch)
            self.log("loss", loss)
            return loss

        def validation_step(self, batch: Any, batch_idx: int) -> None:
            self.log("val_loss", loss_fn(self.model, batch))

        def configure_optimizers(self) -> torch.optim.Optimizer:
            return make_optimizer(self.model.parameters())

        def on_train_start(self) -> None:
            _sync(device)
            if sync_debug:
                torch.cuda.set_sync_debug_mode("error")
            timer["start"] = time.perf_counter()

        def on_train_end(self) -> None:
            if sync_debug:
                torch.cuda.set_sync_debug_mode("default")
            _sync(device)
            timer["end"] = time.perf_counter()

    if not p.val:
        del BenchModule.validation_step
    return BenchModule


def _trainer_kwargs(p: Prepared, precision: str) -> dict[str, Any]:
    return dict(
        accelerator=p.device.type if p.device.type != "cuda" else "gpu",
        devices=1,
        max_epochs=1,
        precision=precision,
        logger=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        enable_progress_bar=p.variant.progress_bar,
        num_sanity_val_steps=0,
        accumulate_grad_batches=p.variant.accumulate,
        limit_val_batches=len(p.val) if p.val else 0,
    )


def _framework_fit(pl: Any, p: Prepared, precision: str, sync_debug: bool) -> RunResult:
    timer: dict[str, float] = {}
    start = time.perf_counter()
    module_cls = _module_class(pl.LightningModule, p, timer, sync_debug)
    with _quiet():
        model = module_cls()
        trainer = pl.Trainer(**_trainer_kwargs(p, precision))
        trainer.fit(model, Batches(p.train), Batches(p.val) if p.val else None)
    total = time.perf_counter() - start
    seconds = timer["end"] - timer["start"]
    state = {k.removeprefix("model."): v.detach().clone() for k, v in model.state_dict().items()}
    return RunResult(seconds, total - seconds, state)


def torchbolt_fit(p: Prepared, precision: str = "32-true", sync_debug: bool = False) -> RunResult:
    import torchbolt

    return _framework_fit(torchbolt, p, precision, sync_debug)


def lightning_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("pytorch_lightning") is not None


def lightning_fit(p: Prepared, precision: str = "32-true", sync_debug: bool = False) -> RunResult:
    import logging
    import warnings

    import pytorch_lightning

    logging.getLogger("pytorch_lightning").setLevel(logging.ERROR)
    logging.getLogger("lightning").setLevel(logging.ERROR)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return _framework_fit(pytorch_lightning, p, precision, sync_debug)


def same_weights(a: dict[str, Tensor], b: dict[str, Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k].cpu(), b[k].cpu()) for k in a)


def max_abs_diff(a: dict[str, Tensor], b: dict[str, Tensor]) -> float:
    if a.keys() != b.keys():
        return math.inf
    return max((a[k].float().cpu() - b[k].float().cpu()).abs().max().item() for k in a)


def copy_state(state: dict[str, Tensor]) -> dict[str, Tensor]:
    return copy.deepcopy(state)
