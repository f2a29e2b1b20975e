"""The `kpa` console script: one entry point, one subcommand per component.

Each subcommand lives beside the component it runs (``queueproxy/cli.py`` and so on) and is imported
only when chosen, so `kpa queue-proxy` never pays for importing torch or matplotlib.
A command module exposes ``configure(parser: argparse.ArgumentParser) -> None`` and
``run(args: argparse.Namespace) -> int``.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

# name -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "queue-proxy": ("queueproxy.cli", "run the queue-proxy sidecar in front of one user container"),
    "activator": ("activator.cli", "run the activator: hold requests at zero, throttle to pod capacity"),
    "predictor": ("predictor.cli", "serve a model repository over KServe V2/V1"),
    "graph": ("kpa.graph", "run a KServe InferenceGraph router (Sequence, Switch, Ensemble, Splitter)"),
    "up": ("kpa.up", "run the embedded local stack: autoscaler + activator + pods as local processes"),
    "controller": (
        "kpa.controller",
        "run the Kubernetes controller: scale enrolled Deployments and KServe predictors, flip traffic",
    ),
    "status": ("kpa.status", "show per-revision scaling state of a running `kpa up` or `kpa controller`"),
    "load": ("kpa.load", "generate HTTP load: constant rate, steps, bursts, idle gaps"),
    "dashboard": ("kpa.dashboard_cli", "draw the Grafana dashboard from a running Prometheus into a PNG"),
    "demo": ("kpa.demo", "the end-to-end demonstration run by `make demo`"),
    "simulate": ("simulation.many_cli", "simulate a scenario (one revision or many) under simulated time"),
    "sweep": ("simulation.sweep_cli", "simulate a grid of scenario variants in parallel"),
    "compare": ("simulation.compare", "run a scenario under several scaling policies, side by side"),
    "validate": ("kpa.validate", "run a scenario live and simulated, side by side"),
}


def _load(name: str):
    module_name, _ = COMMANDS[name]
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and module_name.startswith(exc.name):
            raise SystemExit(f"kpa {name}: not available in this build ({module_name} is missing)") from exc
        raise SystemExit(
            f"kpa {name}: missing dependency {exc.name!r}; install the extra that provides it, "
            f"e.g. pip install 'kpa-emulator[predictor]'"
        ) from exc


def _top_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kpa", description="Knative's serverless data path (KPA, queue-proxy, activator) in Python."
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (_, help_text) in COMMANDS.items():
        sub.add_parser(name, help=help_text, add_help=False)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0].startswith("-") or argv[0] not in COMMANDS:
        parser = _top_parser()
        if argv and not argv[0].startswith("-"):
            parser.error(f"unknown command {argv[0]!r}; choose one of: {', '.join(COMMANDS)}")
        parser.print_help()
        return 0 if argv and argv[0] in ("-h", "--help") else 2
    name, rest = argv[0], argv[1:]
    module = _load(name)
    parser = argparse.ArgumentParser(prog=f"kpa {name}", description=COMMANDS[name][1])
    module.configure(parser)
    args = parser.parse_args(rest)
    return int(module.run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
