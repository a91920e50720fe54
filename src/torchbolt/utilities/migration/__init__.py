"""Upgrading checkpoints written by old PyTorch Lightning versions, at Lightning's module path.

``migrate_checkpoint`` rewrites a loaded checkpoint dict in place; ``pl_legacy_patch`` lets ``torch.load``
unpickle files that refer to classes Lightning has since removed or moved. The command-line tool is
``python -m torchbolt.utilities.upgrade_checkpoint``.
"""

from torchbolt.utilities.migration.utils import migrate_checkpoint, pl_legacy_patch

__all__ = ["migrate_checkpoint", "pl_legacy_patch"]
