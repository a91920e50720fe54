"""Support for ``torch.compile``: compiled LightningModules and compiled submodules.

* ``trainer.fit(torch.compile(model))`` trains the LightningModule inside the wrapper, with its
  ``forward`` replaced by the compiled one. Only ``forward`` is compiled: the ``*_step`` methods
  run eagerly around it, so ``self.log`` is never traced and never breaks or re-specializes a graph.
* A compiled submodule (``self.net = torch.compile(net)``) stores its weights under
  ``net._orig_mod.``; a LightningModule's ``state_dict`` drops that segment (checkpoints are the same
  compiled or not), and ``load_state_dict`` accepts keys with or without it.
"""

from __future__ import annotations

from typing import Any

from torch import nn

_ORIG_MOD = "_orig_mod."


def _is_compiled(module: Any) -> bool:
    # `torch._dynamo.eval_frame.OptimizedModule`, without importing torch._dynamo (slow) to check
    return isinstance(module, nn.Module) and type(module).__name__ == "OptimizedModule" and hasattr(
        module, "_orig_mod")


def _unwrap_compiled(model: Any) -> Any:
    """The LightningModule inside ``torch.compile(model)``, its ``forward`` now the compiled one.

    The original ``forward`` is kept in ``_compiler_ctx`` so :func:`to_uncompiled` can restore it.
    """
    module = model._orig_mod
    dynamo_ctx = getattr(model, "dynamo_ctx", None)
    if dynamo_ctx is not None and "_compiler_ctx" not in module.__dict__:
        original_forward = module.forward
        module.__dict__["_compiler_ctx"] = {"dynamo_ctx": dynamo_ctx, "original_forward": original_forward}
        module.__dict__["forward"] = dynamo_ctx(original_forward)
    return module


def from_compiled(model: Any) -> Any:
    """Lightning's name for :func:`_unwrap_compiled`: the module inside a ``torch.compile`` wrapper."""
    return _unwrap_compiled(model)


def to_uncompiled(model: Any) -> Any:
    """The module with its eager ``forward`` back (the inverse of :func:`from_compiled`)."""
    if _is_compiled(model):
        model = model._orig_mod
    ctx = model.__dict__.pop("_compiler_ctx", None)
    if ctx is not None:
        model.__dict__.pop("forward", None)
    return model


def _strip_compiled_prefix(module: nn.Module, state_dict: dict[str, Any], prefix: str, local_metadata: Any) -> None:
    """``state_dict`` post-hook: ``<prefix>net._orig_mod.w`` -> ``<prefix>net.w`` (order kept)."""
    if not any(_ORIG_MOD in key for key in state_dict):
        return
    items = list(state_dict.items())
    state_dict.clear()
    for key, value in items:
        if key.startswith(prefix) and _ORIG_MOD in key[len(prefix):]:
            key = prefix + key[len(prefix):].replace(_ORIG_MOD, "")
        state_dict[key] = value


def _add_compiled_prefix(module: nn.Module, state_dict: dict[str, Any], prefix: str, *args: Any) -> None:
    """``load_state_dict`` pre-hook: map keys saved without ``_orig_mod.`` to the compiled submodules' keys."""
    if not any(_is_compiled(m) for m in module.modules()):
        return
    actual: dict[str, str] = {}
    for name, sub in module.named_modules(remove_duplicate=False):
        base = f"{prefix}{name}." if name else prefix
        for key, value in sub._parameters.items():
            if value is not None:
                actual[(base + key).replace(_ORIG_MOD, "")] = base + key
        for key, value in sub._buffers.items():
            if value is not None and key not in sub._non_persistent_buffers_set:
                actual[(base + key).replace(_ORIG_MOD, "")] = base + key
    for clean, real in actual.items():
        if clean != real and clean in state_dict and real not in state_dict:
            state_dict[real] = state_dict.pop(clean)


def register_compiled_key_hooks(module: nn.Module) -> None:
    """Make ``module.state_dict()`` / ``load_state_dict`` independent of compiled submodules."""
    module.register_state_dict_post_hook(_strip_compiled_prefix)  # type: ignore[arg-type]
    module.register_load_state_dict_pre_hook(_add_compiled_prefix)
