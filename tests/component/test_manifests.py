"""manifests/ as a user applies it: rendered by a real kustomize, every object valid for the Kubernetes
API's typed models, every name it refers to present, RBAC exactly kubebackend/rbac.py's calls, and the
examples enrolled by the controller's own enrollment code."""

from __future__ import annotations

import argparse
import copy
import re
import tomllib
from collections.abc import Mapping
from typing import Any

import pytest
from kustomize_objects import (
    KUBECTL,
    NO_KUBECTL,
    ROOT,
    Obj,
    containers,
    model_name,
    of_kind,
    one,
    pod_specs,
    render,
    selects,
    typed,
)

from autoscaler.config import CONFIG_KEYS, AutoscalerConfig, parse_config
from autoscaler.revision import settings_from
from fakecluster.patches import json_patch
from kpa.controller import configure
from kubebackend import certs, rbac
from kubebackend.endpoints import ACTIVATOR_PORT, MIN_ACTIVATORS
from kubebackend.enrollment import (
    enrollment_of_deployment,
    enrollment_of_inference_service,
    is_enrolled_deployment,
    is_enrolled_inference_service,
)
from kubebackend.leader import LEADER_LABEL, LEADER_SERVICE
from kubebackend.sidecar import (
    KSERVE_CONTAINER,
    QUEUE_PROXY,
    REVISION_LABEL,
    SidecarSpec,
    revision_of_pod,
    sidecar_patch,
)

pytestmark = [pytest.mark.skipif(KUBECTL is None, reason=NO_KUBECTL), pytest.mark.timeout(60)]

BASE, WEB, CNN = "base", "examples/deployment", "examples/inferenceservice"
ALL = (BASE, WEB, CNN)
SIDECAR, CERT_MANAGER = "examples/deployment-explicit-sidecar", "cert-manager"
NS = rbac.SYSTEM_NAMESPACE
CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding", "MutatingWebhookConfiguration"}


def base() -> tuple[Obj, ...]:
    return render(BASE)


def _pod_spec(deployment: Obj) -> Mapping[str, Any]:
    return deployment["spec"]["template"]["spec"]


def _pod_labels(deployment: Obj) -> Mapping[str, str]:
    return deployment["spec"]["template"]["metadata"]["labels"]


def _container_ports(deployment: Obj) -> dict[str | int, int]:
    """Every way a Service or probe may name a port of the pod: by name and by number."""
    ports: dict[str | int, int] = {}
    for container in _pod_spec(deployment)["containers"]:
        for port in container.get("ports") or ():
            ports[port["containerPort"]] = port["containerPort"]
            if "name" in port:
                ports[port["name"]] = port["containerPort"]
    return ports


# -- every object is valid --------------------------------------------------------------------------


@pytest.mark.parametrize("directory", [*ALL, SIDECAR, CERT_MANAGER])
def test_every_object_reads_into_its_typed_model_with_no_field_lost(directory):
    for obj in render(directory):
        if obj["apiVersion"].startswith("cert-manager.io/"):  # no typed model: checked below
            continue
        if obj["kind"] == "InferenceService":  # a custom resource: its pod parts are core types
            predictor = obj["spec"]["predictor"]
            for container in containers(predictor):
                assert typed(container, "V1Container") == container
            for volume in predictor.get("volumes") or ():
                assert typed(volume, "V1Volume") == volume
            assert typed(predictor["securityContext"], "V1PodSecurityContext") == predictor["securityContext"]
        else:
            assert typed(obj, model_name(obj)) == obj, f"{obj['kind']} {obj['metadata']['name']}"


def test_images_carry_the_project_version_as_their_tag():
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    wanted = {BASE: "kpa-emulator/kpa", WEB: "kpa-emulator/predictor", CNN: "kpa-emulator/predictor"}
    for directory, image in wanted.items():
        for obj in render(directory):
            for _, spec in pod_specs(obj):
                assert {c["image"] for c in containers(spec)} == {f"{image}:{version}"}


def test_the_base_lives_in_kpa_system_which_it_creates():
    one(base(), "Namespace", NS)
    for obj in base():
        namespace = obj["metadata"].get("namespace")
        assert namespace is None if obj["kind"] in CLUSTER_SCOPED else namespace == NS, obj["metadata"]


# -- names that refer to other objects ------------------------------------------------------------


@pytest.mark.parametrize("name", [rbac.CONTROLLER, rbac.ACTIVATOR])
def test_each_deployment_runs_as_its_own_service_account(name):
    deployment = one(base(), "Deployment", name)
    assert _pod_spec(deployment)["serviceAccountName"] == name
    assert one(base(), "ServiceAccount", name)["metadata"]["namespace"] == NS


