"""Start every rank with ``torch.multiprocessing`` (``"ddp_spawn"``, ``"ddp_fork"``, ``"ddp_notebook"``).

The run executes in the new processes; rank 0 sends the trained weights, the trainer state and
the results back, so the caller's model and Trainer look as if the run happened in this process.
When processes fail, each records a summary of its error (see ``_failures``) and the error raised
here ends with a line naming the rank that failed first, whichever process ``torch.multiprocessing``
happened to report.
"""

from __future__ import annotations

import contextlib
import os
import pickle
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import torch
import torch.multiprocessing as mp

from torchbolt.strategies.launchers._failures import (
    first_failure,
    make_failure_dir,
    read_failures,
    record_failure,
    remove_failure_dir,
)
from torchbolt.strategies.launchers.launcher import Launcher, _set_num_threads_if_needed
from torchbolt.utilities.apply_func import move_data_to_device
from torchbolt.utilities.exceptions import MisconfigurationException

if TYPE_CHECKING:
    from torchbolt.strategies.parallel import ParallelStrategy

# when one process fails, how long the others get to exit by themselves before they are terminated
_GRACE_PERIOD_S = 5.0


@dataclass
class WorkerResult:
    """What rank 0 of a spawned run sends back; the Trainer applies the state, counters and metrics.

    The launcher itself only puts the trained weights into the caller's module and the checkpoint
    callback's paths in place (public objects); ``launch`` returns this to the Trainer.
    """

    weights: dict[str, Any] | None
    state: Any
    progress: dict[str, Any]
    callback_metrics: dict[str, Any]
    logged_metrics: dict[str, Any]
    results: Any
    checkpoint_paths: dict[str, Any] = field(default_factory=dict)


@dataclass
class _GlobalState:
    """What a spawned (fresh) interpreter must inherit from the launching one."""

    deterministic: bool
    warn_only: bool
    cudnn_benchmark: bool
    num_threads: int
    rng: dict[str, Any]

    @classmethod
    def capture(cls) -> _GlobalState:
        from torchbolt.utilities.seed import _collect_rng_states

        return cls(
            deterministic=torch.are_deterministic_algorithms_enabled(),
            warn_only=torch.is_deterministic_algorithms_warn_only_enabled(),
            cudnn_benchmark=torch.backends.cudnn.benchmark,
            num_threads=torch.get_num_threads(),
            rng=_collect_rng_states(include_cuda=False),
        )

    def restore(self) -> None:
        from torchbolt.utilities.seed import _set_rng_states

        torch.use_deterministic_algorithms(self.deterministic, warn_only=self.warn_only)
        torch.backends.cudnn.benchmark = self.cudnn_benchmark
        torch.set_num_threads(self.num_threads)
        _set_rng_states(self.rng)


class MultiProcessingLauncher(Launcher):
    """Runs the function in ``num_processes`` new processes started with ``start_method``.

    Args:
        strategy: the parallel strategy (it learns its local rank in each process).
        start_method: ``"spawn"`` (fresh interpreters; everything passed must pickle), ``"fork"`` (copies
            of this process; works in notebooks, not with CUDA initialized) or ``"forkserver"``.
    """

    def __init__(self, strategy: ParallelStrategy,
                 start_method: Literal["spawn", "fork", "forkserver"] = "spawn") -> None:
        if start_method not in mp.get_all_start_methods():
            raise MisconfigurationException(
                f"`start_method={start_method!r}` is not available on this platform; choose one of"
                f" {mp.get_all_start_methods()}."
            )
        self._strategy = strategy
        self._start_method = start_method

    @property
    def is_interactive_compatible(self) -> bool:
        return self._start_method == "fork"

    def launch(self, function: Callable, *args: Any, trainer: Any = None, **kwargs: Any) -> Any:
        strategy = self._strategy
        env = strategy.cluster_environment
        if self._start_method == "fork" and torch.cuda.is_available() and torch.cuda.is_initialized():
            raise MisconfigurationException(
                "CUDA was initialized in this process before `Trainer(strategy='ddp_fork')`/'ddp_notebook' forked;"
                " forked processes cannot use it. Do not touch CUDA (e.g. `.cuda()`, `torch.cuda.*`) before fit,"
                " or use `strategy='ddp_spawn'`."
            )
        os.environ["MASTER_ADDR"] = env.main_address
        os.environ["MASTER_PORT"] = str(env.main_port)
        _set_num_threads_if_needed(strategy.num_processes)
        context = mp.get_context(self._start_method)
        return_queue = context.SimpleQueue()
        global_state = _GlobalState.capture() if self._start_method != "fork" else None
        failure_dir = make_failure_dir()
        try:
            process_context = mp.start_processes(
                self._wrapping_function,
                args=(trainer, function, args, kwargs, return_queue, global_state, failure_dir),
                nprocs=strategy.num_processes,
                start_method=self._start_method,
                join=False,
            )
            try:
                while not process_context.join(grace_period=_GRACE_PERIOD_S):
                    pass
            except Exception as exception:
                _name_first_failure(exception, failure_dir, strategy.node_rank * strategy.num_processes)
                raise
        finally:
            remove_failure_dir(failure_dir)
        # plain pickle bytes: tensors shared through file descriptors would die with the worker
        output = pickle.loads(return_queue.get())
        if trainer is None:
            return output
        return _recover_results(output, trainer)

    def _wrapping_function(self, process_idx: int, trainer: Any, function: Callable, args: Any, kwargs: Any,
                           return_queue: Any, global_state: _GlobalState | None, failure_dir: str | None = None
                           ) -> None:
        if global_state is not None:
            global_state.restore()
            _unshare_module_memory(args, kwargs, trainer)
        strategy = self._strategy
        strategy._set_local_rank(process_idx)
        try:
            results = function(*args, **kwargs)
        except BaseException as exception:
            if failure_dir is not None:
                rank = strategy.node_rank * strategy.num_processes + process_idx
                record_failure(failure_dir, rank, exception, launch=0)
            raise
        if strategy.local_rank == 0 and strategy.node_rank == 0:
            output = _collect_results(trainer, results) if trainer is not None else results
            return_queue.put(pickle.dumps(move_data_to_device(output, "cpu")))
        _leave_process_group(strategy)


