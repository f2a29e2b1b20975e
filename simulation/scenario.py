"""The scenario file: what to simulate, validated up front.

The format is a contract shared with external validation (docs/simulation.md lists every key).
Annotations and config-autoscaler overrides go through the autoscaler's own parser, so a scenario
accepts and rejects exactly what the live system does.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from autoscaler.config import ConfigError
from autoscaler.revision import RevisionSettings, settings_from
from simulation.distributions import Constant, Distribution, Exponential, parse_distribution
from simulation.schema import Node, ScenarioError, join, show
from simulation.workloads import Workload, parse_workload

__all__ = ["PlatformSpec", "RevisionSpec", "Scenario", "ScenarioError", "load_scenario", "parse_scenario"]

SERVICE_MODELS = ("parallel", "shared")
ROUTINGS = ("random", "round_robin")
_TOP_KEYS = ("duration", "warmup", "seed", "revision", "config", "platform", "workload")
_REVISION_KEYS = (
    "container_concurrency",
    "queue_depth",
    "service_model",
    "cores",
    "service_time",
    "cold_start",
    "routing",
    "timeout",
    "annotations",
)
_PLATFORM_KEYS = ("actuation_delay", "drain_period", "activator_queue_depth")
_MAP_KEYS = ("annotations", "config")  # everything after these in a dotted path is one key


@dataclass(frozen=True)
class RevisionSpec:
    container_concurrency: int = 0
    queue_depth: int = 0  # 10 × cc unless set; unused when cc = 0 (the queue-proxy has no breaker)
    service_model: str = "parallel"
    cores: float = 1.0
    service_time: Distribution = field(default_factory=lambda: Exponential(0.1))
    cold_start: Distribution = field(default_factory=lambda: Constant(2.0))
    routing: str = "random"
    timeout: float = 300.0
    annotations: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class PlatformSpec:
    """What Kubernetes and Knative's data plane add around the revision (not in the issue's contract)."""

    actuation_delay: float = 0.0  # decision → Deployment scaled and endpoints updated
    drain_period: float = 30.0  # queue-proxy drain quiet period after a pod leaves the endpoints
    activator_queue_depth: int = 10_000  # Knative's revision breaker queue depth


@dataclass(frozen=True)
class Scenario:
    duration: float
    workload: Workload
    settings: RevisionSettings
    warmup: float = 0.0
    seed: int = 1
    revision: RevisionSpec = field(default_factory=RevisionSpec)
    config: Mapping[str, str] = field(default_factory=dict)
    platform: PlatformSpec = field(default_factory=PlatformSpec)
    document: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)
    source: str = ""  # the file it came from, for titles


def _revision(node: Node, base_dir: Path) -> RevisionSpec:
    node.only(_REVISION_KEYS)
    cc = node.integer("container_concurrency", 0, minimum=0)
    if cc > 1000:
        raise node.error("container_concurrency", "must be <= 1000 (container-concurrency-max-limit)")
    if cc == 0 and node.has("queue_depth"):
        raise node.error("queue_depth", "the queue-proxy has no queue when container_concurrency is 0")
    queue_depth = node.integer("queue_depth", 10 * cc, minimum=1) if cc > 0 else 0
    model = node.choice("service_model", SERVICE_MODELS, "parallel")
    if model != "shared" and node.has("cores"):
        raise node.error("cores", "only used with service_model: shared")
    cores = node.number("cores", 1, above=0) if model == "shared" else 1.0
    service_time = parse_distribution(node.child("service_time"), base_dir)
    cold_start = (
        parse_distribution(node.child("cold_start"), base_dir) if node.has("cold_start") else Constant(2.0)
    )
    return RevisionSpec(
        container_concurrency=cc,
        queue_depth=queue_depth,
        service_model=model,
        cores=cores,
        service_time=service_time,
        cold_start=cold_start,
        routing=node.choice("routing", ROUTINGS, "random"),
        timeout=node.number("timeout", 300, above=0),
        annotations=node.string_map("annotations"),
    )


def _platform(node: Node) -> PlatformSpec:
    node.only(_PLATFORM_KEYS)
    return PlatformSpec(
        actuation_delay=node.number("actuation_delay", 0, minimum=0),
        drain_period=node.number("drain_period", 30, minimum=0),
        activator_queue_depth=node.integer("activator_queue_depth", 10_000, minimum=1),
    )


def _settings(annotations: Mapping[str, str], config: Mapping[str, str], cc: int) -> RevisionSettings:
    try:
        return settings_from(
            annotations=annotations, config=config, container_concurrency=cc, strict_config=True
        )
    except ConfigError as exc:
        text = str(exc)
        where = "config" if text.startswith("config-autoscaler") else "revision.annotations"
        raise ScenarioError(f"{where}: {text}") from None


def parse_scenario(document: Any, base_dir: Path | str = ".", source: str = "") -> Scenario:
    """Validate a scenario document (the parsed YAML); file paths inside are relative to ``base_dir``."""
    base = Path(base_dir)
    root = Node.of(document, "")
    root.only(_TOP_KEYS)
    duration = root.number("duration", above=0)
    warmup = root.number("warmup", 0, minimum=0)
    if warmup >= duration:
        raise root.error("warmup", f"must be shorter than duration ({show(duration)})")
    seed = root.integer("seed", 1, minimum=0)
    revision = _revision(root.child("revision"), base)
    config = root.string_map("config")
    platform = _platform(root.child("platform", {}))
    workload = parse_workload(root.raw("workload"), base, "workload")
    settings = _settings(revision.annotations, config, revision.container_concurrency)
    return Scenario(
        duration=duration,
        warmup=warmup,
        seed=seed,
        revision=revision,
        config=config,
        platform=platform,
        workload=workload,
        settings=settings,
        document=copy.deepcopy(dict(document)),
        source=source,
    )


def read_document(path: Path | str) -> dict[str, Any]:
    """The YAML document at ``path``; errors leave the path out, as every caller already names it."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ScenarioError(f"cannot read: {exc.strerror}") from None
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ScenarioError(f"not valid YAML: {exc}") from None
    if not isinstance(document, dict):
        raise ScenarioError("expected a mapping at the top level")
    return document


