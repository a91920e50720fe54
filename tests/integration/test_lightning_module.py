"""LightningModule features used through the Trainer: optimizers, schedulers, manual optimization, helpers."""

from __future__ import annotations

from argparse import Namespace
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import torchbolt as pl
from tests.helpers.models import ClassifierModule, loader, quiet_trainer
from torchbolt.core.optimizer import LightningOptimizer
from torchbolt.utilities.exceptions import MisconfigurationException


class Configurable(ClassifierModule):
    def __init__(self, make: Any) -> None:
        super().__init__()
        self.make = make

    def configure_optimizers(self) -> Any:
        return self.make(self)


def _lr(trainer: pl.Trainer) -> float:
    return trainer.optimizers[0].param_groups[0]["lr"]


def test_single_optimizer() -> None:
    trainer = quiet_trainer(limit_val_batches=0)
    trainer.fit(Configurable(lambda m: torch.optim.Adam(m.parameters(), lr=0.01)))
    assert isinstance(trainer.optimizers[0], torch.optim.Adam) and trainer.global_step == 8


def test_optimizers_and_schedulers_lists_step_schedulers_per_epoch() -> None:
    def make(m: Any) -> Any:
        opt = torch.optim.SGD(m.parameters(), lr=1.0)
        return [opt], [torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)]

    trainer = quiet_trainer(max_epochs=3, limit_val_batches=0)
    trainer.fit(Configurable(make))
    assert _lr(trainer) == pytest.approx(0.125)


def test_flat_optimizer_scheduler_pair() -> None:
    def make(m: Any) -> Any:
        opt = torch.optim.SGD(m.parameters(), lr=1.0)
        return opt, torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)

    trainer = quiet_trainer(max_epochs=2, limit_val_batches=0)
    trainer.fit(Configurable(make))
    assert _lr(trainer) == pytest.approx(0.25)


def test_step_interval_with_frequency() -> None:
    def make(m: Any) -> Any:
        opt = torch.optim.SGD(m.parameters(), lr=1.0)
        sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step", "frequency": 3}}

    trainer = quiet_trainer(limit_val_batches=0)
    trainer.fit(Configurable(make))
    # 8 batches: the scheduler steps after batches 3 and 6
    assert _lr(trainer) == pytest.approx(0.25)


def test_step_frequency_counts_batches_under_accumulation_as_lightning_does() -> None:
    def make(m: Any) -> Any:
        opt = torch.optim.SGD(m.parameters(), lr=1.0)
        sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step", "frequency": 2}}

    trainer = quiet_trainer(limit_val_batches=0, accumulate_grad_batches=2)
    trainer.fit(Configurable(make))
    # optimizer steps happen at batches 2, 4, 6, 8: each is a multiple of the frequency
    assert trainer.global_step == 4
    assert _lr(trainer) == pytest.approx(1 / 16)


def test_reduce_on_plateau_receives_the_monitored_metric() -> None:
    def make(m: Any) -> Any:
        opt = torch.optim.SGD(m.parameters(), lr=1.0)
        sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, mode="max", factor=0.5, patience=0)
        return {"optimizer": opt, "lr_scheduler": sched, "monitor": "const"}

    class Const(Configurable):
        def validation_step(self, batch: Any, batch_idx: int) -> None:
            self.log("const", 1.0)

    trainer = quiet_trainer(max_epochs=3, num_sanity_val_steps=0)
    model = Const(make)
    model.hparams.lr = 0.0  # weights frozen so the metric stays constant
    trainer.fit(model)
    # epoch 0 sets the best value, epochs 1 and 2 see no improvement and halve the lr
    assert _lr(trainer) == pytest.approx(0.25)


def test_plateau_monitor_that_was_never_logged_lists_available_metrics() -> None:
    def make(m: Any) -> Any:
        opt = torch.optim.SGD(m.parameters(), lr=0.1)
        return {"optimizer": opt,
                "lr_scheduler": {"scheduler": torch.optim.lr_scheduler.ReduceLROnPlateau(opt), "monitor": "nope"}}

    with pytest.raises(MisconfigurationException, match=r"metric 'nope' which is not available.*val_loss"):
        quiet_trainer(num_sanity_val_steps=0).fit(Configurable(make))


