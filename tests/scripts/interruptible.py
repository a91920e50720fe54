"""Trains slowly until interrupted with SIGINT, then reports what the Trainer saw."""

import sys
import time

import torch

import torchbolt as pl
from torchbolt.demos.boring_classes import BoringModel


class Slow(BoringModel):
    def training_step(self, batch, batch_idx):
        if self.global_step == 2:
            print("TRAINING", flush=True)
        time.sleep(0.01)
        return super().training_step(batch, batch_idx)

    def on_exception(self, exception):
        print(f"MODULE_ON_EXCEPTION {type(exception).__name__}", flush=True)


class Probe(pl.Callback):
    def on_exception(self, trainer, pl_module, exception):
        print(f"CALLBACK_ON_EXCEPTION {type(exception).__name__}", flush=True)

    def teardown(self, trainer, pl_module, stage):
        print(f"TEARDOWN {stage}", flush=True)


if __name__ == "__main__":
    trainer = pl.Trainer(max_epochs=-1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, callbacks=[Probe()])
    model = Slow()
    try:
        trainer.fit(model)
    except SystemExit as stop:  # Ctrl-C ends the fit with SystemExit(1), after the graceful shutdown
        print(f"SYSTEM_EXIT {stop.code}", flush=True)
    print(f"AFTER_FIT interrupted={trainer.interrupted} status={trainer.state.status.value}", flush=True)
    print(f"GRAD_ENABLED {torch.is_grad_enabled()}", flush=True)
    sys.exit(0)
