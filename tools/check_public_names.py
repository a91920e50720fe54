"""Compare torchbolt's public names with the installed PyTorch Lightning's, module by module.

    python tools/check_public_names.py            # grouped report; exit 1 on an unexplained gap
    python tools/check_public_names.py --json     # the same report as JSON

Needs ``pytorch-lightning`` importable (the ``[bench]`` extra); torchbolt itself never imports it.

What counts as public in a Lightning module ``pytorch_lightning.a.b`` (no path part starts with ``_``):

- its ``__all__`` when it defines one;
- otherwise the UPPER_CASE constants assigned in the module's own source, and every class or function
  bound at its top level under its own name (an alias ``import X as Y`` does not count) that is written in
  Lightning (its ``__module__`` is a ``pytorch_lightning`` or ``lightning_fabric`` module; imports from
  torch or the standard library are not Lightning's API) and either defined in this module, re-exported
  from the ``lightning_fabric`` module at the same path, or bound in a package's ``__init__`` (a
  package's re-exports are what it is for). A plain module's imports for its own use are not its API.

Each such name must be importable from ``torchbolt.a.b``. A gap is one of:

- on ``ALLOWED``: a deliberate difference (hardware torchbolt does not support, Lightning internals it does
  not mirror), printed with its reason and not a failure;
- on ``NOT_YET``: known, planned work, printed as a failure;
- anything else: a failure.

A module that cannot be imported because an optional dependency of Lightning is missing is skipped and
listed. The exit code is 1 when any failure is printed, 0 otherwise.
"""

from __future__ import annotations

import argparse
import ast
import importlib
import inspect
import json
import pkgutil
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[1]
LIGHTNING_PACKAGES = ("pytorch_lightning", "lightning_fabric")

# Deliberate gaps. A key is a module path relative to the package ("trainer.connectors": the module and
# everything under it) or "module:name" for one name. Every entry says why.
ALLOWED: dict[str, str] = {
    # Lightning internals that torchbolt organizes differently (docs/design.md); users do not import them.
    "loops": "Lightning's loop classes are internal; torchbolt's loops live in torchbolt.trainer (fit_loop, eval_loop),"
             " and torchbolt.loops has views and the public names (Closure, check_finite_loss)",
    "trainer.connectors": "Lightning's Trainer connectors are internal; torchbolt resolves them in trainer.config/resolve",
    "overrides": "internal wrappers for DDP/DP module forwarding; torchbolt's strategies wrap modules themselves",
    "trainer.call": "internal hook-calling helpers; torchbolt.trainer.hooks.HookDispatcher owns hook calls",
    "trainer.configuration_validator": "internal argument checks; torchbolt checks in trainer.config and trainer.setup",
    # Hardware back-ends torchbolt does not support.
    "accelerators.xla": "XLA/TPU accelerator: torchbolt has only experimental single-device TPU support",
    "plugins.precision.xla": "XLA precision plug-in: needs torch_xla, not supported",
    "strategies.xla": "XLA/TPU strategies: needs torch_xla, not supported",
    "strategies.single_xla": "XLA/TPU strategies: needs torch_xla, not supported",
    "strategies.launchers.xla": "XLA/TPU launcher: needs torch_xla, not supported",
    "plugins.environments.xla": "XLA cluster environment: needs torch_xla, not supported",
    "plugins.environments:XLAEnvironment": "XLA cluster environment: needs torch_xla, not supported",
    "plugins.io.xla_plugin": "XLA checkpoint I/O: needs torch_xla, not supported",
    "plugins.io:XLACheckpointIO": "XLA checkpoint I/O: needs torch_xla, not supported",
    "plugins:XLACheckpointIO": "XLA checkpoint I/O: needs torch_xla, not supported",
    "profilers.xla": "XLA profiler: needs torch_xla, not supported",
    "profilers:XLAProfiler": "XLA profiler: needs torch_xla, not supported",
}

# Known gaps still to close: printed as failures so that the report stays honest.
NOT_YET: dict[str, str] = {
}


@dataclass
class Report:
    """The outcome of one comparison."""

    lightning_version: str
    modules_checked: int = 0
    skipped: dict[str, str] = field(default_factory=dict)  # Lightning module -> why it was not imported
    missing_modules: dict[str, str] = field(default_factory=dict)  # relative path -> "" / allow or not-yet reason
    missing_names: dict[str, list[str]] = field(default_factory=dict)  # relative module path -> names
    allowed: dict[str, str] = field(default_factory=dict)  # gap -> reason
    not_yet: dict[str, str] = field(default_factory=dict)  # gap -> reason
    failures: list[str] = field(default_factory=list)  # gaps with no entry


def _is_private(modname: str) -> bool:
    return any(part.startswith("_") for part in modname.split("."))


def _walk(package: ModuleType) -> list[str]:
    names = [package.__name__]
    for info in pkgutil.walk_packages(package.__path__, prefix=package.__name__ + "."):
        if not _is_private(info.name):
            names.append(info.name)
    return sorted(names)


def _constants_in_source(module: ModuleType) -> set[str]:
    """UPPER_CASE names assigned at the top level of the module's own source."""
    try:
        source = inspect.getsource(module)
    except (OSError, TypeError):
        return set()
    found: set[str] = set()
    for node in ast.parse(source).body:
        targets: list[ast.expr] = []
        if isinstance(node, ast.Assign):
            targets = list(node.targets)
        elif isinstance(node, ast.AnnAssign):
            targets = [node.target]
        for target in targets:
            if isinstance(target, ast.Name) and target.id.isupper() and not target.id.startswith("_"):
                found.add(target.id)
    return found


