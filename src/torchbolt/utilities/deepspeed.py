"""DeepSpeed helpers at the module path Lightning scripts import them from.

``deepspeed`` itself is imported only when a helper runs.
"""

from __future__ import annotations

import os

import torch

from torchbolt.strategies.deepspeed import convert_zero_checkpoint_to_fp32_state_dict

#: where the conversion helpers load checkpoint shards (one process gathers everything in host memory)
CPU_DEVICE = torch.device("cpu")


def ds_checkpoint_dir(checkpoint_dir: str | os.PathLike[str], tag: str | None = None) -> str:
    """The directory of one saved DeepSpeed checkpoint inside ``checkpoint_dir``.

    DeepSpeed writes each save under a tag (a subdirectory) and records the newest tag in a file named
    ``latest``. Without ``tag``, that file says which one.

    Raises:
        ValueError: no ``tag`` was given and ``checkpoint_dir`` has no ``latest`` file.
        FileNotFoundError: the tagged directory does not exist.
    """
    directory = os.fspath(checkpoint_dir)
    if tag is None:
        latest = os.path.join(directory, "latest")
        if not os.path.isfile(latest):
            raise ValueError(
                f"Unable to find 'latest' file at {latest}: {directory!r} is not a DeepSpeed checkpoint directory,"
                " or pass the checkpoint's `tag` explicitly."
            )
        with open(latest) as f:
            tag = f.read().strip()
    path = os.path.join(directory, str(tag))
    if not os.path.isdir(path):
        raise FileNotFoundError(f"Directory '{path}' doesn't exist: no DeepSpeed checkpoint with tag {tag!r} there.")
    return path


__all__ = ["CPU_DEVICE", "convert_zero_checkpoint_to_fp32_state_dict", "ds_checkpoint_dir"]
