"""``ModelPruning``: prune weights during training with ``torch.nn.utils.prune``."""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable, Sequence
from copy import deepcopy
from functools import partial
from typing import TYPE_CHECKING, Any

import torch.nn.utils.prune as pytorch_prune
from torch import Tensor, nn

from torchbolt.callbacks.callback import Callback
from torchbolt.core.module import LightningModule
from torchbolt.utilities.exceptions import MisconfigurationException
from torchbolt.utilities.rank_zero import rank_zero_debug, rank_zero_only

if TYPE_CHECKING:
    from torchbolt.trainer.trainer import Trainer

log = logging.getLogger(__name__)

_PYTORCH_PRUNING_FUNCTIONS: dict[str, Callable[..., Any]] = {
    "ln_structured": pytorch_prune.ln_structured,
    "l1_unstructured": pytorch_prune.l1_unstructured,
    "random_structured": pytorch_prune.random_structured,
    "random_unstructured": pytorch_prune.random_unstructured,
}
_PYTORCH_PRUNING_METHOD: dict[str, type[pytorch_prune.BasePruningMethod]] = {
    "ln_structured": pytorch_prune.LnStructured,
    "l1_unstructured": pytorch_prune.L1Unstructured,
    "random_structured": pytorch_prune.RandomStructured,
    "random_unstructured": pytorch_prune.RandomUnstructured,
}
_PARAM_LIST = Sequence[tuple[nn.Module, str]]
_MODULE_CONTAINERS = (LightningModule, nn.Sequential, nn.ModuleList, nn.ModuleDict)


