"""manifests/examples/inferencegraph as a user applies it: rendered by a real kustomize, the router
Deployment enrolled by the controller's own enrollment code, its graph loadable by `kpa graph`."""

from __future__ import annotations

import argparse

from kustomize_objects import containers, one, pod_specs, render

from graph.spec import load_graph_text
from graph.targets import resolve_all
from kpa.graph import configure
from kubebackend.enrollment import enrollment_of_deployment, is_enrolled_deployment

EXAMPLE = "examples/inferencegraph"


def test_the_router_example_is_enrolled_and_serves_the_mounted_graph():
    objects = render(EXAMPLE)
    router = one(objects, "Deployment", "dog-breed-pipeline")
    assert is_enrolled_deployment(router) and "replicas" not in router["spec"]
    assert enrollment_of_deployment(router).annotations["autoscaling.knative.dev/min-scale"] == "0"
    ((_, spec),) = pod_specs(router)
    (server,) = containers(spec)
    parser = argparse.ArgumentParser()
    configure(parser)
    args = parser.parse_args(server["args"][1:])  # the image's entrypoint is `kpa`
    assert server["args"][0] == "graph"
    mount = next(m for m in server["volumeMounts"] if args.graph.startswith(m["mountPath"] + "/"))
    volume = next(v for v in spec["volumes"] if v["name"] == mount["name"])
    config_map = one(objects, "ConfigMap", volume["configMap"]["name"])
    graph = load_graph_text(config_map["data"][args.graph.rsplit("/", 1)[1]], EXAMPLE)
    targets = resolve_all(graph, None, args.service_url)
    assert [t.url for t in targets.values()] == [
        "http://cat-dog-kpa/v1/models/cat-dog:predict",
        "http://dog-breed-kpa/v1/models/dog-breed:predict",
    ]
    assert [p["containerPort"] for p in server["ports"]] == [args.port]
    assert server["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": args.port}