def _name_first_failure(exception: BaseException, failure_dir: str, rank_offset: int) -> None:
    """End ``exception``'s printout with a line naming the rank that failed first (a note, printed last).

    ``torch.multiprocessing`` reports the first process it saw exit, which may be one that only failed
    because a peer had (gloo's "Connection closed by peer"); then the first failure's traceback, which no
    process printed, goes into the note too.
    """
    first = first_failure(read_failures(failure_dir))
    if first is None or not hasattr(exception, "add_note"):
        return
    reported = getattr(exception, "error_index", None)
    reported_rank = None if reported is None else rank_offset + reported  # the process index torch reported
    if reported_rank != first.rank and first.traceback:
        exception.add_note(f"Rank {first.rank} failed first:\n{first.traceback.rstrip()}")
    exception.add_note(first.last_line())


def _leave_process_group(strategy: ParallelStrategy) -> None:
    """Destroy the process group together with the other workers, while all of them are still alive.

    A spawned worker ends with a normal interpreter exit: a group still open then is torn down by
    C++ destructors after its peers may have gone, which can abort the process (SIGABRT) and so fail
    a run that finished.
    """
    import torch.distributed as dist

    from torchbolt.utilities.distributed import close_process_groups

    if dist.is_available() and dist.is_initialized():
        strategy.barrier("launcher.exit")
        strategy._release_process_groups()
        close_process_groups()

    def kill(self, signum: int) -> None:
        """The processes are owned by ``torch.multiprocessing``, which ends them when one fails."""

    def __getstate__(self) -> dict[str, Any]:
        return self.__dict__.copy()


def _unshare_module_memory(*objects: Any) -> None:
    """Give this process its own copy of every module's parameters and buffers.

    Spawned processes receive CPU tensors through shared memory: without a copy, every rank would
    update the same weights (each optimizer step applied world-size times).
    """
    from torch import nn

    from torchbolt.utilities.apply_func import apply_to_collection

    seen: set[int] = set()

    def unshare(module: nn.Module) -> nn.Module:
        if id(module) not in seen:
            seen.add(id(module))
            for tensor in [*module.parameters(), *module.buffers()]:
                tensor.data = tensor.data.clone()
        return module

    for obj in objects:
        if obj is not None and hasattr(obj, "lightning_module") and not isinstance(obj, nn.Module):
            obj = obj.lightning_module
        apply_to_collection(obj, nn.Module, unshare)


def _collect_results(trainer: Any, results: Any) -> WorkerResult:
    module = trainer.lightning_module
    weights = None
    if module is not None and trainer.state.fn is not None and trainer.state.fn.value == "fit":
        weights = {k: v.detach().cpu() for k, v in module.state_dict().items()}
    checkpoint = trainer.checkpoint_callback
    paths = {}
    if checkpoint is not None:
        for name in ("best_model_path", "last_model_path"):
            if hasattr(checkpoint, name):
                paths[name] = getattr(checkpoint, name)
    return WorkerResult(
        weights=weights,
        state=trainer.state,
        progress=trainer.run_context.progress.state_dict() if trainer.run_context is not None else {},
        callback_metrics=dict(trainer.callback_metrics),
        logged_metrics=dict(trainer.logged_metrics),
        results=results,
        checkpoint_paths=paths,
    )


def _recover_results(output: WorkerResult, trainer: Any) -> WorkerResult:
    """Put the trained weights into the caller's model and the checkpoint paths into its callback; the
    Trainer applies the rest of ``output`` (state, counters, metrics) itself."""
    module = trainer.lightning_module
    if output.weights is not None and module is not None:
        module.load_state_dict(output.weights)
    checkpoint = trainer.checkpoint_callback
    for name, value in output.checkpoint_paths.items():
        if checkpoint is not None:
            with contextlib.suppress(AttributeError):
                setattr(checkpoint, name, value)
    return output


__all__ = ["MultiProcessingLauncher", "WorkerResult"]