class ModelPruning(Callback):
    """Prune parameters at the end of training epochs, on a schedule, with PyTorch's pruning.

    Pruning adds a mask (``<name>_mask`` buffer, ``<name>_orig`` parameter) that zeroes the pruned
    entries in every forward pass; ``make_pruning_permanent`` removes the masks when training ends,
    leaving plain parameters with zeros. Checkpoints always hold plain parameters (``weight`` =
    ``weight_orig * weight_mask``), so they load into an unpruned model; the masks themselves are
    saved in this callback's state, and a resumed fit re-applies them.

    Example::

        trainer = Trainer(callbacks=[ModelPruning("l1_unstructured", amount=lambda epoch: 0.5 if epoch < 3 else 0)])

    Args:
        pruning_fn: ``"l1_unstructured"``, ``"random_unstructured"``, ``"ln_structured"``,
            ``"random_structured"``, or a ``torch.nn.utils.prune.BasePruningMethod`` subclass.
        parameters_to_prune: ``[(module, "weight"), ...]``; empty: every ``parameter_names`` of every module.
        parameter_names: ``"weight"`` and/or ``"bias"`` (used when ``parameters_to_prune`` is empty).
        use_global_unstructured: rank all parameters together (unstructured methods only).
        amount: the fraction (float) or number (int) of the remaining entries to prune, or
            ``epoch -> amount`` called every epoch (0 prunes nothing).
        apply_pruning: whether to prune, or ``epoch -> bool``.
        make_pruning_permanent: remove the masks when training ends.
        use_lottery_ticket_hypothesis: after pruning, reset the remaining weights to their values at
            the start of training (or ``epoch -> bool``).
        resample_parameters: with the lottery ticket, reset to freshly sampled values instead.
        pruning_dim: the dimension for structured pruning.
        pruning_norm: the norm for ``ln_structured``.
        verbose: 0 silent, 1 log overall sparsity, 2 also per layer.
        prune_on_train_epoch_end: prune at the end of the training epoch (else after validation).

    Raises:
        MisconfigurationException: for an unknown method, missing ``pruning_dim``/``pruning_norm``, a
            structured method with ``use_global_unstructured``, or an invalid ``amount``/``verbose``.
    """

    PARAMETER_NAMES = ("weight", "bias")

    def __init__(
        self,
        pruning_fn: Callable | str,
        parameters_to_prune: _PARAM_LIST = (),
        parameter_names: list[str] | None = None,
        use_global_unstructured: bool = True,
        amount: int | float | Callable[[int], int | float] = 0.5,
        apply_pruning: bool | Callable[[int], bool] = True,
        make_pruning_permanent: bool = True,
        use_lottery_ticket_hypothesis: bool | Callable[[int], bool] = True,
        resample_parameters: bool = False,
        pruning_dim: int | None = None,
        pruning_norm: int | None = None,
        verbose: int = 0,
        prune_on_train_epoch_end: bool = True,
    ) -> None:
        self._use_global_unstructured = use_global_unstructured
        self._parameters_to_prune = parameters_to_prune
        self._use_lottery_ticket_hypothesis = use_lottery_ticket_hypothesis
        self._resample_parameters = resample_parameters
        self._prune_on_train_epoch_end = prune_on_train_epoch_end
        self._parameter_names = parameter_names or self.PARAMETER_NAMES
        self._global_kwargs: dict[str, Any] = {}
        self._original_layers: dict[int, dict[str, Any]] | None = None
        self._pruning_method_name: str | None = None
        self._pending_state: dict[str, Any] | None = None
        for name in self._parameter_names:
            if name not in self.PARAMETER_NAMES:
                raise MisconfigurationException(
                    f"The provided `parameter_names` name: {name} isn't in {self.PARAMETER_NAMES}"
                )
        self.pruning_fn = self._resolve_pruning_fn(pruning_fn, use_global_unstructured, pruning_dim, pruning_norm)
        self._apply_pruning = apply_pruning
        self._make_pruning_permanent = make_pruning_permanent
        if not (isinstance(amount, (int, float)) or callable(amount)):
            raise MisconfigurationException(
                "`amount` should be provided and be either an int, a float or Callable function."
            )
        self.amount = amount
        if verbose not in (0, 1, 2):
            raise MisconfigurationException("`verbose` must be any of (0, 1, 2)")
        self._verbose = verbose

    def _resolve_pruning_fn(self, pruning_fn: Callable | str, use_global: bool, dim: int | None,
                            norm: int | None) -> Any:
        if isinstance(pruning_fn, str):
            name = pruning_fn.lower()
            if name not in _PYTORCH_PRUNING_FUNCTIONS:
                raise MisconfigurationException(
                    f"The provided `pruning_fn` {name} isn't available in PyTorch's built-in functions:"
                    f" {list(_PYTORCH_PRUNING_FUNCTIONS)} "
                )
            kwargs: dict[str, Any] = {}
            if name.endswith("_structured"):
                if dim is None:
                    raise MisconfigurationException(
                        "When requesting `structured` pruning, the `pruning_dim` should be provided."
                    )
                if name == "ln_structured":
                    if norm is None:
                        raise MisconfigurationException(
                            "When requesting `ln_structured` pruning, the `pruning_norm` should be provided."
                        )
                    kwargs["n"] = norm
                kwargs["dim"] = dim
            method: Any = _PYTORCH_PRUNING_METHOD[name] if use_global else _PYTORCH_PRUNING_FUNCTIONS[name]
            self._pruning_method_name = method.__name__
            if use_global:
                self._global_kwargs = kwargs
            else:
                method = partial(method, **kwargs)
        elif self._is_pruning_method(pruning_fn):
            if not use_global:
                raise MisconfigurationException(
                    "PyTorch `BasePruningMethod` is currently only supported with `use_global_unstructured=True`."
                )
            method = pruning_fn
            self._pruning_method_name = pruning_fn.__name__
        else:
            raise MisconfigurationException(
                f"`pruning_fn` is expected to be a str in {list(_PYTORCH_PRUNING_FUNCTIONS)} or a PyTorch"
                f" `BasePruningMethod`. Found: {pruning_fn}. HINT: if passing a `BasePruningMethod`, pass the class,"
                " not an instance"
            )
        if use_global and getattr(method, "PRUNING_TYPE", None) != "unstructured":
            raise MisconfigurationException(
                'Only the "unstructured" PRUNING_TYPE is supported with `use_global_unstructured=True`. Found method'
                f" {method} of type {getattr(method, 'PRUNING_TYPE', None)}. "
            )
        return method

    @staticmethod
    def _is_pruning_method(method: Any) -> bool:
        """Whether ``method`` is a ``torch.nn.utils.prune.BasePruningMethod`` subclass (a class, not an instance)."""
        return inspect.isclass(method) and issubclass(method, pytorch_prune.BasePruningMethod)

    @property
    def state_key(self) -> str:
        # several pruning callbacks (say, one per schedule) keep their masks apart in a checkpoint
        amount = self.amount if isinstance(self.amount, (int, float)) else getattr(self.amount, "__qualname__", "fn")
        return self._generate_state_key(pruning_fn=self._pruning_method_name, amount=amount,
                                        parameter_names=tuple(self._parameter_names))

    def filter_parameters_to_prune(self, parameters_to_prune: _PARAM_LIST = ()) -> _PARAM_LIST:
        """Override to choose which ``(module, name)`` pairs are pruned."""
        return parameters_to_prune

    def make_pruning_permanent(self, module: nn.Module) -> None:
        """Remove the masks and pruning hooks from every submodule of ``module``, keeping the zeros."""
        for submodule in module.modules():
            for key in list(submodule._forward_pre_hooks):
                hook = submodule._forward_pre_hooks[key]
                if isinstance(hook, pytorch_prune.BasePruningMethod):
                    hook.remove(submodule)
                    del submodule._forward_pre_hooks[key]

    def apply_lottery_ticket_hypothesis(self) -> None:
        """Reset the unpruned weights to their values at the start of training (the "winning ticket"),
        or to freshly sampled ones with ``resample_parameters``."""
        assert self._original_layers is not None
        for layer in self._original_layers.values():
            original = layer["data"]
            if self._resample_parameters and callable(getattr(original, "reset_parameters", None)):
                original = deepcopy(original)
                original.reset_parameters()
            for i, name in layer["names"]:
                module, _ = self._parameters_to_prune[i]
                # a pruned parameter lives in `<name>_orig` (`<name>` is recomputed from it and the mask at
                # every forward pass); copying in place keeps the optimizer's reference to it valid
                target = f"{name}_orig" if hasattr(module, f"{name}_orig") else name
                getattr(module, target).data.copy_(getattr(original, name).data)
                _refresh_masked(module, name)

    def _apply_local_pruning(self, amount: int | float) -> None:
        for module, name in self._parameters_to_prune:
            self.pruning_fn(module, name=name, amount=amount)

    def _resolve_global_kwargs(self, amount: int | float) -> dict[str, Any]:
        self._global_kwargs["amount"] = amount
        params = set(inspect.signature(self.pruning_fn).parameters)
        params.discard("self")
        return {k: v for k, v in self._global_kwargs.items() if k in params}

    def _apply_global_pruning(self, amount: int | float) -> None:
        pytorch_prune.global_unstructured(
            self._parameters_to_prune, pruning_method=self.pruning_fn, **self._resolve_global_kwargs(amount)
        )

    @staticmethod
    def _get_pruned_stats(module: nn.Module, name: str) -> tuple[int, int]:
        mask = getattr(module, f"{name}_mask", None)
        if mask is None:
            return 0, 1
        return int((mask == 0).sum()), mask.numel()

    def apply_pruning(self, amount: int | float) -> None:
        """Prune ``parameters_to_prune`` by ``amount`` now."""
        prev_stats = [self._get_pruned_stats(m, n) for m, n in self._parameters_to_prune] if self._verbose else []
        if self._use_global_unstructured:
            self._apply_global_pruning(amount)
        else:
            self._apply_local_pruning(amount)
        if self._verbose:
            curr_stats = [self._get_pruned_stats(m, n) for m, n in self._parameters_to_prune]
            self._log_sparsity_stats(prev_stats, curr_stats, amount=amount)

    @rank_zero_only
    def _log_sparsity_stats(self, prev: list[tuple[int, int]], curr: list[tuple[int, int]],
                            amount: int | float = 0) -> None:
        total = sum(size for _, size in curr)  # the entries the masks cover
        prev_zeros = sum(zeros for zeros, _ in prev)
        curr_zeros = sum(zeros for zeros, _ in curr)
        log.info(
            f"Applied `{self._pruning_method_name}`. Pruned: {prev_zeros}/{total} ({prev_zeros / total:.2%}) ->"
            f" {curr_zeros}/{total} ({curr_zeros / total:.2%})"
        )
        if self._verbose == 2:
            for i, (module, name) in enumerate(self._parameters_to_prune):
                prev_zeros_i, prev_size = prev[i]
                curr_zeros_i, curr_size = curr[i]
                log.info(
                    f"Applied `{self._pruning_method_name}` to `{module!r}.{name}` with amount={amount}. Pruned:"
                    f" {prev_zeros_i} ({prev_zeros_i / prev_size:.2%}) -> {curr_zeros_i} ({curr_zeros_i / curr_size:.2%})"
                )

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        parameters_to_prune = self.sanitize_parameters_to_prune(
            pl_module, self._parameters_to_prune, parameter_names=self._parameter_names
        )
        self._parameters_to_prune = self.filter_parameters_to_prune(parameters_to_prune)
        if self._use_lottery_ticket_hypothesis:
            # one copy of each module's initial parameters, and which of its names are pruned
            self._original_layers = {}
            for i, (module, name) in enumerate(self._parameters_to_prune):
                layer = self._original_layers.setdefault(
                    id(module), {"data": deepcopy(module), "names": []})
                layer["names"].append((i, name))

    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        # resuming: re-apply the saved masks now that the optimizer exists (pruning re-registers the
        # parameter as `<name>_orig`, which must not change the optimizer's parameter order)
        if self._pending_state is not None:
            self._restore(self._pending_state)
            self._pending_state = None

    def _run_pruning(self, current_epoch: int) -> None:
        prune = self._apply_pruning(current_epoch) if callable(self._apply_pruning) else self._apply_pruning
        amount = self.amount(current_epoch) if callable(self.amount) else self.amount
        if not prune or not amount:
            return
        self.apply_pruning(amount)
        lottery = self._use_lottery_ticket_hypothesis
        if lottery(current_epoch) if callable(lottery) else lottery:
            self.apply_lottery_ticket_hypothesis()

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self._prune_on_train_epoch_end:
            rank_zero_debug("`ModelPruning.on_train_epoch_end`. Applying pruning")
            self._run_pruning(pl_module.current_epoch)

    def on_validation_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not trainer.sanity_checking and not self._prune_on_train_epoch_end:
            rank_zero_debug("`ModelPruning.on_validation_epoch_end`. Applying pruning")
            self._run_pruning(pl_module.current_epoch)

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self._make_pruning_permanent:
            rank_zero_debug("`ModelPruning.on_train_end`. Pruning is made permanent for this checkpoint")
            self.make_pruning_permanent(pl_module)

    @staticmethod
    def _permanent_state_dict(state_dict: dict[str, Any]) -> dict[str, Any]:
        """``state_dict`` with every ``x_orig``/``x_mask`` pair replaced by ``x = x_orig * x_mask``."""
        state = dict(state_dict)
        for name in [k[: -len("_mask")] for k in state if k.endswith("_mask")]:
            if name + "_orig" not in state:
                continue
            orig = state.pop(name + "_orig")
            mask = state.pop(name + "_mask")
            state[name] = mask.to(dtype=orig.dtype) * orig
        return state

    def on_save_checkpoint(self, trainer: Trainer, pl_module: LightningModule, checkpoint: dict[str, Any]) -> None:
        # plain parameters, so the checkpoint loads into an unpruned model; the masks go in `state_dict()`
        checkpoint["state_dict"] = self._permanent_state_dict(checkpoint["state_dict"])

    def state_dict(self) -> dict[str, Any]:
        masks = {}
        for i, (module, name) in enumerate(self._parameters_to_prune):
            mask = getattr(module, f"{name}_mask", None)
            if isinstance(mask, Tensor):
                masks[i] = mask.detach().clone()
        originals = {}
        for key, layer in (self._original_layers or {}).items():
            originals[self._layer_index(key)] = {name: getattr(layer["data"], name).detach().clone()
                                                 for _, name in layer["names"]}
        return {"masks": masks, "original_layers": originals}

    def _layer_index(self, module_id: int) -> int:
        return next(i for i, (module, _) in enumerate(self._parameters_to_prune) if id(module) == module_id)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._pending_state = state_dict

    def _restore(self, state: dict[str, Any]) -> None:
        for i, mask in state.get("masks", {}).items():
            module, name = self._parameters_to_prune[int(i)]
            if hasattr(module, f"{name}_mask"):
                pytorch_prune.remove(module, name)
            pytorch_prune.custom_from_mask(module, name, mask.to(getattr(module, name).device))
        for i, params in state.get("original_layers", {}).items():
            module, _ = self._parameters_to_prune[int(i)]
            if self._original_layers is not None and id(module) in self._original_layers:
                original = self._original_layers[id(module)]["data"]
                for name, value in params.items():
                    getattr(original, name).data.copy_(value)

    @staticmethod
    def sanitize_parameters_to_prune(pl_module: LightningModule, parameters_to_prune: _PARAM_LIST = (),
                                     parameter_names: Sequence[str] = ()) -> _PARAM_LIST:
        """Validate ``parameters_to_prune``, or build it from every module's ``parameter_names`` when empty.

        Raises:
            MisconfigurationException: when a module or parameter is not in the model, or for a wrong format.
        """
        parameters = parameter_names or ModelPruning.PARAMETER_NAMES
        current_modules = [m for m in pl_module.modules() if not isinstance(m, _MODULE_CONTAINERS)]
        if not parameters_to_prune:
            # parameters only: a module's other attributes of those names (a flag, a buffer) are not pruned
            return [(m, p) for p in parameters for m in current_modules if isinstance(getattr(m, p, None), nn.Parameter)]
        if (
            isinstance(parameters_to_prune, (list, tuple))
            and all(len(p) == 2 for p in parameters_to_prune)
            and all(isinstance(a, nn.Module) and isinstance(b, str) for a, b in parameters_to_prune)
        ):
            missing_modules, missing_parameters = [], []
            for module, name in parameters_to_prune:
                if not any(module is m for m in current_modules):
                    missing_modules.append(module)
                    continue
                if not hasattr(module, name):
                    missing_parameters.append(name)
            if missing_modules or missing_parameters:
                raise MisconfigurationException(
                    "Some provided `parameters_to_prune` don't exist in the model."
                    f" Found missing modules: {missing_modules} and missing parameters: {missing_parameters}"
                )
            return parameters_to_prune
        raise MisconfigurationException(
            "The provided `parameters_to_prune` should either be list of tuple with 2 elements: (nn.Module,"
            " parameter_name_to_prune) or None"
        )


def _refresh_masked(module: nn.Module, name: str) -> None:
    """Recompute ``module.<name>`` from ``<name>_orig`` and the mask now, as the next forward pass would,
    so the attribute does not show stale values until then."""
    for hook in module._forward_pre_hooks.values():
        if isinstance(hook, pytorch_prune.BasePruningMethod) and hook._tensor_name == name:
            setattr(module, name, hook.apply_mask(module))
