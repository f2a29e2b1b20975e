"""manifests/base's config-tracing: off by default, valid, and every key reaching the activator and the
controller."""

from __future__ import annotations

import pytest
from kustomize_objects import KUBECTL, NO_KUBECTL, one, render

from kubebackend import rbac
from tracing.config import ENV_OF_KEY, parse_tracing

pytestmark = [pytest.mark.skipif(KUBECTL is None, reason=NO_KUBECTL), pytest.mark.timeout(60)]


@pytest.mark.parametrize("deployment", [rbac.ACTIVATOR, rbac.CONTROLLER])
def test_config_tracing_is_off_by_default_valid_and_read_whole_by_the_activator_and_controller(deployment):
    """Every config-tracing key reaches the activator (its own spans) and the controller (which copies
    them into the queue-proxies it injects) as the variable the parser reads (docs/tracing.md)."""
    objects = render("base")
    data = one(objects, "ConfigMap", "config-tracing")["data"]
    assert set(data) == set(ENV_OF_KEY)
    assert not parse_tracing({k: v for k, v in data.items() if v}).enabled
    env = one(objects, "Deployment", deployment)["spec"]["template"]["spec"]["containers"][0]["env"]
    from_map = [e for e in env if "configMapKeyRef" in e.get("valueFrom", {})]
    refs = {e["name"]: e["valueFrom"]["configMapKeyRef"] for e in from_map}
    assert {name: ref["key"] for name, ref in refs.items()} == {v: k for k, v in ENV_OF_KEY.items()}
    assert all(ref["name"] == "config-tracing" and ref["optional"] for ref in refs.values())