@pytest.mark.parametrize("directory", [*ALL, SIDECAR])
def test_every_deployment_selects_its_own_pods_and_spreads_them(directory):
    for deployment in of_kind(render(directory), "Deployment"):
        labels = _pod_labels(deployment)
        assert selects(deployment["spec"]["selector"], labels), "selector must match the template labels"
        affinity = _pod_spec(deployment).get("affinity", {}).get("podAntiAffinity", {})
        for term in affinity.get("preferredDuringSchedulingIgnoredDuringExecution", ()):
            assert selects(term["podAffinityTerm"]["labelSelector"], labels)


@pytest.mark.parametrize("name", [rbac.CONTROLLER, rbac.ACTIVATOR])
def test_each_service_selects_its_deployments_pods_and_ports(name):
    service, deployment = one(base(), "Service", name), one(base(), "Deployment", name)
    assert selects({"matchLabels": service["spec"]["selector"]}, _pod_labels(deployment))
    assert deployment["spec"]["selector"]["matchLabels"] == service["spec"]["selector"]
    pod_ports = _container_ports(deployment)
    for port in service["spec"]["ports"]:
        assert port["targetPort"] in pod_ports, f"Service {name} port {port['name']}: no such container port"


def test_services_expose_the_documented_ports():
    def ports(name: str) -> dict[int, int]:
        deployment, service = one(base(), "Deployment", name), one(base(), "Service", name)
        return {p["port"]: _container_ports(deployment)[p["targetPort"]] for p in service["spec"]["ports"]}

    assert ports(rbac.CONTROLLER) == {8080: 8080, 443: 8443}
    assert ports(rbac.ACTIVATOR) == {ACTIVATOR_PORT: ACTIVATOR_PORT}


def test_the_disruption_budget_keeps_one_activator_and_selects_its_pods():
    pdb = one(base(), "PodDisruptionBudget", rbac.ACTIVATOR)
    assert pdb["spec"]["minAvailable"] == 1
    assert selects(pdb["spec"]["selector"], _pod_labels(one(base(), "Deployment", rbac.ACTIVATOR)))
    assert not selects(pdb["spec"]["selector"], _pod_labels(one(base(), "Deployment", rbac.CONTROLLER)))


def test_controller_and_activators_run_replicated_with_their_commands():
    controller = one(base(), "Deployment", rbac.CONTROLLER)
    activator = one(base(), "Deployment", rbac.ACTIVATOR)
    assert controller["spec"]["replicas"] == 2
    assert activator["spec"]["replicas"] >= MIN_ACTIVATORS
    assert _pod_spec(controller)["containers"][0]["args"][0] == "controller"
    args = _pod_spec(activator)["containers"][0]["args"]
    assert args[:2] == ["activator", "--kubernetes"]
    assert f"--port={ACTIVATOR_PORT}" in args


def test_each_replica_knows_its_pod_from_the_downward_api():
    """POD_NAME (the controller's Lease identity and leader label, its own image for the sidecar;
    the activator's slot by targetRef), POD_NAMESPACE, and the activator's POD_IP (its slot by IP)."""
    wanted = {
        rbac.CONTROLLER: {"POD_NAME": "metadata.name", "POD_NAMESPACE": "metadata.namespace"},
        rbac.ACTIVATOR: {
            "POD_NAME": "metadata.name",
            "POD_NAMESPACE": "metadata.namespace",
            "POD_IP": "status.podIP",
        },
    }
    for name, fields in wanted.items():
        env = _pod_spec(one(base(), "Deployment", name))["containers"][0]["env"]
        fields_of = [e for e in env if "fieldRef" in e.get("valueFrom", {})]  # not the config-tracing keys
        found = {e["name"]: e["valueFrom"]["fieldRef"]["fieldPath"] for e in fields_of}
        assert found == fields, name


def test_activators_push_stats_to_the_leader_only():
    args = _pod_spec(one(base(), "Deployment", rbac.ACTIVATOR))["containers"][0]["args"]
    url = next(a.split("=", 1)[1] for a in args if a.startswith("--autoscaler-url="))
    found = re.fullmatch(r"http://([a-z0-9-]+)\.([a-z0-9-]+)\.svc:(\d+)/stats", url)
    assert found, url
    service = one(base(), "Service", found[1])
    assert (service["metadata"]["namespace"], found[1]) == (NS, LEADER_SERVICE) and found[2] == NS
    assert int(found[3]) in {p["port"] for p in service["spec"]["ports"]}


