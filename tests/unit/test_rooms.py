"""The rooms table of docs/design.md, enforced: which of our packages each module may import.

Dependencies point inward — pure cores import no shell, the simulator imports only cores — so the
simulator can run the live decisions unchanged. A new import that crosses a wall fails here, naming
the module, the import and what the room allows.
"""

import ast
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2]
OURS = ("httpengine", "autoscaler", "queueproxy", "activator", "predictor", "simulation", "localbackend",
        "kubebackend", "kpa", "fakecluster", "tracing", "graph")  # fmt: skip
TRACING = "tracing"  # trace context and spans (docs/tracing.md): any process of the data path may trace
ENGINE = "httpengine"  # the HTTP engine: a name here allows every module of the package

AUTOSCALER_CORE = {
    "autoscaler.stat", "autoscaler.scaling", "autoscaler.aggregation", "autoscaler.config",
    "autoscaler.collection", "autoscaler.lifecycle", "autoscaler.revision", "autoscaler.schedule",
    "autoscaler.values", "autoscaler.choice", "autoscaler.policy", "autoscaler.hpa", "autoscaler.keda_http",
    "autoscaler.policy_loader",
}  # fmt: skip
# Rendering a large /metrics body off the event loop (beside autoscaler.stat's shared metric vocabulary).
EXPOSITION = "autoscaler.exposition"
# The local backend drives the live loop: the autoscaler's service, actuator interface and core, the
# activator, and the queue-proxy's configuration parsers (probes, authentication and its gate, the
# payload logger's spec), and the InferenceGraph reader (a stack file's ``graph:`` revisions).
LOCAL_BACKEND = AUTOSCALER_CORE | {
    "autoscaler.service", "autoscaler.actuator", "activator", "queueproxy.config", "queueproxy.auth",
    "queueproxy.gate", "queueproxy.payload_events", ENGINE, TRACING, "graph.spec", EXPOSITION,
}  # fmt: skip
# The Kubernetes backend drives the same loop through the API server: the autoscaler's service,
# actuator interface and core, the activator's endpoints, the queue-proxy's configuration (the sidecar)
# and the payload logger's spec (KServe's spec.predictor.logger).
KUBE_BACKEND = AUTOSCALER_CORE | {
    "autoscaler.service", "autoscaler.actuator", "activator", "queueproxy.config",
    "queueproxy.payload_events", ENGINE, TRACING, EXPOSITION,
}  # fmt: skip
# Command-line shells inside a package: like kpa/, they may use every package. The simulator's own
# commands (simulate, sweep) need no other package; what drives the live stack lives in kpa/.
CLI_SHELLS = {"queueproxy.cli", "activator.cli", "predictor.cli"}


def allowed(module: str) -> set[str] | None:
    """Modules of ours (other than its own package's) that ``module`` may import; None: any."""
    package = module.split(".")[0]
    if module in CLI_SHELLS or package == "kpa":
        return None
    if package in ("httpengine", "autoscaler"):
        return set()
    if package == "queueproxy":
        return {"autoscaler.stat", ENGINE, TRACING}
    if package == "activator":
        return {"autoscaler.stat", "queueproxy.breaker", "queueproxy.stats", "queueproxy.auth",
                "queueproxy.gate", ENGINE, TRACING, EXPOSITION}  # fmt: skip
    if package == "predictor":
        return {ENGINE, TRACING}
    if package == TRACING:
        return {ENGINE}
    if package == "graph":
        return {ENGINE}  # the InferenceGraph router: its own cores, the engine for serving and calling
    if package == "simulation":  # and the predictor's model-cache policy, for multi-model pods
        return AUTOSCALER_CORE | {"queueproxy.breaker", "queueproxy.stats", "activator.throttler",
                                  "predictor.model_cache"}  # fmt: skip
    if package == "localbackend":
        return LOCAL_BACKEND
    if package == "kubebackend":
        return KUBE_BACKEND
    if package == "fakecluster":
        return set()  # it stands in for the cluster our code talks to, so it shares none of that code
    raise AssertionError(f"{module}: no room in the table")


