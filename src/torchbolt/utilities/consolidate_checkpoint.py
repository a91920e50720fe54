"""Merge a sharded checkpoint directory (FSDP or model parallel) into one ordinary checkpoint file.

``FSDPStrategy(state_dict_type="sharded")`` and ``ModelParallelStrategy()`` (tensor parallel and/or FSDP2
shards, ``save_distributed_checkpoint=True``) save a directory written through
``torch.distributed.checkpoint`` (one shard file per rank, ``.metadata``) plus ``meta.pt`` with the loop
and callback state. This command reads every shard in one process, no process group needed, and writes
a single file with the full ``state_dict`` (and the full optimizer states) next to that state, which
``LightningModule.load_from_checkpoint`` and ``Trainer.fit(ckpt_path=...)`` read like any checkpoint.

Usage::

    python -m torchbolt.utilities.consolidate_checkpoint epoch3.ckpt                 # -> epoch3.ckpt.consolidated
    python -m torchbolt.utilities.consolidate_checkpoint epoch3.ckpt --output_file model.ckpt
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

import torch

_META_FILE = "meta.pt"  # written by FSDPStrategy/ModelParallelStrategy.save_checkpoint next to the shards


def _check_sharded_dir(path: Path) -> None:
    """Raise unless ``path`` is a sharded checkpoint directory.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: ``path`` is a file, or a directory without ``.metadata`` / ``meta.pt``.
    """
    if not path.exists():
        raise FileNotFoundError(f"Sharded checkpoint directory {str(path)!r} does not exist.")
    if not path.is_dir():
        raise ValueError(
            f"{str(path)!r} is a file, not a sharded checkpoint directory: it is already one checkpoint file."
        )
    missing = [name for name in (".metadata", _META_FILE) if not (path / name).is_file()]
    if missing:
        raise ValueError(
            f"{str(path)!r} is not a torchbolt sharded checkpoint: {missing} missing. Pass the directory that"
            " `trainer.save_checkpoint` created with `FSDPStrategy(state_dict_type='sharded')` or"
            " `ModelParallelStrategy()`."
        )


def _load_shards(path: Path) -> dict[str, Any]:
    """Every tensor of the shard files, full size, on the CPU, nested as it was saved."""
    from torch.distributed.checkpoint import FileSystemReader
    from torch.distributed.checkpoint.default_planner import _EmptyStateDictLoadPlanner
    from torch.distributed.checkpoint.state_dict_loader import _load_state_dict

    state: dict[str, Any] = {}
    # what torch's own `dcp_to_torch_save` does, without its intermediate file: the planner builds the
    # (empty) dict from the metadata, and `no_dist` reads every shard in this one process
    _load_state_dict(state, storage_reader=FileSystemReader(str(path)), planner=_EmptyStateDictLoadPlanner(),
                     no_dist=True)
    return state


def consolidate_checkpoint(checkpoint_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """The checkpoint dict of a sharded checkpoint directory, with the full model and optimizer states.

    Raises:
        FileNotFoundError, ValueError: ``checkpoint_dir`` is not a sharded checkpoint directory.
    """
    path = Path(checkpoint_dir)
    _check_sharded_dir(path)
    checkpoint: dict[str, Any] = torch.load(path / _META_FILE, map_location="cpu", weights_only=False)
    tensors = _load_shards(path)
    checkpoint["state_dict"] = tensors.get("state_dict", {})
    optimizer_states = tensors.get("optimizer_states")
    if isinstance(optimizer_states, dict):  # a list saved without entries comes back keyed by position
        optimizer_states = [optimizer_states[k] for k in sorted(optimizer_states, key=int)]
    if optimizer_states:
        checkpoint["optimizer_states"] = list(optimizer_states)
    return checkpoint


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m torchbolt.utilities.consolidate_checkpoint",
        description="Merge a sharded (FSDP or model-parallel) checkpoint directory into one checkpoint file.",
    )
    parser.add_argument("checkpoint_folder", type=Path, help="the sharded checkpoint directory")
    parser.add_argument("--output_file", type=Path, default=None,
                        help="where to write the file (default: <checkpoint_folder>.consolidated)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the exit status (2 for a path that is not a sharded checkpoint)."""
    args = _parse_args(argv)
    folder: Path = args.checkpoint_folder
    output: Path = args.output_file or folder.with_name(folder.name + ".consolidated")
    try:
        checkpoint = consolidate_checkpoint(folder)
    except (FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    output.parent.mkdir(parents=True, exist_ok=True)
    partial = output.with_name(output.name + ".partial")
    torch.save(checkpoint, partial)
    os.replace(partial, output)  # a crash never leaves a truncated file under the final name
    print(f"Consolidated {folder} into {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