def test_plateau_without_monitor_is_rejected() -> None:
    def make(m: Any) -> Any:
        opt = torch.optim.SGD(m.parameters(), lr=0.1)
        return [opt], [torch.optim.lr_scheduler.ReduceLROnPlateau(opt)]

    with pytest.raises(MisconfigurationException, match="must include a monitor"):
        quiet_trainer().fit(Configurable(make))


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda m: "adam", "unsupported value: str"),
        (lambda m: {"lr_scheduler": None}, 'must have the key "optimizer"'),
        (lambda m: {"optimizer": torch.optim.SGD(m.parameters(), lr=0.1),
                    "lr_scheduler": {"scheduler": torch.optim.lr_scheduler.StepLR(
                        torch.optim.SGD(m.parameters(), lr=0.1), 1), "interval": "batch"}}, "'step' or 'epoch'"),
    ],
)
def test_unsupported_configure_optimizers_values(make: Any, match: str) -> None:
    with pytest.raises(MisconfigurationException, match=match):
        quiet_trainer().fit(Configurable(make))


def test_configure_optimizers_returning_none_trains_without_updates_but_counts_steps() -> None:
    model = Configurable(lambda m: None)
    before = [p.clone() for p in model.parameters()]
    with pytest.warns(UserWarning, match="returned `None`, this fit will run with no optimizer"):
        trainer = quiet_trainer(limit_val_batches=0)
        trainer.fit(model)
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))
    # as in Lightning, each training batch counts as a step (so `max_steps` ends such a fit)
    assert trainer.global_step == trainer.num_training_batches * trainer.current_epoch > 0


class GAN(pl.LightningModule):
    """Manual optimization with two optimizers, toggling, schedulers and clipping."""

    def __init__(self) -> None:
        super().__init__()
        self.automatic_optimization = False
        self.generator = nn.Linear(4, 8)
        self.discriminator = nn.Linear(8, 1)
        self.steps_seen: list[int] = []

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, _ = batch
        opt_g, opt_d = self.optimizers()
        assert isinstance(opt_g, LightningOptimizer) and isinstance(opt_g, torch.optim.Adam)
        self.toggle_optimizer(opt_d)
        assert not any(p.requires_grad for p in self.generator.parameters())
        fake = self.generator(torch.randn(x.shape[0], 4))
        d_loss = F.softplus(self.discriminator(fake.detach())).mean() + F.softplus(-self.discriminator(x)).mean()
        opt_d.zero_grad()
        self.manual_backward(d_loss)
        self.clip_gradients(opt_d, gradient_clip_val=1.0)
        opt_d.step()
        self.untoggle_optimizer(opt_d)
        assert all(p.requires_grad for p in self.generator.parameters())
        with self.toggled_optimizer(opt_g):
            g_loss = F.softplus(-self.discriminator(self.generator(torch.randn(x.shape[0], 4)))).mean()
            opt_g.zero_grad()
            self.manual_backward(g_loss)
            opt_g.step()
        sched_g, _ = self.lr_schedulers()
        sched_g.step()
        self.steps_seen.append(self.global_step)
        self.log("g_loss", g_loss)
        return g_loss

    def configure_optimizers(self) -> Any:
        opt_g = torch.optim.Adam(self.generator.parameters(), lr=1e-3)
        opt_d = torch.optim.Adam(self.discriminator.parameters(), lr=1e-3)
        scheds = [torch.optim.lr_scheduler.StepLR(opt_g, 1, 0.9), torch.optim.lr_scheduler.StepLR(opt_d, 1, 0.9)]
        return [opt_g, opt_d], scheds


def test_manual_optimization_with_two_optimizers() -> None:
    model = GAN()
    before = model.discriminator.weight.clone()
    trainer = quiet_trainer()
    trainer.fit(model, torch.utils.data.DataLoader(torch.utils.data.TensorDataset(
        torch.randn(16, 8), torch.zeros(16)), batch_size=4))
    # every optimizer.step() call counts, as in Lightning
    assert trainer.global_step == 8
    assert model.steps_seen == [2, 4, 6, 8]
    assert not torch.equal(before, model.discriminator.weight)
    assert trainer.optimizers[0].param_groups[0]["lr"] == pytest.approx(1e-3 * 0.9**4)


def test_manual_backward_under_automatic_optimization_is_an_error() -> None:
    class Wrong(ClassifierModule):
        def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
            loss = super().training_step(batch, batch_idx)
            self.manual_backward(loss)
            return loss

    with pytest.raises(MisconfigurationException, match="only for manual optimization"):
        quiet_trainer().fit(Wrong())