def imports_of(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            # "from autoscaler import collection" imports the module autoscaler.collection.
            names.update(f"{node.module}.{alias.name}" for alias in node.names if node.module in OURS)
    return {name for name in names if name.split(".")[0] in OURS}


MODULES = sorted(
    ".".join(path.relative_to(ROOT).with_suffix("").parts)
    for package in OURS
    for path in (ROOT / package).glob("*.py")
    if path.name != "__init__.py"
)


@pytest.mark.parametrize("module", MODULES)
def test_module_imports_only_what_its_room_allows(module):
    rule = allowed(module)
    if rule is None:
        return
    own = module.split(".")[0]
    imported = imports_of(ROOT / (module.replace(".", "/") + ".py"))
    outside = {name for name in imported if name.split(".")[0] != own and name not in OURS}
    crossing = {name for name in outside if name not in rule and name.split(".")[0] not in rule}
    assert not crossing, f"{module} imports {sorted(crossing)}; its room allows {sorted(rule)}"


@pytest.mark.parametrize("module", sorted(AUTOSCALER_CORE))
def test_autoscaler_core_imports_no_shell(module):
    imported = imports_of(ROOT / (module.replace(".", "/") + ".py"))
    shells = {name for name in imported if name.startswith("autoscaler.") and name not in AUTOSCALER_CORE}
    assert not shells, f"{module} (pure core) imports the shell {sorted(shells)}"


def top_level_imports(module: str) -> set[str]:
    """Every package ``module`` imports (``import a.b`` and ``from a.b import c`` both give ``a``)."""
    tree = ast.parse((ROOT / (module.replace(".", "/") + ".py")).read_text())
    imported = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import)
                for alias in node.names}  # fmt: skip
    imported |= {node.module.split(".")[0] for node in ast.walk(tree)
                 if isinstance(node, ast.ImportFrom) and node.module}  # fmt: skip
    return imported


PROCESS_CONTROL = {"subprocess", "signal", "ctypes"}


@pytest.mark.parametrize("module", [m for m in MODULES if m.startswith("autoscaler.")])
def test_autoscaler_starts_no_processes(module):
    """A backend starts and stops pods (localbackend/ as local processes); the autoscaler only
    decides and asks its actuator, so the same loop drives any backend."""
    imported = top_level_imports(module)
    assert not imported & PROCESS_CONTROL, f"{module} imports {sorted(imported & PROCESS_CONTROL)}"


def test_every_package_of_ours_has_modules_checked():
    assert {module.split(".")[0] for module in MODULES} == set(OURS)


PURE_CORES = sorted(
    AUTOSCALER_CORE
    | {"autoscaler.actuator"}
    | {"localbackend.spawn_limit", "localbackend.capacity"}
    | {"kubebackend.enrollment", "kubebackend.endpoints", "kubebackend.sidecar", "kubebackend.rbac"}
    | {"kubebackend.leader", "kubebackend.activator_view"}
    | {"httpengine.errors", "httpengine.head"}
    | {"queueproxy.breaker", "queueproxy.stats", "queueproxy.auth", "queueproxy.payload_events"}
    | {"activator.throttler", "activator.routing", "activator.config", "activator.probing"}
    | {"activator.reporter"}
    | {"predictor.batch_planner", "predictor.config", "predictor.datatypes", "predictor.protocol"}
    | {"predictor.signature", "predictor.model_cache", "predictor.model_status"}
    | {"simulation.limits", "simulation.queueing", "simulation.sample", "simulation.pareto"}
    | {"simulation.cluster"}
    | {"kpa.load_phases", "kpa.load_report"}
    | {"fakecluster.store", "fakecluster.patches", "fakecluster.strategic", "fakecluster.selectors"}
    | {"fakecluster.pod_spec", "fakecluster.pod_status"}
    | {"tracing.config"}
    | {"graph.spec", "graph.condition", "graph.routing", "graph.targets"}
)
CLOCKS_AND_IO = {"time", "datetime", "asyncio", "socket", "subprocess", "threading", "httpx", "uvloop"}


@pytest.mark.parametrize("module", PURE_CORES)
def test_pure_cores_read_no_clock_and_do_no_io(module):
    """Time is a parameter: the simulator and the live loop hand these the same ``now``."""
    imported = top_level_imports(module)
    assert not imported & CLOCKS_AND_IO, f"{module} imports {sorted(imported & CLOCKS_AND_IO)}"


def test_pure_cores_are_the_strictly_type_checked_modules():
    """pyproject.toml's strict mypy override lists exactly PURE_CORES: a new pure module is typed strictly,
    and a strictly typed module is held to no clock and no I/O."""
    mypy = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["mypy"]
    strict = [o for o in mypy["overrides"] if o.get("disallow_untyped_defs")]
    assert len(strict) == 1, "one [[tool.mypy.overrides]] section with the strict flags, listing PURE_CORES"
    listed = set(strict[0]["module"])
    assert listed == set(PURE_CORES), (
        f"pure but not strictly typed: {sorted(set(PURE_CORES) - listed)}; "
        f"strictly typed but not in PURE_CORES: {sorted(listed - set(PURE_CORES))}"
    )
