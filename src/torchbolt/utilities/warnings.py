"""Warning categories, at the module path Lightning scripts import them from.

Example:
    >>> import warnings
    >>> from torchbolt.utilities.warnings import PossibleUserWarning
    >>> warnings.filterwarnings("ignore", category=PossibleUserWarning)
"""

from torchbolt.utilities.rank_zero import LightningDeprecationWarning, PossibleUserWarning, TorchboltDeprecationWarning

__all__ = ["LightningDeprecationWarning", "PossibleUserWarning", "TorchboltDeprecationWarning"]
