"""The `kpa up` config file: which revisions to run locally and how to scale them.

The file is read from YAML *nodes* rather than plain values so every complaint carries the line it
is about: ``stack.yaml:7: revisions[0].containerConcurrency="x": not an integer``. Autoscaling
annotations and config-autoscaler keys are not checked here but by the autoscaler core's own parser
(``autoscaler.revision.settings_from``), so a value accepted by `kpa up` is accepted by a
simulation scenario and by the Kubernetes controller alike. See docs/local-stack.md for the format.
"""

from __future__ import annotations

import difflib
import json
import math
import re
import shlex
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, NoReturn

import yaml

from autoscaler.config import AutoscalerConfigError
from autoscaler.policy import PolicyError
from autoscaler.policy_loader import parse_policy, with_policy
from autoscaler.revision import RevisionSettings, settings_from
from graph.spec import GraphSpecError, load_graph_text
from queueproxy.auth import TOKENS_FILE, AuthConfigError, AuthSpec, parse_tokens
from queueproxy.config import QueueProxyConfigError, parse_probes
from queueproxy.payload_events import LoggerConfigError, LoggerSpec, parse_logger
from tracing.config import KEYS as TRACING_KEYS
from tracing.config import TracingConfig, TracingConfigError, parse_tracing

DEFAULT_PORT_ENV = "PORT"
DEFAULT_NAMESPACE = "default"
# Knative's config-defaults: revision-timeout-seconds 300, max-revision-timeout-seconds 600,
# container-concurrency-max-limit 1000.
DEFAULT_TIMEOUT_SECONDS = 300
MAX_TIMEOUT_SECONDS = 600
MAX_CONTAINER_CONCURRENCY = 1000
MAX_QUEUE_BOUND = 1_000_000
MAX_PODS = 10_000  # the largest capacity cap a stack file may ask for (pods across all revisions)
# How long a new pod may take to answer its readiness probe before it is reported as failed.
DEFAULT_STARTUP_TIMEOUT_SECONDS = 60.0

_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_TOP_KEYS = ("revisions", "config", "maxPods", "tracing")
_REVISION_KEYS = (
    "name",
    "namespace",
    "command",
    "portEnv",
    "env",
    "containerConcurrency",
    "annotations",
    "config",
    "timeoutSeconds",
    "responseStartTimeoutSeconds",
    "idleTimeoutSeconds",
    "startupTimeoutSeconds",
    "readinessProbe",
    "activatorQueueBound",
    "logger",
    "graph",
    "policy",
)


class StackConfigError(ValueError):
    """The config file cannot be used; the message starts with ``FILE:LINE:`` and names the key."""


@dataclass(frozen=True, slots=True)
class RevisionSpec:
    """One revision to run: how to start its user container and how to scale it."""

    name: str
    command: tuple[str, ...]
    settings: RevisionSettings
    namespace: str = DEFAULT_NAMESPACE
    port_env: str = DEFAULT_PORT_ENV
    env: Mapping[str, str] = field(default_factory=dict)
    container_concurrency: int = 0
    annotations: Mapping[str, str] = field(default_factory=dict)
    config: Mapping[str, str] = field(default_factory=dict)  # global overrides merged with this revision's
    timeout_seconds: int = DEFAULT_TIMEOUT_SECONDS
    response_start_timeout_seconds: int | None = None  # None: the revision timeout, as in Knative
    idle_timeout_seconds: int = 0
    startup_timeout_seconds: float = DEFAULT_STARTUP_TIMEOUT_SECONDS
    readiness_probe: str | None = None  # Knative's JSON probe form; None: TCP on the user port
    activator_queue_bound: int | None = None  # requests the activator may hold; None: its default
    auth: AuthSpec | None = None  # data-path authentication (kpa.dev/auth-* annotations)
    logger: LoggerSpec | None = None  # KServe's payload logger, {url, mode} (docs/payload-logging.md)
    workdir: Path = Path(".")