def test_the_leader_service_selects_only_the_controller_pod_the_leader_labels():
    service, deployment = one(base(), "Service", LEADER_SERVICE), one(base(), "Deployment", rbac.CONTROLLER)
    selector = {"matchLabels": service["spec"]["selector"]}
    labels = _pod_labels(deployment)
    assert not selects(selector, labels), "a pod the leader has not labelled must not be selected"
    assert selects(selector, {**labels, LEADER_LABEL: "true"})
    assert not selects(selector, {LEADER_LABEL: "true"}), "another app's pod with the label"
    assert {p["port"]: _container_ports(deployment)[p["targetPort"]] for p in service["spec"]["ports"]} == {
        8080: 8080
    }


def test_prometheus_scrapes_a_port_the_pod_serves_metrics_on():
    for name in (rbac.CONTROLLER, rbac.ACTIVATOR):
        deployment = one(base(), "Deployment", name)
        annotations = deployment["spec"]["template"]["metadata"]["annotations"]
        assert annotations["prometheus.io/scrape"] == "true"
        assert annotations["prometheus.io/path"] == "/metrics"
        assert int(annotations["prometheus.io/port"]) in _container_ports(deployment).values()
    activator_args = _pod_spec(one(base(), "Deployment", rbac.ACTIVATOR))["containers"][0]["args"]
    # The activator's admin server (its /metrics) must listen on the pod IP, not loopback.
    assert {"--admin-port=8085", "--admin-host=0.0.0.0"} <= set(activator_args)


# -- the webhook ------------------------------------------------------------------------------------


def test_the_webhook_injects_on_pod_create_through_the_controller_service_and_never_blocks():
    config = one(base(), "MutatingWebhookConfiguration", rbac.WEBHOOK_CONFIGURATION)
    (hook,) = config["webhooks"]
    assert "v1" in hook["admissionReviewVersions"] and hook["sideEffects"] in ("None", "NoneOnDryRun")
    assert hook["failurePolicy"] == "Ignore"
    (rule,) = hook["rules"]
    assert rule["operations"] == ["CREATE"] and rule["scope"] == "Namespaced"
    assert (rule["apiGroups"], rule["apiVersions"], rule["resources"]) == ([""], ["v1"], ["pods"])
    target = hook["clientConfig"]["service"]
    service = one(base(), "Service", target["name"])
    assert service["metadata"]["namespace"] == target["namespace"] == NS and target["path"] == "/mutate-pods"
    assert target["port"] in {p["port"] for p in service["spec"]["ports"]}
    # Left for the controller to patch: a caBundle here would be reset by every `kubectl apply`.
    assert not hook["clientConfig"].get("caBundle")


@pytest.mark.parametrize(("namespace", "injected"), [(NS, False), ("kube-system", False), ("demo", True)])
def test_the_webhook_skips_its_own_and_the_system_namespace(namespace, injected):
    (hook,) = one(base(), "MutatingWebhookConfiguration", rbac.WEBHOOK_CONFIGURATION)["webhooks"]
    labels = {"kubernetes.io/metadata.name": namespace}  # set on every namespace by the API server
    assert selects(hook["namespaceSelector"], labels) is injected


# -- config-autoscaler ------------------------------------------------------------------------------


def test_config_autoscaler_holds_every_knative_key_at_its_default():
    data = one(base(), "ConfigMap", rbac.CONFIG_MAP)["data"]
    assert set(data) == CONFIG_KEYS
    assert all(isinstance(value, str) for value in data.values())
    assert parse_config(data, strict=True) == AutoscalerConfig()


# -- RBAC -------------------------------------------------------------------------------------------


def _granted(account: str) -> set[tuple[str, str, str, tuple[str, ...], str]]:
    """(group, resource, verb, resourceNames, where) for every right bound to kpa-system/<account>."""
    grants = set()
    for binding in of_kind(base(), "ClusterRoleBinding") + of_kind(base(), "RoleBinding"):
        if {"kind": "ServiceAccount", "name": account, "namespace": NS} not in binding["subjects"]:
            continue
        ref = binding["roleRef"]
        role = one(base(), ref["kind"], ref["name"])  # a binding to a missing role grants nothing
        where = role["metadata"].get("namespace", "cluster")
        assert binding["kind"] == "RoleBinding" or ref["kind"] == "ClusterRole", binding["metadata"]
        for rule in role["rules"]:
            names = tuple(sorted(rule.get("resourceNames") or ()))
            grants |= {
                (group, resource, verb, names, where)
                for group in rule["apiGroups"]
                for resource in rule["resources"]
                for verb in rule["verbs"]
            }
    return grants


