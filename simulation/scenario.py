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

from autoscaler.config import AutoscalerConfigError
from autoscaler.policy import PolicyError
from autoscaler.policy_loader import parse_policy, with_policy
from autoscaler.revision import RevisionSettings, settings_from
from simulation import limits, yamldoc
from simulation.distributions import Constant, Distribution, Exponential, parse_distribution
from simulation.models import ModelsSpec, parse_models
from simulation.schema import Node, ScenarioError, join, show
from simulation.workloads import Workload, parse_workload
from simulation.yamldoc import Position

__all__ = ["PlatformSpec", "RevisionSpec", "Scenario", "ScenarioError", "load_scenario", "parse_scenario"]

SERVICE_MODELS = ("parallel", "shared")
ROUTINGS = ("random", "round_robin")
_TOP_KEYS = ("duration", "warmup", "seed", "revision", "config", "platform", "workload", "policy")
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
    "models",
)
_PLATFORM_KEYS = (
    "actuation_delay",
    "drain_period",
    "activator_queue_depth",
    "bucket_phase",
    "activator_report_phase",
)
ACTIVATOR_REPORT_PHASE = 0.5  # by default the activator's 1 s reports run half a second off the scrape
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
    models: ModelsSpec | None = None  # many models per pod, within a budget (simulation.models)


@dataclass(frozen=True)
class PlatformSpec:
    """What Kubernetes and Knative's data plane add around the revision (not in the issue's contract)."""

    actuation_delay: float = 0.0  # decision → Deployment scaled and endpoints updated
    drain_period: float = 30.0  # queue-proxy drain quiet period after a pod leaves the endpoints
    activator_queue_depth: int = 10_000  # Knative's revision breaker queue depth
    # How far into its 1 s metric bucket each decision tick falls. Knative buckets stats by wall-clock
    # second and starts a revision's 2 s ticker whenever its Metric appears, so a decision also reads the
    # current, partial bucket and its window reaches this much further back. 0: on the boundary.
    bucket_phase: float = 0.0
    # Seconds after each scrape tick that the activator's 1 s report comes (its own loop's phase).
    activator_report_phase: float = ACTIVATOR_REPORT_PHASE


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
    # 0 is a pure loss pod (503 whenever cc requests run: Erlang B), which Knative's breaker refuses.
    queue_depth = node.integer("queue_depth", 10 * cc, minimum=0) if cc > 0 else 0
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
        models=parse_models(node.child("models"), base_dir) if node.has("models") else None,
    )


def _platform(node: Node) -> PlatformSpec:
    node.only(_PLATFORM_KEYS)
    return PlatformSpec(
        actuation_delay=node.number("actuation_delay", 0, minimum=0),
        drain_period=node.number("drain_period", 30, minimum=0),
        activator_queue_depth=node.integer("activator_queue_depth", 10_000, minimum=1),
        bucket_phase=_fraction(node, "bucket_phase", 0.0),
        activator_report_phase=_fraction(node, "activator_report_phase", ACTIVATOR_REPORT_PHASE),
    )


def _fraction(node: Node, key: str, default: float) -> float:
    value = node.number(key, default, minimum=0)
    if value >= 1:
        raise node.error(key, "must be < 1 (a fraction of a second: the stats' 1 s period)")
    return value


def _settings(
    root: Node, annotations: Mapping[str, str], config: Mapping[str, str], cc: int
) -> RevisionSettings:
    try:
        settings = settings_from(
            annotations=annotations, config=config, container_concurrency=cc, strict_config=True
        )
    except AutoscalerConfigError as exc:
        text = str(exc)
        node = root.child("config", {}) if text.startswith("config-autoscaler") else _annotations(root)
        raise ScenarioError(f"{node.path}: {text}", _named_key(node, text)) from None
    for name, pods in (("min-scale", settings.min_scale), ("initial-scale", settings.initial_scale)):
        node = _annotations(root)
        key = next((k for k in node.value if isinstance(k, str) and k.endswith(name)), None)
        where = f"{node.path} {key}" if key else f"{name} (config)"
        limits.check_pods(where, pods, f"lower {name}", node.position(key) if key else None)
    return settings


def _annotations(root: Node) -> Node:
    revision = root.child("revision")
    return (
        revision.child("annotations") if isinstance(revision.raw("annotations", None), Mapping) else revision
    )


def _named_key(node: Node, message: str) -> Position | None:
    """Where the key a config error names was written (the longest key found in the message)."""
    named = [key for key in node.value if isinstance(key, str) and key in message]
    return node.position(max(named, key=len)) if named else node.at


def parse_scenario(document: Any, base_dir: Path | str = ".", source: str = "") -> Scenario:
    """Validate a scenario document (the parsed YAML); file paths inside are relative to ``base_dir``.

    A document read by :func:`read_document` carries the position of every key, and errors give it.
    """
    base = Path(base_dir)
    root = Node.of(document, "")
    root.only(_TOP_KEYS)
    duration = root.number("duration", above=0)
    warmup = root.number("warmup", 0, minimum=0)
    if warmup >= duration:
        raise root.error("warmup", f"must be shorter than duration ({show(duration)})")
    seed = root.integer("seed", 1, minimum=0)
    revision = _revision(root.child("revision"), base)
    limits.check_seconds(root, duration, revision.timeout)
    config = root.string_map("config")
    platform = _platform(root.child("platform", {}))
    workload = parse_workload(root, "workload", base)
    limits.check_requests(root, workload, duration)
    settings = _settings(root, revision.annotations, config, revision.container_concurrency)
    if root.has("policy"):  # the KPA unless it names another (docs/experiments.md, "Policies")
        try:
            settings = with_policy(settings, parse_policy(root.raw("policy"), base))
        except PolicyError as exc:
            raise root.error("policy", str(exc)) from None
    return Scenario(
        duration=duration,
        warmup=warmup,
        seed=seed,
        revision=revision,
        config=config,
        platform=platform,
        workload=workload,
        settings=settings,
        document=copy.deepcopy(document),
        source=source,
    )


def read_document(path: Path | str) -> dict[str, Any]:
    """The YAML document at ``path``, every mapping carrying where its keys were written.

    Errors leave the path out (every caller already names it) but give the line and column.
    """
    path = Path(path)
    try:
        if path.is_file() and path.stat().st_size > limits.MAX_SCENARIO_BYTES:
            raise ScenarioError(f"above the {limits.MAX_SCENARIO_BYTES:,}-byte limit of a scenario file")
        if path.exists() and not path.is_file():
            raise ScenarioError("cannot read: not a regular file")
        text = path.read_text()
    except OSError as exc:
        raise ScenarioError(f"cannot read: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise ScenarioError(f"not UTF-8 text (byte {exc.start + 1:,})") from None
    try:
        document = yamldoc.load(text)
    except yamldoc.DuplicateKeyError as exc:
        raise ScenarioError(str(exc), exc.at) from None
    except yaml.MarkedYAMLError as exc:  # the problem and its place, not yaml's quote of the file
        mark = exc.problem_mark or exc.context_mark
        at = Position.of(mark) if mark is not None else None
        raise ScenarioError(f"not valid YAML: {exc.problem or exc.context}", at) from None
    except yaml.YAMLError as exc:
        raise ScenarioError(f"not valid YAML: {type(exc).__name__}") from None
    if not isinstance(document, dict):
        raise ScenarioError("expected a mapping at the top level", Position(1, 1))
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
