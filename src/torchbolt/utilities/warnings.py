"""Warning categories, at the module path Lightning scripts import them from.

Example:
    >>> import warnings
    >>> from torchbolt.utilities.warnings import PossibleUserWarning
    >>> warnings.filterwarnings("ignore", category=PossibleUserWarning)
"""

import warnings

from torchbolt.utilities.rank_zero import LightningDeprecationWarning, PossibleUserWarning, TorchboltDeprecationWarning


def disable_possible_user_warnings(module: str = "") -> None:
    """Silence ``PossibleUserWarning`` (hints about likely mistakes), from every module or those matching ``module``.

    ``module`` is a regular expression matched against the warning's module, as in ``warnings.filterwarnings``.
    """
    warnings.filterwarnings("ignore", category=PossibleUserWarning, module=module)


__all__ = [
    "LightningDeprecationWarning",
    "PossibleUserWarning",
    "TorchboltDeprecationWarning",
    "disable_possible_user_warnings",
]