def load_scenario(path: Path | str, overrides: Mapping[str, Any] | None = None) -> Scenario:
    """Read, override (``key.path -> value``) and validate a scenario file."""
    document = read_document(path)
    for key, value in (overrides or {}).items():
        set_path(document, key, value)
    return parse_scenario(document, Path(path).parent, Path(path).name)


def set_path(document: dict[str, Any], dotted: str, value: Any) -> None:
    """Set ``revision.annotations.autoscaling.knative.dev/target`` or ``workload.0.rate`` in place.

    After ``annotations`` or ``config`` the rest of the path is a single key (Knative's keys contain dots).
    """
    parts = dotted.split(".")
    if any(not part for part in parts):
        raise ScenarioError(f"{dotted!r}: expected a dotted key path such as revision.container_concurrency")
    target: Any = document
    walked = ""
    key = parts[-1]
    for i, part in enumerate(parts[:-1]):
        target = _step(target, part, walked)
        walked = join(walked, part)
        if part in _MAP_KEYS:
            key = ".".join(parts[i + 1 :])
            break
    if isinstance(target, list):
        target[_index(key, target, walked)] = value
    elif isinstance(target, dict):
        target[key] = value
    else:
        raise ScenarioError(f"{walked}: is not a mapping or list, cannot set {key}")


def _index(part: str, items: list[Any], where: str) -> int:
    if not part.isdigit() or int(part) >= len(items):
        where = join(where, int(part)) if part.isdigit() else join(where, part)
        raise ScenarioError(f"{where}: no such list item (there are {len(items)})")
    return int(part)


def _step(target: Any, part: str, where: str) -> Any:
    if isinstance(target, list):
        return target[_index(part, target, where)]
    if not isinstance(target, dict):
        raise ScenarioError(f"{where}: is not a mapping or list, cannot descend into {part}")
    if target.get(part) is None:
        target[part] = {}
    return target[part]
