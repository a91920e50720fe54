"""Patterns from Lightning's example scripts and docs that a user brings over with only the import changed.

Each test is a condensed version of what such a script does (a GAN whose ``training_step`` takes no
``batch_idx``, the word-level transformer example's data split, the MNIST demo data module), with tiny sizes.
"""

from __future__ import annotations

import io
from contextlib import redirect_stdout

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset, random_split

import torchbolt as pl


def _trainer(**kwargs: object) -> pl.Trainer:
    defaults: dict[str, object] = dict(logger=False, enable_checkpointing=False, enable_model_summary=False,
                                       enable_progress_bar=False, accelerator="cpu")
    defaults.update(kwargs)
    return pl.Trainer(**defaults)  # type: ignore[arg-type]


def _data(n: int = 8) -> DataLoader:
    return DataLoader(TensorDataset(torch.randn(n, 4), torch.randn(n, 1)), batch_size=2)


class StepsWithoutBatchIdx(pl.LightningModule):
    """Every ``*_step`` written as ``def step(self, batch)``, as Lightning's GAN and PPO examples do."""

    def __init__(self) -> None:
        super().__init__()
        self.layer = nn.Linear(4, 1)
        self.seen: list[str] = []

    def training_step(self, batch):  # type: ignore[no-untyped-def]
        self.seen.append("train")
        x, y = batch
        return F.mse_loss(self.layer(x), y)

    def validation_step(self, batch):  # type: ignore[no-untyped-def]
        self.seen.append("val")
        self.log("val_loss", F.mse_loss(self.layer(batch[0]), batch[1]))

    def test_step(self, batch):  # type: ignore[no-untyped-def]
        self.seen.append("test")

    def predict_step(self, batch):  # type: ignore[no-untyped-def]
        return self.layer(batch[0])

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_steps_that_take_no_batch_idx_are_called_with_the_batch_alone() -> None:
    model = StepsWithoutBatchIdx()
    trainer = _trainer(max_epochs=1, num_sanity_val_steps=1)
    trainer.fit(model, _data(), _data(4))
    assert model.seen == ["val"] + ["train"] * 4 + ["val"] * 2 and trainer.global_step == 4
    trainer.test(model, _data(4))
    predictions = trainer.predict(model, _data(4))
    assert model.seen[-2:] == ["test", "test"] and predictions is not None and len(predictions) == 2


class ManualGAN(pl.LightningModule):
    """Manual optimization over two optimizers with ``training_step(self, batch)``."""

    def __init__(self) -> None:
        super().__init__()
        self.automatic_optimization = False
        self.generator = nn.Linear(2, 4)
        self.discriminator = nn.Linear(4, 1)

    def training_step(self, batch):  # type: ignore[no-untyped-def]
        real, _ = batch
        opt_g, opt_d = self.optimizers()
        fake = self.generator(torch.randn(real.size(0), 2))
        self.toggle_optimizer(opt_g)
        g_loss = F.binary_cross_entropy_with_logits(self.discriminator(fake), torch.ones(real.size(0), 1))
        opt_g.zero_grad()
        self.manual_backward(g_loss)
        opt_g.step()
        self.untoggle_optimizer(opt_g)
        self.toggle_optimizer(opt_d)
        d_loss = F.binary_cross_entropy_with_logits(self.discriminator(fake.detach()), torch.zeros(real.size(0), 1))
        opt_d.zero_grad()
        self.manual_backward(d_loss)
        opt_d.step()
        self.untoggle_optimizer(opt_d)
        self.log_dict({"d_loss": d_loss, "g_loss": g_loss})

    def configure_optimizers(self):  # type: ignore[no-untyped-def]
        return torch.optim.Adam(self.generator.parameters()), torch.optim.Adam(self.discriminator.parameters())


def test_manual_gan_progress_line_shows_no_step_total_that_two_optimizers_would_overrun() -> None:
    trainer = pl.Trainer(max_epochs=1, limit_train_batches=3, logger=False, enable_checkpointing=False,
                         enable_model_summary=False, accelerator="cpu")
    out = io.StringIO()
    with redirect_stdout(out):  # not a terminal: the bar writes plain lines
        trainer.fit(ManualGAN(), _data())
    assert trainer.global_step == 6  # both optimizers' steps count
    lines = [line for line in out.getvalue().splitlines() if line.startswith("epoch 1/1")]
    assert lines and "| step 6 |" in lines[-1]  # no "6/3"


