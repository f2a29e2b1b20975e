"""manifests/base's config-tracing: off by default, valid, and every key reaching the activator."""

from __future__ import annotations

import pytest
from kustomize_objects import KUBECTL, NO_KUBECTL, one, render

from kubebackend import rbac
from tracing.config import ENV_OF_KEY, parse_tracing

pytestmark = [pytest.mark.skipif(KUBECTL is None, reason=NO_KUBECTL), pytest.mark.timeout(60)]


def test_the_activator_reads_config_tracing_which_is_off_by_default_and_valid():
    """Every config-tracing key reaches the activator as the variable its parser reads (docs/tracing.md)."""
    objects = render("base")
    data = one(objects, "ConfigMap", "config-tracing")["data"]
    assert set(data) == set(ENV_OF_KEY)
    assert not parse_tracing({k: v for k, v in data.items() if v}).enabled
    env = one(objects, "Deployment", rbac.ACTIVATOR)["spec"]["template"]["spec"]["containers"][0]["env"]
    from_map = [e for e in env if "configMapKeyRef" in e.get("valueFrom", {})]
    refs = {e["name"]: e["valueFrom"]["configMapKeyRef"] for e in from_map}
    assert {name: ref["key"] for name, ref in refs.items()} == {v: k for k, v in ENV_OF_KEY.items()}
    assert all(ref["name"] == "config-tracing" and ref["optional"] for ref in refs.values())