def public_names(module: ModuleType) -> set[str]:
    """The names a user may import from ``module`` under the rule in this file's docstring."""
    declared = getattr(module, "__all__", None)
    if declared is not None:
        return {str(name) for name in declared if not str(name).startswith("_")}
    modname = module.__name__
    is_package = hasattr(module, "__path__")
    # the lightning_fabric module at the same path: Lightning re-exports its names as its own
    twin = "lightning_fabric" + modname[modname.index("."):] if "." in modname else "lightning_fabric"
    names = _constants_in_source(module)
    for name, value in vars(module).items():
        if name.startswith("_") or not (inspect.isclass(value) or inspect.isfunction(value)):
            continue
        if getattr(value, "__name__", None) != name:  # an alias (``import X as FabricX``) is not API
            continue
        owner = getattr(value, "__module__", "") or ""
        if owner.split(".")[0] not in LIGHTNING_PACKAGES:
            continue
        if is_package or owner in (modname, twin):
            names.add(name)
    return names


def is_package_with_public_children(module: ModuleType) -> bool:
    """Whether ``module`` is a package with at least one public submodule (it is then worth mirroring)."""
    path = getattr(module, "__path__", None)
    return path is not None and any(not info.name.startswith("_") for info in pkgutil.iter_modules(path))


def _gap_reason(table: dict[str, str], relative: str, name: str | None) -> str | None:
    """The reason recorded in ``table`` for a gap at ``relative`` (``name`` in it, or the whole module)."""
    if name is not None and f"{relative}:{name}" in table:
        return table[f"{relative}:{name}"]
    parts = relative.split(".")
    for depth in range(len(parts), 0, -1):
        key = ".".join(parts[:depth])
        if key in table:
            return table[key]
    return None


def _record(report: Report, relative: str, name: str | None) -> None:
    gap = relative if name is None else f"{relative}:{name}"
    reason = _gap_reason(ALLOWED, relative, name)
    if reason is not None:
        report.allowed[gap] = reason
        return
    reason = _gap_reason(NOT_YET, relative, name)
    if reason is not None:
        report.not_yet[gap] = reason
    report.failures.append(gap)


def compare(lightning_package: str = "pytorch_lightning") -> Report:
    """Walk ``lightning_package`` and check each public module's public names against torchbolt."""
    warnings.simplefilter("ignore")
    package = importlib.import_module(lightning_package)
    report = Report(lightning_version=str(getattr(package, "__version__", "?")))
    for modname in _walk(package):
        try:
            module = importlib.import_module(modname)
        except ImportError as err:  # an optional dependency of Lightning's (torch_xla, deepspeed, ...)
            report.skipped[modname] = f"{type(err).__name__}: {err}"
            continue
        except Exception as err:  # some modules raise other errors when a dependency is half-present
            report.skipped[modname] = f"{type(err).__name__}: {err}"
            continue
        report.modules_checked += 1
        relative = modname[len(lightning_package) + 1 :]
        ours_name = "torchbolt" + ("." + relative if relative else "")
        wanted = public_names(module)
        try:
            ours = importlib.import_module(ours_name)
        except ModuleNotFoundError as err:
            if err.name is not None and ours_name.startswith(err.name):
                report.missing_modules[relative] = ""
                if not wanted and not is_package_with_public_children(module):
                    report.allowed[relative] = "Lightning's module has no public names"
                else:
                    _record(report, relative, None)
                continue
            raise
        missing = sorted(name for name in wanted if not hasattr(ours, name))
        if missing:
            report.missing_names[relative or "(top level)"] = missing
            for name in missing:
                _record(report, relative, name)
    return report


def _print(report: Report) -> None:
    print(f"Lightning {report.lightning_version}: {report.modules_checked} public modules compared with torchbolt")
    if report.skipped:
        print(f"\nSkipped ({len(report.skipped)}: Lightning could not import them here)")
        for modname, why in sorted(report.skipped.items()):
            print(f"  {modname}: {why[:110]}")
    if report.allowed:
        print(f"\nDeliberate gaps ({len(report.allowed)})")
        for gap, reason in sorted(report.allowed.items()):
            print(f"  {gap}: {reason}")
    unplanned = [gap for gap in report.failures if gap not in report.not_yet]
    if report.not_yet:
        print(f"\nNOT YET ({len(report.not_yet)}: known gaps still to close; they fail the check)")
        for gap, reason in sorted(report.not_yet.items()):
            print(f"  {gap}: {reason}")
    if unplanned:
        print(f"\nMISSING ({len(unplanned)}: torchbolt module or name, not on any list)")
        groups: dict[str, list[str]] = {}
        for gap in unplanned:
            module, _, name = gap.partition(":")
            groups.setdefault(module, []).append(name or "(whole module)")
        for module, names in sorted(groups.items()):
            print(f"  torchbolt{'.' + module if module else ''}: {', '.join(names)}")
    if report.failures:
        pass
    else:
        print("\nNo missing public names outside the deliberate gaps.")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT / "src"))
    try:
        importlib.import_module("pytorch_lightning")
    except ImportError:
        print("pytorch-lightning is not installed; install the [bench] extra to run this check", file=sys.stderr)
        return 2
    report = compare()
    if args.json:
        print(json.dumps(report.__dict__, indent=2, sort_keys=True))
    else:
        _print(report)
    return 1 if report.failures else 0


if __name__ == "__main__":
    sys.exit(main())
