"""``Closure``: what ``LightningModule.optimizer_step`` receives as ``optimizer_closure`` under automatic
optimization.

Calling it runs one batch's ``training_step``, then (at the start of an accumulation window)
``optimizer_zero_grad``, then ``backward`` with the ``on_before_backward``/``on_after_backward`` hooks, and
returns the detached loss (``None`` when ``training_step`` returned ``None``). An optimizer may call it several
times (LBFGS); the step fails with a clear error when it was never called. After a call, ``loss`` holds that
loss and ``called`` is ``True``. ``Closure.warning_cache`` holds the "``training_step`` returned ``None``"
warning that is shown once; ``Closure.warning_cache.clear()`` shows it again.

It is the class of the closure the fit loop builds (``isinstance(optimizer_closure, Closure)`` holds in
``optimizer_step``). torchbolt builds it itself: unlike Lightning's, its constructor is not a public API.
"""

from torchbolt.trainer.optimization import _Closure

Closure = _Closure

__all__ = ["Closure"]
