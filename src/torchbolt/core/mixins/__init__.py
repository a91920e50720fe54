from torchbolt.core.mixins.hparams_mixin import HyperparametersMixin

__all__ = ["HyperparametersMixin"]
