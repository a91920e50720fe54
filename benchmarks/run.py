"""torchbolt benchmarks: per-step overhead against a hand-written loop (and PyTorch Lightning when
installed), import time, and peak memory. ``make bench`` runs ``python benchmarks/run.py``.

Examples::

    python benchmarks/run.py                        # everything on the CPU, Markdown tables on stdout
    python benchmarks/run.py --quick                # fewer steps and rounds (a smoke run)
    python benchmarks/run.py --only overhead --workloads tiny_mlp --variants plain --rounds 40
    python benchmarks/run.py --only checkpoint      # training stall per checkpoint: sync, async, torch.save
    python benchmarks/run.py --only defaults        # Trainer() with every default vs a raw loop with a tqdm bar
    python benchmarks/run.py --only first_step      # `python script.py` to the first optimizer step
    python benchmarks/run.py --only scaling         # 2-process DDP on gloo vs a hand-written DDP loop
    python benchmarks/run.py --gpu                  # CUDA: overhead, no-sync check, bf16/fp16 throughput, memory
    python benchmarks/run.py --output benchmarks/last_run.md
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
from pathlib import Path

_HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(_HERE))
sys.path.insert(0, str(_HERE.parent / "src"))  # this checkout's torchbolt, even without `pip install -e`

import torch  # noqa: E402


def _machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    gpu = f", GPU {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else ""
    return (f"{cpu}, {os.cpu_count()} logical CPUs{gpu}; Python {platform.python_version()}, torch {torch.__version__},"
            f" torch threads {torch.get_num_threads()}")


def _versions() -> str:
    import importlib.metadata as md

    parts = []
    for dist in ("torchbolt", "pytorch-lightning"):
        try:
            parts.append(f"{dist} {md.version(dist)}")
        except md.PackageNotFoundError:
            parts.append(f"{dist} not installed")
    return ", ".join(parts)


def _cpu_sections(args: argparse.Namespace, out: list[str]) -> None:
    import call_counts
    import import_time
    import memory
    import overhead

    device = torch.device("cpu")
    if args.only in (None, "overhead"):
        rows = []
        for workload in args.workloads:
            for variant in args.variants:
                if variant != "plain" and workload != "tiny_mlp" and not args.all_variants:
                    continue  # the variants isolate the framework's cost: the tiny model shows it best
                steps = args.steps or (None if not args.quick else 200)
                row = overhead.measure(workload, variant, args.rounds, device, steps,
                                       with_lightning=not args.no_lightning)
                rows.append(row)
                print(overhead.format_rows([row]).splitlines()[-1], file=sys.stderr, flush=True)
        out += ["## Per-step time on CPU (wall clock, median of paired rounds)", "", overhead.format_rows(rows), "",
                "### The same in process CPU time", "", overhead.format_cpu_rows(rows), ""]
    if args.only in (None, "calls"):
        rows_calls = call_counts.measure("tiny_mlp", args.variants, 300, with_lightning=not args.no_lightning)
        out += ["## Function calls per step (cProfile; independent of machine load)", "",
                call_counts.format_table(rows_calls), ""]
    if args.only in (None, "import"):
        times = import_time.measure(args.import_repeats, with_lightning=not args.no_lightning)
        out += ["## Import time (fresh interpreter per import)", "", import_time.format_table(times), ""]
    if args.only in (None, "memory"):
        impls = ["raw", "torchbolt"]
        if not args.no_lightning:
            from models import lightning_available

            if lightning_available():
                impls.append("lightning")
        rows_mem = {w: memory.measure(w, "plain", args.memory_steps, impls) for w in args.workloads}
        out += ["## Peak memory on CPU (one fresh process per implementation)", "", memory.format_table(rows_mem), ""]
    if args.only in (None, "checkpoint"):
        import checkpoint_stall

        rounds, steps = (1, 30) if args.quick else (3, 60)
        rows_ckpt = checkpoint_stall.measure(rounds, steps, every=10,
                                             log=lambda m: print(m, file=sys.stderr, flush=True))
        out += ["## Training stall per checkpoint on CPU (a ~100 MB model)", "",
                checkpoint_stall.format_table(rows_ckpt, steps, every=10), ""]
    _user_facing_sections(args, out)


def _user_facing_sections(args: argparse.Namespace, out: list[str]) -> None:
    """What a user's script sees: every default on, the time to the first step, and DDP scaling."""
    log = lambda m: print(m, file=sys.stderr, flush=True)  # noqa: E731
    if args.only in (None, "defaults"):
        import defaults

        steps = args.steps or (500 if args.quick else defaults.STEPS)
        processes = args.processes or (1 if args.quick else 4)
        result = defaults.measure(args.rounds if args.rounds_given else (3 if args.quick else 12), steps,
                                  with_lightning=not args.no_lightning, log=log, processes=processes)
        out += [f"## Every default on: `Trainer(max_epochs=1)` vs a raw loop with a tqdm bar (tiny MLP, {steps} steps"
                f" x {result.rounds} rounds in {processes} process{'es' if processes > 1 else ''})", "",
                defaults.format_table(result), ""]
    if args.only in (None, "first_step"):
        import first_step

        times = first_step.measure(args.rounds if args.rounds_given else (2 if args.quick else 7),
                                   with_lightning=not args.no_lightning, log=log)
        out += ["## Time from `python script.py` to the first optimizer step (fresh interpreter per run)", "",
                first_step.format_table(times), ""]
    if args.only in (None, "scaling"):
        import scaling

        steps = args.steps or (300 if args.quick else 600)
        result_ddp = scaling.measure(args.rounds if args.rounds_given else (1 if args.quick else 3), steps,
                                     warmup=min(100, steps // 5), log=log)
        out += ["## DDP on the CPU: 2 processes on gloo, torchbolt vs a hand-written DDP loop (tiny MLP)", "",
                scaling.format_table(result_ddp), ""]


def _gpu_sections(args: argparse.Namespace, out: list[str]) -> None:
    import overhead

    device = torch.device("cuda")
    if args.only in (None, "overhead"):
        rows = [overhead.measure(w, "plain", args.rounds, device, args.steps, with_lightning=not args.no_lightning)
                for w in args.workloads]
        out += ["## Per-step time on CUDA, fp32 (batches pre-made on the GPU)", "", overhead.format_rows(rows), ""]
    if args.only in (None, "sync"):
        _gpu_sync_section(args, out)
    if args.only in (None, "throughput"):
        _gpu_throughput_section(args, out)
    if args.only in (None, "memory"):
        _gpu_memory_section(args, out)


def _gpu_sync_section(args: argparse.Namespace, out: list[str]) -> None:
    from models import VARIANTS, WORKLOADS, prepare, raw_fit, torchbolt_fit

    device = torch.device("cuda")
    lines = ["| workload | precision | raw loop | torchbolt |", "|---|---|---|---|"]
    for workload in args.workloads:
        p = prepare(WORKLOADS[workload], VARIANTS["plain"], device, 20)
        for precision in ("32-true", "bf16-mixed", "bf16-true", "16-mixed"):
            cells = []
            for fit in (raw_fit, torchbolt_fit):
                try:
                    fit(p, precision=precision, sync_debug=True)
                    cells.append("no host sync")
                except RuntimeError as e:
                    cells.append(f"SYNC: {str(e).splitlines()[0][:80]}")
            lines.append(f"| {workload} | {precision} | {cells[0]} | {cells[1]} |")
    out += ['## Host synchronizations inside a step (`torch.cuda.set_sync_debug_mode("error")`)', "",
            "\n".join(lines), "",
            "`16-mixed` synchronizes in both: `GradScaler.step` reads the inf check on the host.", ""]


def _gpu_throughput_section(args: argparse.Namespace, out: list[str]) -> None:
    import overhead

    device = torch.device("cuda")
    rows = []
    for workload in ("small_cnn", "transformer_lm"):
        for precision in ("32-true", "bf16-mixed", "16-mixed", "bf16-true"):
            row = overhead.measure(workload, "plain", args.rounds, device, args.steps, with_lightning=False,
                                   precision=precision)
            row.variant = precision
            rows.append(row)
    out += ["## Throughput by precision on CUDA (the raw loop uses the same precision)", "",
            overhead.format_rows(rows).replace("| variant |", "| precision |"), ""]


def _gpu_memory_section(args: argparse.Namespace, out: list[str]) -> None:
    import memory
    from models import lightning_available, raw_fit, torchbolt_fit

    impls = {"raw": lambda p, precision: raw_fit(p, precision=precision),
             "torchbolt": lambda p, precision: torchbolt_fit(p, precision)}
    if lightning_available() and not args.no_lightning:
        from models import lightning_fit

        impls["lightning"] = lambda p, precision: lightning_fit(p, precision)
    lines = ["| workload | " + " | ".join(f"{k} max allocated MiB" for k in impls) + " |",
             "|---|" + "---|" * len(impls)]
    for workload in args.workloads:
        peaks = memory.gpu_peak_memory(workload, 50, "32-true", impls)
        lines.append(f"| {workload} | " + " | ".join(f"{v / 2**20:.2f}" for v in peaks.values()) + " |")
    out += ["## Peak GPU memory (`torch.cuda.max_memory_allocated`)", "", "\n".join(lines), ""]


def main() -> None:
    from models import VARIANTS, WORKLOADS

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gpu", action="store_true", help="benchmark on CUDA instead of the CPU")
    parser.add_argument("--quick", action="store_true", help="fewer steps and rounds")
    parser.add_argument("--only", choices=["overhead", "calls", "import", "memory", "checkpoint", "defaults",
                                           "first_step", "scaling", "sync", "throughput"])
    parser.add_argument("--workloads", nargs="+", default=list(WORKLOADS), choices=list(WORKLOADS))
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--all-variants", action="store_true", help="run every variant on every workload")
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--steps", type=int, default=None, help="training steps per run (default per workload)")
    parser.add_argument("--import-repeats", type=int, default=None)
    parser.add_argument("--memory-steps", type=int, default=200)
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1: less noise)")
    parser.add_argument("--processes", type=int, default=None,
                        help="defaults: share the rounds among this many fresh interpreters (default 4; 1 with --quick)")
    parser.add_argument("--no-lightning", action="store_true", help="skip PyTorch Lightning even if installed")
    parser.add_argument("--output", type=Path, help="also write the Markdown report here")
    parser.add_argument("--memory-child", nargs=4, metavar=("IMPL", "WORKLOAD", "VARIANT", "STEPS"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.memory_child:
        import memory

        impl, workload, variant, steps = args.memory_child
        print(json.dumps(memory.child(impl, workload, variant, int(steps))))
        return
    args.rounds_given = args.rounds is not None  # the user-facing sections have their own defaults
    args.rounds = args.rounds or (3 if args.quick else 18)  # a multiple of 6: every order of 3 implementations
    args.import_repeats = args.import_repeats or (3 if args.quick else 11)
    if args.quick:
        args.memory_steps = 50
    if args.gpu and not torch.cuda.is_available():
        raise SystemExit("--gpu: torch.cuda.is_available() is False on this machine")
    command = "python benchmarks/run.py " + " ".join(sys.argv[1:])
    out = [f"# torchbolt benchmark run ({'CUDA' if args.gpu else 'CPU'})", "",
           f"- command: `{command.strip()}`",
           f"- date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M UTC}",
           f"- machine: {_machine()}", f"- packages: {_versions()}", ""]
    (_gpu_sections if args.gpu else _cpu_sections)(args, out)
    report = "\n".join(out)
    print(report)
    if args.output:
        args.output.write_text(report + "\n")


if __name__ == "__main__":
    main()