def _wanted(calls: frozenset[rbac.Call], local=frozenset(), names=None):
    names = names or {}
    return {
        (*call, tuple(sorted(names.get(call, ()))), NS if call[:2] in local else "cluster") for call in calls
    }


def test_the_controller_may_make_exactly_its_calls_and_names_what_kubernetes_lets_it_name():
    wanted = _wanted(rbac.CONTROLLER_CALLS, rbac.CONTROLLER_LOCAL, rbac.CONTROLLER_NAMES)
    granted = _granted(rbac.CONTROLLER)
    assert granted - wanted == set(), "granted but not in kubebackend/rbac.py"
    assert wanted - granted == set(), "in kubebackend/rbac.py but not granted"


def test_the_activator_may_only_read_endpoints_pods_and_services():
    granted = _granted(rbac.ACTIVATOR)
    assert granted == _wanted(rbac.ACTIVATOR_CALLS)
    assert {verb for *_, verb, _, _ in granted} == {"get", "list", "watch"}


def test_no_rule_uses_a_wildcard():
    for role in of_kind(base(), "ClusterRole") + of_kind(base(), "Role"):
        for rule in role["rules"]:
            words = {*rule["apiGroups"], *rule["resources"], *rule["verbs"]}
            assert "*" not in words, role["metadata"]["name"]


# -- workloads run restricted -----------------------------------------------------------------------


@pytest.mark.parametrize("directory", ALL)
def test_every_container_runs_non_root_read_only_without_capabilities(directory):
    for obj in render(directory):
        for _, spec in pod_specs(obj):
            pod = spec["securityContext"]
            assert pod["runAsNonRoot"] is True and pod["seccompProfile"] == {"type": "RuntimeDefault"}
            for container in containers(spec):
                assert container["securityContext"] == {
                    "allowPrivilegeEscalation": False,
                    "readOnlyRootFilesystem": True,
                    "capabilities": {"drop": ["ALL"]},
                }, container["name"]
                if container in spec["containers"]:  # init containers: the pod's requests cover them
                    resources = container["resources"]
                    assert {"cpu", "memory"} <= set(resources["requests"]) <= set(resources["limits"])


@pytest.mark.parametrize("name", [rbac.CONTROLLER, rbac.ACTIVATOR])
def test_probes_call_ports_the_container_serves(name):
    deployment = one(base(), "Deployment", name)
    (container,) = _pod_spec(deployment)["containers"]
    for kind in ("readinessProbe", "livenessProbe"):
        assert container[kind]["httpGet"]["port"] in _container_ports(deployment), kind


# -- the examples, as the controller reads them -----------------------------------------------------


def test_the_deployment_example_is_enrolled_with_its_annotations():
    (web,) = render(WEB)
    assert is_enrolled_deployment(web)
    enrolled = enrollment_of_deployment(web)
    assert (enrolled.namespace, enrolled.name) == ("demo", "web")
    assert (enrolled.container_concurrency, enrolled.timeout_seconds) == (8, 60)
    settings = settings_from(enrolled.annotations, one(base(), "ConfigMap", rbac.CONFIG_MAP)["data"], 8)
    assert (settings.min_scale, settings.max_scale, settings.enable_scale_to_zero) == (0, 10, True)
    assert "replicas" not in web["spec"], "a re-apply would reset the scale the controller set"


def test_the_inference_service_example_is_enrolled_and_scales_to_zero():
    (cnn,) = render(CNN)
    assert is_enrolled_inference_service(cnn)
    enrolled = enrollment_of_inference_service(cnn)
    assert enrolled.annotations == {
        "autoscaling.knative.dev/min-scale": "0",
        "autoscaling.knative.dev/max-scale": "4",
        "autoscaling.knative.dev/metric": "concurrency",
        "autoscaling.knative.dev/target": "4",
    }
    assert (enrolled.namespace, enrolled.container_concurrency, enrolled.timeout_seconds) == ("demo", 8, 60)
    settings = settings_from(enrolled.annotations, one(base(), "ConfigMap", rbac.CONFIG_MAP)["data"], 8)
    assert (settings.min_scale, settings.max_scale, settings.enable_scale_to_zero) == (0, 4, True)
    # The webhook puts the queue-proxy in front of KServe's model server container, found by name.
    assert [c["name"] for c in cnn["spec"]["predictor"]["containers"]] == [KSERVE_CONTAINER]


