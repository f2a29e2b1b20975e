"""Scenarios of many revisions at once: ``revisions:`` listed by hand, ``functions:`` from an Azure
trace (every function its own revision), optionally on a ``cluster:`` of nodes they share.

A scenario with ``revisions`` or ``functions`` is a many-revision scenario (docs/simulation.md, "Many
revisions"); ``revision:`` is then the template every revision starts from (any revision key), and
each entry of ``revisions`` overrides it (``annotations`` merge key by key). Every revision becomes a
one-revision :class:`~simulation.scenario.Scenario` parsed by the same code as a one-revision file, so
it accepts and refuses the same values; errors name the file, line and key path as they do there.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from predictor.model_cache import parse_bytes
from simulation import limits
from simulation.azure import load_apps, load_durations, load_memory
from simulation.cluster import Resources
from simulation.scenario import (
    _REVISION_KEYS,
    RevisionSpec,
    Scenario,
    _platform,
    _revision,
    _settings,
    read_document,
    set_path,
)
from simulation.schema import Node, ScenarioError, join, show
from simulation.workloads import Trace, TraceTable, Workload, load_trace, parse_workload
from simulation.yamldoc import MarkedDict, position_of, positions_of

__all__ = ["ManyScenario", "RevisionRun", "is_many", "load_many", "parse_many"]

MAX_REVISIONS = 10_000  # revisions of one run: each ticks every second while it has pods or traffic
MAX_NODES = 10_000
_TOP_KEYS = (
    "duration", "warmup", "seed", "revision", "config", "platform", "revisions", "functions", "cluster",
)  # fmt: skip
_ENTRY_KEYS = ("name", "workload", "resources", *_REVISION_KEYS)
_FUNCTIONS_KEYS = ("invocations", "durations", "memory", "select", "start_minute", "scale")
_DEFAULT_POD = Resources(cpu=250, memory=256)  # requests of a pod when neither revision nor cluster says


@dataclass(frozen=True)
class RevisionRun:
    name: str
    scenario: Scenario  # the revision on its own: its workload, spec, settings
    requests: Resources  # what each of its pods asks of a node (used with a cluster)


@dataclass(frozen=True)
class ManyScenario:
    duration: float
    revisions: tuple[RevisionRun, ...]
    nodes: tuple[Resources, ...] | None = None  # None: room for every pod, always
    warmup: float = 0.0
    seed: int = 1
    source: str = ""


def is_many(document: Any) -> bool:
    return isinstance(document, Mapping) and ("revisions" in document or "functions" in document)


def load_many(path: Path | str, overrides: Mapping[str, Any] | None = None) -> ManyScenario:
    document = read_document(path)
    for key, value in (overrides or {}).items():
        set_path(document, key, value)
    return parse_many(document, Path(path).parent, Path(path).name)


def parse_many(document: Any, base_dir: Path | str = ".", source: str = "") -> ManyScenario:
    base = Path(base_dir)
    root = Node.of(document, "")
    root.only(_TOP_KEYS)
    duration = root.number("duration", above=0)
    warmup = root.number("warmup", 0, minimum=0)
    if warmup >= duration:
        raise root.error("warmup", f"must be shorter than duration ({show(duration)})")
    seed = root.integer("seed", 1, minimum=0)
    config = root.string_map("config")
    platform = _platform(root.child("platform", {}))
    nodes, pod = _cluster(root.child("cluster")) if root.has("cluster") else (None, _DEFAULT_POD)
    template = root.raw("revision", {})
    Node.of(template, "revision", root.position("revision"))  # a mapping, or an error naming it

    def scenario(node: Node, spec: RevisionSpec, workload: Workload) -> Scenario:
        revision = {"revision": node.value, "config": root.raw("config", {})}
        settings_root = Node(revision, "", root.at, positions_of(root.value))
        limits.check_seconds(settings_root, duration, spec.timeout)
        settings = _settings(settings_root, spec.annotations, config, spec.container_concurrency)
        return Scenario(duration, workload, settings, warmup, seed, spec, config, platform, source=source)

    runs: list[RevisionRun] = []
    if root.has("functions"):
        runs += _functions(root, template, base, duration, pod, scenario)
    if root.has("revisions"):
        for path, entry, at in root.items("revisions"):
            node = Node.of(entry, path, at)
            node.only(_ENTRY_KEYS)
            merged = Node.of(_merged(template, entry, ("name", "workload", "resources")), path, at)
            spec = _revision(merged, base)
            requests = _requests(node.child("resources"), pod) if node.has("resources") else pod
            workload = parse_workload(node, "workload", base)
            runs.append(RevisionRun(node.string("name"), scenario(merged, spec, workload), requests))
    _check(root, runs, nodes, duration)
    return ManyScenario(duration, tuple(runs), nodes, warmup, seed, source)


def _check(root: Node, runs: list[RevisionRun], nodes: tuple[Resources, ...] | None, duration: float) -> None:
    key = "revisions" if root.has("revisions") else "functions"
    if len(runs) > MAX_REVISIONS:
        raise root.error(key, f"{len(runs):,} revisions: above the {MAX_REVISIONS:,}-revision limit")
    names = [run.name for run in runs]
    twice = next((name for name in names if names.count(name) > 1), None)
    if twice is not None:
        raise root.error(key, f"revision name {twice!r} given twice; names must be unique")
    draws = sum(sum(run.scenario.workload.draws(duration)) for run in runs)
    if draws > limits.MAX_REQUESTS:
        raise root.error(
            key,
            f"≈ {draws:.3g} requests in all: above the {limits.MAX_REQUESTS:,}-request limit of one "
            "simulation; shorten duration or select fewer functions",
        )
    if nodes is not None:
        for run in runs:
            if not any(run.requests.fits_in(node) for node in nodes):
                raise ScenarioError(
                    f"cluster: revision {run.name!r} asks {run.requests.cpu} m CPU and "
                    f"{run.requests.memory} MiB per pod: no node is that big, its pods would pend forever; "
                    "add a bigger node or lower its requests",
                    root.position("cluster"),
                )


def _merged(template: Mapping[str, Any], entry: Mapping[str, Any], drop: tuple[str, ...]) -> MarkedDict:
    """``entry`` over ``template``, ``annotations`` merged key by key; positions kept for errors."""
    merged = MarkedDict()
    merged.at = position_of(entry)
    for source in (template, entry):
        positions = positions_of(source)
        for key, value in source.items():
            if key in drop:
                continue
            if key == "annotations" and isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
                value = _merged(merged[key], value, ())
            merged[key] = value
            if key in positions:
                merged.positions[key] = positions[key]
    return merged


def _cpu(node: Node, key: str) -> int:
    """Millicores from ``2``, ``0.5`` or ``"250m"``."""
    raw = node.raw(key)
    if isinstance(raw, str) and raw.endswith("m") and raw[:-1].isdigit():
        value = int(raw[:-1])
    elif isinstance(raw, int | float) and not isinstance(raw, bool) and math.isfinite(raw):
        value = math.ceil(raw * 1000)
    else:
        raise node.error(key, 'expected CPU as cores (2, 0.5) or millicores ("250m")')
    if value <= 0:
        raise node.error(key, "must be > 0")
    return value


def _memory(node: Node, key: str) -> int:
    """MiB (rounded up) from ``512Mi``, ``2G`` or bytes."""
    raw = node.raw(key)
    try:
        if isinstance(raw, bool) or not isinstance(raw, int | str):
            raise ValueError
        value = math.ceil(parse_bytes(raw, key) / (1 << 20))
    except ValueError:
        raise node.error(key, "expected memory such as 512Mi, 2Gi or a number of bytes") from None
    if value <= 0:
        raise node.error(key, "must be > 0")
    return value


def _requests(node: Node, default: Resources) -> Resources:
    node.only(("cpu", "memory"))
    return Resources(
        _cpu(node, "cpu") if node.has("cpu") else default.cpu,
        _memory(node, "memory") if node.has("memory") else default.memory,
    )


def _cluster(node: Node) -> tuple[tuple[Resources, ...], Resources]:
    node.only(("nodes", "pod"))
    nodes: list[Resources] = []
    for path, item, at in node.items("nodes"):
        group = Node.of(item, path, at)
        group.only(("count", "cpu", "memory"))
        count = group.integer("count", 1, minimum=1)
        if len(nodes) + count > MAX_NODES:
            raise group.error("count", f"more than {MAX_NODES:,} nodes in all")
        nodes += [Resources(_cpu(group, "cpu"), _memory(group, "memory"))] * count
    pod = _requests(node.child("pod"), _DEFAULT_POD) if node.has("pod") else _DEFAULT_POD
    return tuple(nodes), pod


def _functions(
    root: Node,
    template: Mapping[str, Any],
    base: Path,
    duration: float,
    pod: Resources,
    scenario: Callable[[Node, RevisionSpec, Workload], Scenario],
) -> list[RevisionRun]:
    """One revision per selected function of an Azure-format trace (see simulation.azure)."""
    node = root.child("functions")
    node.only(_FUNCTIONS_KEYS)
    table, inv_path = node.load("invocations", base, load_trace, "not a per-minute trace: ")
    durations = node.load("durations", base, load_durations)[0] if node.has("durations") else None
    memory = node.load("memory", base, load_memory)[0] if node.has("memory") else None
    apps = load_apps(inv_path) if memory is not None else ()
    start = node.integer("start_minute", 1, minimum=1)
    minutes = table.counts.shape[1]
    if (minutes - start + 1) * 60.0 < duration:
        raise node.error("start_minute", f"the trace has {minutes} minutes: too few for {show(duration)} s")
    counts = table.counts[:, start - 1 : start - 1 + math.ceil(duration / 60)]
    rows = _select(node, table, counts)
    filled = {"service_time": {"dist": "constant", "value": 0}} if "service_time" not in template else {}
    merged = Node.of(_merged(template, filled, ()), "revision", root.position("revision"))
    spec = _revision(merged, base)
    scale = node.number("scale", 1.0, above=0)
    runs = []
    for row in rows:
        function = table.functions[row]
        service = durations.service_time(function) if durations is not None else None
        if service is None and "service_time" not in template:
            if durations is None:
                raise node.fail("no durations file and no revision.service_time: give one of them")
            raise node.error("durations", f"no line for function {function[:12]}; give revision.service_time")
        mib = memory.get(apps[row]) if memory is not None else None
        requests = Resources(pod.cpu, mib if mib else pod.memory)
        workload = Workload((Trace(tuple(int(c) for c in counts[row]), scale, duration, function[:12]),))
        own = spec if service is None else dataclasses.replace(spec, service_time=service)
        runs.append(RevisionRun(f"{row}:{function[:8]}", scenario(merged, own, workload), requests))
    return runs


def _select(node: Node, table: TraceTable, counts: np.ndarray) -> list[int]:
    """``all``, the N busiest functions within the replayed minutes, or a list of rows / hash prefixes."""
    chosen = node.raw("select", "all")
    if chosen == "all":
        return list(range(len(table.functions)))
    if isinstance(chosen, int) and not isinstance(chosen, bool) and chosen >= 1:
        busiest = sorted(range(len(table.functions)), key=lambda row: (-int(counts[row].sum()), row))
        return sorted(busiest[:chosen])
    if isinstance(chosen, list) and chosen:
        where, at = join(node.path, "select"), positions_of(chosen)
        return [
            table.find(key, join(where, i), at.get(i, node.position("select")))
            for i, key in enumerate(chosen)
        ]
    raise node.error("select", 'expected "all", a number N (the N busiest functions) or a list of functions')
