"""Lightning's ``loops`` package paths.

* :mod:`torchbolt.loops.views`: what ``trainer.fit_loop``, ``trainer.validate_loop``, ``trainer.test_loop`` and
  ``trainer.predict_loop`` are (views over the Trainer's settings and counters, present from ``Trainer(...)``).
* :mod:`torchbolt.loops.progress`: loop progress in Lightning's shape (``.total``/``.current`` counts).
* :mod:`torchbolt.loops.optimization.automatic`: ``Closure``, the step closure ``optimizer_step`` receives.
* :mod:`torchbolt.loops.utilities`: ``check_finite_loss``.

The loops that run live in :mod:`torchbolt.trainer` (``fit_loop``, ``eval_loop``, ``optimization``); Lightning's
loop classes (``_FitLoop``, ``_EvaluationLoop``...) are private there and have no counterpart here.
Nothing is imported eagerly, so ``import torchbolt`` does not pay for this package.
"""