def test_gradient_clip_val_with_manual_optimization_is_an_error() -> None:
    with pytest.raises(MisconfigurationException, match="Automatic gradient clipping is not supported for manual"):
        quiet_trainer(gradient_clip_val=1.0).fit(GAN(), loader())


def test_optimizer_step_override_for_warmup() -> None:
    lrs: list[float] = []

    class Warmup(ClassifierModule):
        def optimizer_step(self, epoch: int, batch_idx: int, optimizer: Any, optimizer_closure: Any = None) -> None:
            for group in optimizer.param_groups:
                group["lr"] = 0.1 * min(1.0, (self.trainer.global_step + 1) / 4)
            lrs.append(optimizer.param_groups[0]["lr"])
            optimizer.step(closure=optimizer_closure)

    quiet_trainer(limit_val_batches=0).fit(Warmup())
    assert lrs == pytest.approx([0.025, 0.05, 0.075, 0.1, 0.1, 0.1, 0.1, 0.1])


def test_optimizer_step_that_skips_the_closure_is_reported() -> None:
    class NoClosure(ClassifierModule):
        def optimizer_step(self, epoch: int, batch_idx: int, optimizer: Any, optimizer_closure: Any = None) -> None:
            optimizer.step()

    with pytest.raises(MisconfigurationException, match="The closure hasn't been executed"):
        quiet_trainer().fit(NoClosure())


def test_lbfgs_reevaluates_the_closure() -> None:
    evaluations: list[int] = []

    class Lbfgs(ClassifierModule):
        def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
            evaluations.append(batch_idx)
            return super().training_step(batch, batch_idx)

        def configure_optimizers(self) -> Any:
            return torch.optim.LBFGS(self.parameters(), lr=0.1, max_iter=3)

    trainer = quiet_trainer(limit_train_batches=2, limit_val_batches=0)
    trainer.fit(Lbfgs())
    assert trainer.global_step == 2
    assert evaluations.count(0) > 1


def test_on_train_batch_start_returning_minus_one_ends_the_epoch() -> None:
    seen: list[tuple[int, int]] = []

    class Early(ClassifierModule):
        def on_train_batch_start(self, batch: Any, batch_idx: int) -> Any:
            if batch_idx == 3:
                return -1
            return None

        def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
            seen.append((self.current_epoch, batch_idx))
            return super().training_step(batch, batch_idx)

    trainer = quiet_trainer(max_epochs=2, limit_val_batches=0)
    trainer.fit(Early())
    assert seen == [(0, 0), (0, 1), (0, 2), (1, 0), (1, 1), (1, 2)]
    assert trainer.current_epoch == 2


def test_freeze_and_unfreeze() -> None:
    model = ClassifierModule()
    model.freeze()
    assert not model.training and not any(p.requires_grad for p in model.parameters())
    model.unfreeze()
    assert model.training and all(p.requires_grad for p in model.parameters())


def test_save_hyperparameters_from_init_arguments() -> None:
    class Hp(pl.LightningModule):
        def __init__(self, lr: float = 0.1, layers: int = 2, backbone: nn.Module | None = None, **kwargs: Any):
            super().__init__()
            self.save_hyperparameters(ignore=["backbone"])

    model = Hp(lr=0.5, backbone=nn.Linear(1, 1), extra="x")
    assert dict(model.hparams) == {"lr": 0.5, "layers": 2, "extra": "x"}
    assert model.hparams.lr == 0.5
    model.hparams.lr = 1.0
    assert model.hparams_initial.lr == 0.5


def test_save_hyperparameters_selected_names_dict_and_namespace() -> None:
    class Selected(pl.LightningModule):
        def __init__(self, a: int, b: int) -> None:
            super().__init__()
            self.save_hyperparameters("a")

    class FromDict(pl.LightningModule):
        def __init__(self, config: dict[str, Any]) -> None:
            super().__init__()
            self.save_hyperparameters(config)

    assert dict(Selected(1, 2).hparams) == {"a": 1}
    assert dict(FromDict({"x": 1}).hparams) == {"x": 1}
    namespace = FromDict(Namespace(y=2))  # type: ignore[arg-type]
    assert namespace.hparams["y"] == 2