@pytest.mark.parametrize("directory", [WEB, CNN])
def test_the_examples_serve_a_model_repository_and_are_probed_for_readiness(directory):
    (obj,) = render(directory)
    ((_, spec),) = pod_specs(obj)
    volumes = {v["name"] for v in spec["volumes"]}
    for container in containers(spec):
        assert {m["name"] for m in container.get("volumeMounts") or ()} <= volumes, container["name"]
    (server,) = spec["containers"]
    args = server["args"]
    repository = args[args.index("--model-repository") + 1]
    assert any(m["mountPath"] == repository for m in server["volumeMounts"])
    port = int(args[args.index("--port") + 1])
    assert [p["containerPort"] for p in server["ports"]] == [port]
    assert server["readinessProbe"]["httpGet"] == {"path": "/v2/health/ready", "port": port}


# -- the explicit sidecar (no webhook) --------------------------------------------------------------


def test_the_explicit_sidecar_is_exactly_what_the_webhook_injects_and_the_webhook_leaves_it_alone():
    """The example's pod is the webhook's patch applied to the pod a user would write for the webhook
    (no queue-proxy, the readiness probe on the user container): the doc cannot drift from the code."""
    (web,) = render(SIDECAR)
    assert is_enrolled_deployment(web)
    enrolled = enrollment_of_deployment(web)
    template = web["spec"]["template"]
    revision = revision_of_pod(
        template["metadata"]["labels"], [(enrolled.name, web["spec"]["selector"]["matchLabels"])]
    )
    assert revision == enrolled.name == template["metadata"]["labels"][REVISION_LABEL]
    (controller,) = _pod_spec(one(base(), "Deployment", rbac.CONTROLLER))["containers"]
    spec = SidecarSpec(  # what the controller's lookup answers for these pods (its own image)
        enrolled.namespace, enrolled.name, enrolled.container_concurrency, enrolled.timeout_seconds,
        controller["image"],
    )  # fmt: skip
    bare = copy.deepcopy(template)
    del bare["metadata"]["labels"][REVISION_LABEL], bare["spec"]["terminationGracePeriodSeconds"]
    bare["spec"]["containers"] = [c for c in bare["spec"]["containers"] if c["name"] != QUEUE_PROXY]
    (user,) = bare["spec"]["containers"]
    del user["lifecycle"]
    user["env"] = [e for e in user["env"] if e["name"] not in ("PORT", "K_REVISION")]
    (plain,) = render(WEB)  # the same predictor, written for the webhook: its probe on the container
    user["readinessProbe"] = _pod_spec(plain)["containers"][0]["readinessProbe"]
    assert json_patch(bare, sidecar_patch(bare, spec)) == template
    assert sidecar_patch(template, spec) == []


# -- cert-manager -----------------------------------------------------------------------------------


def test_the_cert_manager_overlay_is_the_base_with_a_certificate_the_controller_only_reads():
    objects = render(CERT_MANAGER)
    theirs = {(o["kind"], o["metadata"]["name"]): o for o in base()}
    ours = {(o["kind"], o["metadata"]["name"]): o for o in objects}
    assert set(ours) - set(theirs) == {("Issuer", "kpa-selfsigned"), ("Certificate", "kpa-webhook")}
    changed = {key for key in theirs if ours[key] != theirs[key]}
    assert changed == {
        ("Deployment", rbac.CONTROLLER),
        ("MutatingWebhookConfiguration", rbac.WEBHOOK_CONFIGURATION),
    }

    certificate = one(objects, "Certificate", "kpa-webhook")
    assert certificate["metadata"]["namespace"] == NS
    assert certificate["spec"]["secretName"] == rbac.WEBHOOK_SECRET
    assert set(certificate["spec"]["dnsNames"]) == set(certs.service_names(rbac.CONTROLLER, NS))
    assert "server auth" in certificate["spec"]["usages"]
    issuer = one(objects, certificate["spec"]["issuerRef"]["kind"], certificate["spec"]["issuerRef"]["name"])
    assert issuer["metadata"]["namespace"] == NS and "selfSigned" in issuer["spec"]

    webhook = one(objects, "MutatingWebhookConfiguration", rbac.WEBHOOK_CONFIGURATION)
    assert webhook["metadata"]["annotations"] == {"cert-manager.io/inject-ca-from": f"{NS}/kpa-webhook"}
    assert (
        webhook["webhooks"] == theirs["MutatingWebhookConfiguration", rbac.WEBHOOK_CONFIGURATION]["webhooks"]
    )

    (container,) = _pod_spec(ours["Deployment", rbac.CONTROLLER])["containers"]
    (original,) = _pod_spec(theirs["Deployment", rbac.CONTROLLER])["containers"]
    assert container["args"] == [*original["args"], "--webhook-certs=cert-manager"]
    parser = argparse.ArgumentParser()
    configure(parser)
    assert parser.parse_args(container["args"][1:]).webhook_certs == "cert-manager"