@dataclass(frozen=True, slots=True)
class StackConfig:
    revisions: tuple[RevisionSpec, ...]
    config: Mapping[str, str]
    source: str
    max_pods: int | None = None  # the local capacity cap; None: the machine's default
    tracing: TracingConfig = field(default_factory=TracingConfig)  # config-tracing keys, for every process

    def revision(self, name: str) -> RevisionSpec:
        for spec in self.revisions:
            if spec.name == name:
                return spec
        raise KeyError(name)


def load_stack(path: str | Path) -> StackConfig:
    """Read and validate a stack file; raises StackConfigError naming FILE:LINE and the key."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise StackConfigError(f"{path}: cannot read: {exc.strerror or exc}") from None
    return parse_stack(text, source=str(path), workdir=path.resolve().parent)


def parse_stack(text: str, source: str = "<stack>", workdir: Path | None = None) -> StackConfig:
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{source}:{mark.line + 1}" if mark else source
        problem = getattr(exc, "problem", None) or str(exc)
        raise StackConfigError(f"{where}: not valid YAML: {problem}") from None
    return _Reader(source, workdir or Path.cwd()).stack(root)


class _Reader:
    """Turns YAML nodes into a StackConfig, failing with the line of the node at fault."""

    def __init__(self, source: str, workdir: Path) -> None:
        self.source = source
        self.workdir = workdir
        self._constructor = yaml.SafeLoader("")
        self.global_config_node: yaml.Node | None = None

    # ---- primitives -------------------------------------------------------------------------------

    def fail(self, node: yaml.Node | None, message: str) -> NoReturn:
        line = f":{node.start_mark.line + 1}" if node is not None else ""
        raise StackConfigError(f"{self.source}{line}: {message}")

    def value(self, node: yaml.Node) -> Any:
        return self._constructor.construct_object(node, deep=True)

    def shown(self, path: str, node: yaml.Node) -> str:
        if isinstance(node, yaml.ScalarNode):
            return f'{path}="{node.value}"'
        return path

    def mapping(self, node: yaml.Node, path: str, allowed: tuple[str, ...] | None) -> dict[str, tuple]:
        """{key: (key node, value node)}; rejects non-mappings, duplicates and unknown keys."""
        if not isinstance(node, yaml.MappingNode):
            self.fail(node, f"{path or 'the file'}: must be a mapping")
        entries: dict[str, tuple] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                self.fail(key_node, f"{path}: keys must be strings")
            key = key_node.value
            where = f"{path}.{key}" if path else key
            if key in entries:
                self.fail(key_node, f"{where}: given twice")
            if allowed is not None and key not in allowed:
                close = difflib.get_close_matches(key, allowed, n=1)
                hint = f"did you mean {close[0]!r}? " if close else ""
                self.fail(key_node, f"{where}: unknown key; {hint}allowed: {', '.join(allowed)}")
            entries[key] = (key_node, value_node)
        return entries

    def string(self, node: yaml.Node, path: str) -> str:
        if not isinstance(node, yaml.ScalarNode) or not isinstance(self.value(node), str) or not node.value:
            self.fail(node, f"{self.shown(path, node)}: must be a non-empty string")
        return node.value

    def integer(self, node: yaml.Node, path: str, low: int, high: int) -> int:
        raw = self.value(node) if isinstance(node, yaml.ScalarNode) else None
        if isinstance(raw, bool) or not isinstance(raw, int):
            self.fail(node, f"{self.shown(path, node)}: not an integer")
        if not low <= raw <= high:
            self.fail(node, f"{self.shown(path, node)}: must be in [{low}, {high}]")
        return raw

    def seconds(self, node: yaml.Node, path: str) -> float:
        raw = self.value(node) if isinstance(node, yaml.ScalarNode) else None
        if isinstance(raw, bool) or not isinstance(raw, int | float) or not math.isfinite(raw) or raw <= 0:
            self.fail(node, f"{self.shown(path, node)}: must be a number of seconds > 0")
        return float(raw)

    def string_map(self, node: yaml.Node, path: str) -> dict[str, str]:
        """A map of strings; scalar values keep their source text (``target: 10`` means "10")."""
        result = {}
        for key, (_, value_node) in self.mapping(node, path, None).items():
            if not isinstance(value_node, yaml.ScalarNode):
                self.fail(value_node, f"{path}[{key}]: must be a string, not a {_kind(value_node)}")
            result[key] = value_node.value
        return result

    # ---- the document -----------------------------------------------------------------------------

    def stack(self, root: yaml.Node | None) -> StackConfig:
        if root is None:
            self.fail(None, "the file is empty; it needs a 'revisions:' list (see docs/local-stack.md)")
        top = self.mapping(root, "", _TOP_KEYS)
        global_config = {}
        if "config" in top:
            self.global_config_node = top["config"][1]
            global_config = self.string_map(self.global_config_node, "config")
        if "revisions" not in top:
            self.fail(root, "missing 'revisions:' (a list of revisions to run)")
        revisions_node = top["revisions"][1]
        if not isinstance(revisions_node, yaml.SequenceNode) or not revisions_node.value:
            self.fail(revisions_node, "revisions: must be a non-empty list")
        revisions: list[RevisionSpec] = []
        seen: dict[tuple[str, str], int] = {}
        for index, node in enumerate(revisions_node.value):
            spec = self.revision(node, f"revisions[{index}]", global_config)
            key = (spec.namespace, spec.name)
            if key in seen:
                self.fail(
                    node, f'revisions[{index}].name="{spec.name}": already used by revisions[{seen[key]}]'
                )
            seen[key] = index
            revisions.append(spec)
        max_pods = self.integer(top["maxPods"][1], "maxPods", 1, MAX_PODS) if "maxPods" in top else None
        tracing = self.tracing(top["tracing"][1]) if "tracing" in top else TracingConfig()
        return StackConfig(tuple(revisions), global_config, self.source, max_pods, tracing)

    def tracing(self, node: yaml.Node) -> TracingConfig:
        """Knative's ``config-tracing`` keys (docs/tracing.md), checked by the processes' own parser."""
        try:
            return parse_tracing(self.string_map(node, "tracing"), {k: f"tracing.{k}" for k in TRACING_KEYS})
        except TracingConfigError as exc:
            self.fail(node, str(exc))

    def revision(self, node: yaml.Node, path: str, global_config: Mapping[str, str]) -> RevisionSpec:
        fields_ = self.mapping(node, path, _REVISION_KEYS)
        if "name" not in fields_:
            self.fail(node, f"{path}: missing 'name'")
        if ("command" in fields_) == ("graph" in fields_):
            what = "gives both 'command' and 'graph'" if "command" in fields_ else "missing 'command'"
            self.fail(node, f"{path}: {what}; give the user container's 'command', or 'graph: FILE' to "
                      "serve an InferenceGraph with `kpa graph` (docs/inference-graph.md)")  # fmt: skip

        def get(key: str) -> yaml.Node | None:
            return fields_[key][1] if key in fields_ else None

        name = self.dns_label(fields_["name"][1], f"{path}.name")
        namespace = (
            self.dns_label(given, f"{path}.namespace") if (given := get("namespace")) else DEFAULT_NAMESPACE
        )
        command = (
            self.command(fields_["command"][1], f"{path}.command")
            if "command" in fields_
            else self.graph_command(fields_["graph"][1], f"{path}.graph")
        )
        port_env = DEFAULT_PORT_ENV
        if (given := get("portEnv")) is not None:
            port_env = self.string(given, f"{path}.portEnv")
            if not _ENV_NAME.match(port_env):
                self.fail(given, f'{path}.portEnv="{port_env}": not an environment variable name')
        env = self.string_map(given, f"{path}.env") if (given := get("env")) else {}
        cc = (
            self.integer(given, f"{path}.containerConcurrency", 0, MAX_CONTAINER_CONCURRENCY)
            if (given := get("containerConcurrency"))
            else 0
        )
        timeout = (
            self.integer(given, f"{path}.timeoutSeconds", 1, MAX_TIMEOUT_SECONDS)
            if (given := get("timeoutSeconds"))
            else DEFAULT_TIMEOUT_SECONDS
        )
        response_start = None
        if (given := get("responseStartTimeoutSeconds")) is not None:
            response_start = self.integer(given, f"{path}.responseStartTimeoutSeconds", 0, timeout)
        idle = (
            self.integer(given, f"{path}.idleTimeoutSeconds", 0, MAX_TIMEOUT_SECONDS)
            if (given := get("idleTimeoutSeconds"))
            else 0
        )
        startup = (
            self.seconds(given, f"{path}.startupTimeoutSeconds")
            if (given := get("startupTimeoutSeconds"))
            else DEFAULT_STARTUP_TIMEOUT_SECONDS
        )
        annotations = self.string_map(given, f"{path}.annotations") if (given := get("annotations")) else {}
        own_config = self.string_map(given, f"{path}.config") if (given := get("config")) else {}
        config = {**global_config, **own_config}
        settings = self.settings(fields_, path, annotations, config, cc)
        auth = self.auth(get("annotations"), annotations, f"{path}.annotations")
        return RevisionSpec(
            name=name,
            namespace=namespace,
            command=command,
            settings=settings,
            port_env=port_env,
            env=env,
            container_concurrency=cc,
            annotations=annotations,
            config=config,
            timeout_seconds=timeout,
            response_start_timeout_seconds=response_start,
            idle_timeout_seconds=idle,
            startup_timeout_seconds=startup,
            activator_queue_bound=self.integer(given, f"{path}.activatorQueueBound", 1, MAX_QUEUE_BOUND)
            if (given := get("activatorQueueBound"))
            else None,
            readiness_probe=self.probe(given, f"{path}.readinessProbe")
            if (given := get("readinessProbe"))
            else None,
            workdir=self.workdir,
            auth=auth,
            logger=self.logger(given, f"{path}.logger") if (given := get("logger")) else None,
        )

    def logger(self, node: yaml.Node, path: str) -> LoggerSpec:
        """KServe's ``logger: {url, mode}``, checked by the queue-proxy's own parser."""
        entries = self.mapping(node, path, ("url", "mode"))
        url = self.value(entries["url"][1]) if "url" in entries else None
        mode = self.value(entries["mode"][1]) if "mode" in entries else None
        try:
            return parse_logger(url, mode, f"{path}.url", f"{path}.mode")
        except LoggerConfigError as exc:
            culprit = "mode" if f"{path}.mode" in str(exc) else "url"
            self.fail(entries[culprit][1] if culprit in entries else node, str(exc))

    def auth(self, node: yaml.Node | None, annotations: Mapping[str, str], path: str) -> AuthSpec | None:
        """The ``kpa.dev/auth-*`` annotations; a relative tokens file is found beside the stack file."""
        if node is None:  # no annotations: no authentication
            return None
        try:
            spec = AuthSpec.from_annotations(annotations)
        except AuthConfigError as exc:
            culprit = next((k for k in annotations if k in str(exc)), None)
            self.fail(self.mapping(node, path, None)[culprit][0] if culprit else node, f"{path}: {exc}")
        if spec is None or spec.bearer_tokens_file is None:
            return spec
        tokens = self.workdir / spec.bearer_tokens_file
        where = f'{path}[{TOKENS_FILE}]="{spec.bearer_tokens_file}"'
        key_node = self.mapping(node, path, None)[TOKENS_FILE][0]
        try:
            parse_tokens(tokens.read_text(), where)
        except OSError as exc:
            self.fail(key_node, f"{where}: cannot read {tokens}: {exc.strerror}")
        except AuthConfigError as exc:
            self.fail(key_node, str(exc))
        return replace(spec, bearer_tokens_file=str(tokens))

    def graph_command(self, node: yaml.Node, path: str) -> tuple[str, ...]:
        """``graph: FILE`` (beside the stack file): the revision runs `kpa graph FILE`; checked now."""
        graph_file = self.workdir / self.string(node, path)
        try:
            load_graph_text(graph_file.read_text(), str(graph_file))
        except OSError as exc:
            self.fail(node, f'{path}="{node.value}": cannot read {graph_file}: {exc.strerror or exc}')
        except GraphSpecError as exc:
            self.fail(node, f"{path}: {exc}")
        return (sys.executable, "-m", "kpa", "graph", str(graph_file))

    def dns_label(self, node: yaml.Node, path: str) -> str:
        value = self.string(node, path)
        if not _DNS_LABEL.match(value) or len(value) > 63:
            self.fail(
                node,
                f'{path}="{value}": must be a DNS label (lowercase letters, digits and "-", '
                f"at most 63 characters)",
            )
        return value

    def probe(self, node: yaml.Node, path: str) -> str:
        """A Kubernetes probe (httpGet/tcpSocket), checked by the queue-proxy's own probe parser."""
        if not isinstance(node, yaml.MappingNode):
            self.fail(node, f"{path}: must be a mapping like {{httpGet: {{path: /healthz}}}}")
        text = json.dumps(self.value(node))
        try:
            parse_probes(text, path, "127.0.0.1", 1)
        except QueueProxyConfigError as exc:
            self.fail(node, str(exc))
        return text

    def command(self, node: yaml.Node, path: str) -> tuple[str, ...]:
        if isinstance(node, yaml.ScalarNode):
            try:
                words = shlex.split(self.string(node, path))
            except ValueError as exc:
                self.fail(node, f'{path}="{node.value}": cannot split into words: {exc}')
        elif isinstance(node, yaml.SequenceNode) and node.value:
            words = [self.string(item, f"{path}[{i}]") for i, item in enumerate(node.value)]
        else:
            self.fail(node, f"{path}: must be a command line (a string or a non-empty list of strings)")
        return tuple(_resolve_python(words))

    def settings(
        self,
        fields_: dict[str, tuple],
        path: str,
        annotations: Mapping[str, str],
        config: Mapping[str, str],
        cc: int,
    ) -> RevisionSettings:
        try:
            settings = settings_from(annotations, config, cc, strict_config=True)
            if "policy" in fields_:  # the KPA unless it names another (docs/experiments.md)
                node = fields_["policy"][1]
                try:
                    return with_policy(settings, parse_policy(self.value(node), self.workdir))
                except PolicyError as exc:
                    self.fail(node, f"{path}.policy: {exc}")
            return settings
        except AutoscalerConfigError as exc:
            message = str(exc)
            node, where = self._culprit(message, fields_, path)
            self.fail(node, f"{where}: {message}")

    def _culprit(self, message: str, fields_: dict[str, tuple], path: str) -> tuple[yaml.Node, str]:
        """The annotation or config entry an AutoscalerConfigError is about, found by the key it names."""
        prefixes = {"annotations": "annotation ", "config": "config-autoscaler "}
        sections = [(fields_[s][1], f"{path}.{s}", prefixes[s]) for s in prefixes if s in fields_]
        if self.global_config_node is not None:
            sections.append((self.global_config_node, "config", prefixes["config"]))
        for node, where, prefix in sections:
            entries = self.mapping(node, where, None)
            for key in sorted(entries, key=len, reverse=True):
                if f"{prefix}{key}=" in message or f"{prefix}{key} " in message:
                    return entries[key][0], where
        return fields_["name"][1], path


def _kind(node: yaml.Node) -> str:
    return "list" if isinstance(node, yaml.SequenceNode) else "mapping"


def _resolve_python(words: list[str]) -> list[str]:
    """Run ``python``/``python3`` commands with this interpreter, so they see the same venv."""
    if words and words[0] in ("python", "python3"):
        return [sys.executable, *words[1:]]
    return words