def test_save_hyperparameters_in_a_subclass_chain_takes_the_outermost_arguments() -> None:
    class Base(pl.LightningModule):
        def __init__(self, lr: float = 0.1) -> None:
            super().__init__()
            self.save_hyperparameters()

    class Child(Base):
        def __init__(self, lr: float = 0.2, width: int = 3) -> None:
            super().__init__(lr=lr)

    assert dict(Child(width=5).hparams) == {"lr": 0.2, "width": 5}


def test_hyperparameters_reach_the_logger() -> None:
    from tests.helpers.loggers import RecordingLogger

    logger = RecordingLogger()
    quiet_trainer(logger=logger, limit_train_batches=1, limit_val_batches=0).fit(ClassifierModule(lr=0.3))
    assert logger.hparams == [{"lr": 0.3, "features": 8}]
    assert logger.finalized == ["success"]


def test_device_and_dtype_follow_moves() -> None:
    model = ClassifierModule()
    assert model.device == torch.device("cpu") and model.dtype == torch.float32
    model.double()
    assert model.dtype == torch.float64
    model.to(torch.float32)
    assert model.dtype == torch.float32
    model.to("cpu", dtype=torch.float64)
    assert model.dtype == torch.float64 and model.device.type == "cpu"


def test_trainer_reference_and_counters() -> None:
    model = ClassifierModule()
    with pytest.raises(RuntimeError, match="not attached to a `Trainer`"):
        _ = model.trainer
    assert model.current_epoch == 0 and model.global_step == 0 and model.logger is None
    trainer = quiet_trainer(max_epochs=2, limit_val_batches=0)
    trainer.fit(model)
    assert model.trainer is trainer and model.current_epoch == 2 and model.global_step == 16


def test_print_goes_through_the_progress_bar(capsys: pytest.CaptureFixture[str]) -> None:
    class Printing(ClassifierModule):
        def on_train_epoch_end(self) -> None:
            self.print("epoch done", self.current_epoch)

    pl.Trainer(max_epochs=1, logger=False, enable_checkpointing=False, enable_model_summary=False,
               limit_val_batches=0).fit(Printing())
    assert "epoch done 0" in capsys.readouterr().out


def test_example_input_array_adds_shapes_to_the_summary(caplog: pytest.LogCaptureFixture) -> None:
    model = ClassifierModule()
    model.example_input_array = torch.zeros(3, 8)
    quiet_trainer(enable_model_summary=True, limit_train_batches=1, limit_val_batches=0).fit(model)
    out = caplog.text  # the summary is logged (INFO) on the `torchbolt` logger, as Lightning logs it
    assert "In sizes" in out and "[3, 8]" in out and "[3, 2]" in out


def test_to_torchscript_script_and_trace(tmp_path: Any) -> None:
    model = ClassifierModule()
    x = torch.randn(2, 8)
    scripted = model.net  # script the plain submodule graph through the module API
    traced = model.to_torchscript(method="trace", example_inputs=x, file_path=tmp_path / "m.pt")
    assert torch.allclose(traced(x), model(x))
    assert (tmp_path / "m.pt").exists()
    loaded = torch.jit.load(str(tmp_path / "m.pt"))
    assert torch.allclose(loaded(x), scripted(x))
    with pytest.raises(ValueError, match="example_inputs"):
        model.to_torchscript(method="trace")


def test_to_torchscript_scripts_a_lightning_module() -> None:
    from torchbolt.demos.boring_classes import BoringModel

    model = BoringModel()
    scripted = model.to_torchscript()
    x = torch.randn(2, 32)
    assert torch.allclose(scripted(x), model(x))


def test_to_onnx_exports_a_checkable_graph(tmp_path: Any) -> None:
    onnx = pytest.importorskip("onnx", reason="to_onnx needs the onnx package (installed by the test extra)")
    model = ClassifierModule()
    model.example_input_array = torch.randn(1, 8)
    model.to_onnx(tmp_path / "model.onnx")
    graph = onnx.load(str(tmp_path / "model.onnx"))
    onnx.checker.check_model(graph)
    assert model.training


def test_to_onnx_without_example_is_an_error() -> None:
    with pytest.raises(ValueError, match="neither `input_sample` nor"):
        ClassifierModule().to_onnx("model.onnx")


def test_predict_with_several_dataloaders_passes_dataloader_idx() -> None:
    trainer = quiet_trainer()
    predictions = trainer.predict(ClassifierModule(), [loader(16), loader(8)])
    assert predictions is not None and len(predictions) == 2
    assert len(predictions[0]) == 2 and len(predictions[1]) == 1
    assert predictions[0][0].shape == (8,)


