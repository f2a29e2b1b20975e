"""kubebackend/rbac.py, the RBAC contract, is consistent with what Kubernetes' RBAC can express."""

from __future__ import annotations

from kubebackend import rbac

VERBS = {"get", "list", "watch", "create", "update", "patch", "delete", "deletecollection"}


def test_every_call_is_a_kubernetes_verb_on_a_lowercase_plural_resource():
    for group, resource, verb in rbac.CONTROLLER_CALLS | rbac.ACTIVATOR_CALLS:
        assert verb in VERBS, (group, resource, verb)
        assert resource == resource.lower() and resource.split("/")[0].endswith("s"), resource


def test_names_restrict_only_calls_kubernetes_authorizes_by_name():
    # create has no name at authorization time; list/watch carry one only with a metadata.name field
    # selector, which the controller does not promise: a name on them would make the call fail.
    for call in rbac.CONTROLLER_NAMES:
        assert call in rbac.CONTROLLER_CALLS, call
        assert call[2] not in {"create", "list", "watch", "deletecollection"}, call


def test_namespace_local_resources_and_names_refer_to_calls_the_controller_makes():
    resources = {call[:2] for call in rbac.CONTROLLER_CALLS}
    assert resources >= rbac.CONTROLLER_LOCAL
    assert all(names for names in rbac.CONTROLLER_NAMES.values())


def test_the_activator_only_reads():
    assert {verb for *_, verb in rbac.ACTIVATOR_CALLS} == {"get", "list", "watch"}