def test_transformer_example_splits_off_4000_blocks_and_trains_with_nll_on_flat_targets() -> None:
    from torchbolt.demos import Transformer, WikiText2

    dataset = WikiText2()
    n = len(dataset)
    train, val, _test = random_split(dataset, [n - 4000, 2000, 2000])  # what Lightning's example does
    assert len(train) > 0
    inputs, target = next(iter(DataLoader(val, batch_size=3)))
    model = Transformer(vocab_size=dataset.vocab_size, ninp=8, nhead=2, nhid=8, nlayers=1)
    output = model(inputs, target)
    assert output.shape == (3 * 35, dataset.vocab_size)
    loss = F.nll_loss(output, target.view(-1))  # the example's loss, on the flat output
    assert torch.isfinite(loss)


def test_mnist_demo_has_mnist_sizes_and_learnable_deterministic_digits() -> None:
    from torchbolt.demos.mnist_datamodule import MNIST, MNISTDataModule

    train, test = MNIST("data", train=True, download=True), MNIST("data", train=False)
    assert len(train) == 60_000 and len(test) == 10_000
    image, label = train[0]
    assert image.shape == (1, 28, 28) and image.dtype == torch.float32 and 0 <= image.min() <= image.max() <= 1
    assert isinstance(label, int) and 0 <= label < 10
    assert torch.equal(MNIST("elsewhere")[5][0], train[5][0])  # same data every time, no files needed
    assert not torch.equal(train.data[:100], test.data[:100])
    # the backbone example's split works on it
    assert [len(s) for s in random_split(train, [55000, 5000])] == [55000, 5000]
    normalized = MNIST("data", normalize=(0.5, 0.5))[0][0]
    assert torch.allclose(normalized, (image - 0.5) / 0.5)

    class Classifier(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.net = nn.Sequential(nn.Flatten(), nn.Linear(28 * 28, 10))

        def training_step(self, batch, batch_idx):  # type: ignore[no-untyped-def]
            x, y = batch
            loss = F.cross_entropy(self.net(x), y)
            self.log("train_loss", loss)
            return loss

        def validation_step(self, batch, batch_idx):  # type: ignore[no-untyped-def]
            x, y = batch
            self.log("val_acc", (self.net(x).argmax(1) == y).float().mean())

        def configure_optimizers(self) -> torch.optim.Optimizer:
            return torch.optim.Adam(self.parameters(), lr=1e-2)

    dm = MNISTDataModule(num_workers=0, batch_size=64)
    trainer = _trainer(max_epochs=1, limit_train_batches=60, limit_val_batches=10, num_sanity_val_steps=0)
    trainer.fit(Classifier(), datamodule=dm)
    assert dm.num_classes == 10 and len(dm.dataset_val) == 5000
    assert trainer.callback_metrics["val_acc"] > 0.3  # well above chance (0.1): the glyphs can be told apart


def test_example_availability_flags_import() -> None:
    from torchbolt.utilities.imports import _OMEGACONF_AVAILABLE, _RICH_AVAILABLE, _TORCHVISION_AVAILABLE

    for flag in (_TORCHVISION_AVAILABLE, _OMEGACONF_AVAILABLE, _RICH_AVAILABLE):
        assert isinstance(flag, bool)
    try:
        import torchvision  # noqa: F401
    except ImportError:
        assert _TORCHVISION_AVAILABLE is False
    else:
        pytest.skip("torchvision is installed here")


def test_manual_optimization_steps_its_scheduler_on_the_epochs_last_batch() -> None:
    """The manual-optimization docs step a scheduler when ``self.trainer.is_last_batch`` in ``training_step``."""

    class EpochScheduled(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.automatic_optimization = False
            self.layer = nn.Linear(4, 1)
            self.flags: list[bool] = []

        def on_train_batch_start(self, batch, batch_idx):  # type: ignore[no-untyped-def]
            self.flags.append(self.trainer.is_last_batch)

        def training_step(self, batch, batch_idx):  # type: ignore[no-untyped-def]
            opt = self.optimizers()
            opt.zero_grad()
            self.manual_backward(F.mse_loss(self.layer(batch[0]), batch[1]))
            opt.step()
            self.flags.append(self.trainer.is_last_batch)
            if self.trainer.is_last_batch:
                self.lr_schedulers().step()

        def configure_optimizers(self):  # type: ignore[no-untyped-def]
            opt = torch.optim.SGD(self.parameters(), lr=0.1)
            return [opt], [torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)]

    model = EpochScheduled()
    trainer = _trainer(max_epochs=2)
    trainer.fit(model, _data(6))  # three batches an epoch
    assert model.flags == [False, False, False, False, True, True] * 2  # (start, step) per batch
    assert trainer.optimizers[0].param_groups[0]["lr"] == pytest.approx(0.025)


def test_self_print_in_a_validation_hook_during_the_sanity_check(capsys: pytest.CaptureFixture[str]) -> None:
    """``self.print`` while only the sanity check's placeholder bar exists prints instead of raising."""

    class Printing(StepsWithoutBatchIdx):
        def on_validation_epoch_end(self) -> None:
            self.print("validated at step", self.global_step)

    trainer = pl.Trainer(max_epochs=1, limit_train_batches=1, limit_val_batches=1, logger=False,
                         enable_checkpointing=False, enable_model_summary=False, accelerator="cpu")
    trainer.fit(Printing(), _data(), _data(2))
    out = capsys.readouterr()
    assert "validated at step 0" in out.out + out.err and "validated at step 1" in out.out + out.err


def test_hyperparameters_saved_from_a_namespace_argument_come_back_as_that_argument() -> None:
    """The hyperparameters docs pass an ``argparse.Namespace`` to ``__init__`` and save it whole."""
    from argparse import ArgumentParser

    class FromArgs(pl.LightningModule):
        def __init__(self, args):  # type: ignore[no-untyped-def]
            super().__init__()
            self.save_hyperparameters(args)
            self.layer = nn.Linear(4, self.hparams.hidden)

        def training_step(self, batch, batch_idx):  # type: ignore[no-untyped-def]
            return self.layer(batch[0]).pow(2).mean()

        def configure_optimizers(self) -> torch.optim.Optimizer:
            return torch.optim.SGD(self.parameters(), lr=self.hparams.lr)

    parser = ArgumentParser()
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--hidden", type=int, default=3)
    trainer = _trainer(max_epochs=1, limit_train_batches=1, enable_checkpointing=True)
    trainer.fit(FromArgs(parser.parse_args(["--hidden", "5"])), _data())
    path = trainer.checkpoint_callback.best_model_path
    assert torch.load(path, weights_only=False)["hparams_name"] == "args"
    reloaded = FromArgs.load_from_checkpoint(path)
    assert reloaded.hparams.hidden == 5 and reloaded.layer.out_features == 5 and reloaded.hparams.lr == 0.05


def test_cli_docs_demo_model_takes_out_dim_and_learning_rate_and_trains_on_boring_data() -> None:
    """The CLI docs run ``LightningCLI(DemoModel, BoringDataModule)`` with ``--model.learning_rate``."""
    from torchbolt.cli import LightningCLI
    from torchbolt.demos.boring_classes import BoringDataModule, DemoModel

    cli = LightningCLI(DemoModel, BoringDataModule, args=[
        "fit", "--model.out_dim=4", "--model.learning_rate=0.5", "--trainer.max_steps=2",
        "--trainer.limit_val_batches=1", "--trainer.logger=false", "--trainer.enable_checkpointing=false",
        "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false",
    ])
    assert cli.model.l1.out_features == 4 and cli.model.learning_rate == 0.5
    assert cli.trainer.global_step == 2
    assert cli.trainer.optimizers[0].param_groups[0]["lr"] == 0.5


def test_test_with_ckpt_path_last_and_no_last_file_loads_nothing_and_says_so() -> None:
    """Without ``save_last`` there is no last checkpoint: ``test(ckpt_path="last")`` keeps the current weights."""
    model = StepsWithoutBatchIdx()
    trainer = pl.Trainer(max_epochs=1, logger=False, enable_progress_bar=False, enable_model_summary=False,
                         default_root_dir=".")
    trainer.fit(model, _data())
    assert trainer.checkpoint_callback.best_model_path  # a top-k file exists, but it is not a last file
    with torch.no_grad():
        model.layer.weight.fill_(0.25)  # changed after the checkpoint: loading it would undo this
    with pytest.warns(UserWarning, match="no last checkpoint available"):
        trainer.test(model, _data(2), ckpt_path="last", verbose=False)
    assert trainer.ckpt_path is None and torch.all(model.layer.weight == 0.25)