def test_predict_return_predictions_false() -> None:
    assert quiet_trainer().predict(ClassifierModule(), return_predictions=False) is None


def test_configure_callbacks_replaces_trainer_callbacks_of_the_same_type() -> None:
    class Marker(pl.Callback):
        def __init__(self, name: str) -> None:
            self.name = name

    class WithCallbacks(ClassifierModule):
        def configure_callbacks(self) -> Any:
            return [Marker("module")]

    trainer = quiet_trainer(callbacks=[Marker("trainer")], limit_train_batches=1, limit_val_batches=0)
    trainer.fit(WithCallbacks())
    markers = [c for c in trainer.callbacks if isinstance(c, Marker)]
    assert [m.name for m in markers] == ["module"]


def test_configure_model_runs_every_stage_and_can_be_idempotent() -> None:
    class Lazy(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.net: nn.Module | None = None
            self.calls = 0

        def configure_model(self) -> None:
            self.calls += 1
            if self.net is None:
                self.net = nn.Linear(8, 2)

        def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
            x, y = batch
            assert self.net is not None
            return F.cross_entropy(self.net(x), y)

        def test_step(self, batch: Any, batch_idx: int) -> None:
            pass

        def configure_optimizers(self) -> Any:
            return torch.optim.SGD(self.parameters(), lr=0.1)

    model = Lazy()
    trainer = quiet_trainer()
    trainer.fit(model, loader())
    trainer.test(model, loader(), verbose=False)
    assert model.calls == 2 and trainer.global_step == 8


def test_batch_transfer_hooks_and_datamodule_precedence() -> None:
    class DM(pl.LightningDataModule):
        def train_dataloader(self) -> Any:
            return loader()

        def on_before_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
            x, y = batch
            return x * 0, y

    class Module(ClassifierModule):
        def on_before_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
            raise AssertionError("the datamodule's hook takes precedence")

        def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
            assert torch.count_nonzero(batch[0]) == 0
            return batch

    with pytest.warns(UserWarning, match="overridden `on_before_batch_transfer` in both"):
        quiet_trainer(limit_val_batches=0).fit(Module(), datamodule=DM())


def test_submodule_train_eval_modes_are_restored_after_evaluation() -> None:
    class Mixed(ClassifierModule):
        def __init__(self) -> None:
            super().__init__()
            self.frozen = nn.Linear(2, 2)
            self.frozen.eval()

        def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
            assert self.net.training and not self.frozen.training
            return super().training_step(batch, batch_idx)

        def validation_step(self, batch: Any, batch_idx: int) -> None:
            assert not self.net.training and not self.frozen.training

    model = Mixed()
    trainer = quiet_trainer(val_check_interval=0.5, max_epochs=2)
    with pytest.warns(UserWarning, match="module\\(s\\) in eval mode"):
        trainer.fit(model)
    trainer.validate(model, verbose=False)
    assert model.net.training and not model.frozen.training


def test_lr_scheduler_step_override_for_a_custom_scheduler() -> None:
    class Custom:
        def __init__(self, optimizer: Any) -> None:
            self.optimizer = optimizer
            self.calls = 0

        def step(self) -> None:
            self.calls += 1

        def state_dict(self) -> dict[str, Any]:
            return {"calls": self.calls}

        def load_state_dict(self, state: dict[str, Any]) -> None:
            self.calls = state["calls"]

    class Module(ClassifierModule):
        def configure_optimizers(self) -> Any:
            opt = torch.optim.SGD(self.parameters(), lr=0.1)
            self.sched = Custom(opt)
            return {"optimizer": opt, "lr_scheduler": {"scheduler": self.sched, "interval": "step"}}

        def lr_scheduler_step(self, scheduler: Any, metric: Any) -> None:
            scheduler.step()

    model = Module()
    quiet_trainer(limit_val_batches=0).fit(model)
    assert model.sched.calls == 8


def test_all_gather_on_one_process_keeps_shapes() -> None:
    gathered: list[Any] = []

    class Gather(ClassifierModule):
        def validation_step(self, batch: Any, batch_idx: int) -> None:
            gathered.append(self.all_gather({"x": batch[0], "n": 3}))

    quiet_trainer(limit_val_batches=1).validate(Gather(), verbose=False)
    assert gathered[0]["x"].shape == (8, 8) and gathered[0]["n"].item() == 3
