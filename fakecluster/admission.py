"""Mutating admission: on a create, the fake calls every matching webhook of the stored
MutatingWebhookConfigurations over HTTPS with an ``admission.k8s.io/v1`` AdmissionReview and
applies the JSONPatch it answers (reference §1.6), before the object is validated and stored.

What matches: ``rules`` (operations, apiGroups, apiVersions, resources, scope), ``objectSelector``,
and ``namespaceSelector`` against the one label every namespace has
(``kubernetes.io/metadata.name``) — the fake keeps no Namespace objects. ``clientConfig.url`` is
called as given; ``clientConfig.service`` through the Service's EndpointSlice (its first ready
address, on the slice's port named as the Service port — a named ``targetPort`` resolved against the
pod, as kube-apiserver resolves it — else the numbered ``targetPort``), with TLS checked for
``<service>.<namespace>.svc`` against ``caBundle``. A webhook that fails is an error or skipped as
its ``failurePolicy`` says.
"""

from __future__ import annotations

import base64
import json
import ssl
import uuid
from typing import Any

import httpx

from fakecluster import errors, patches, selectors
from fakecluster.cluster import Cluster
from fakecluster.errors import ApiError
from fakecluster.paths import Target
from fakecluster.resources import ENDPOINTSLICES, MUTATING_WEBHOOKS, SERVICES, ResourceType

Object = dict[str, Any]


class Denied(ApiError):
    """A webhook's refusal, answered to the client as the webhook worded it (never retried or ignored)."""


def _listed(values: list[str] | None, value: str) -> bool:
    return values is not None and ("*" in values or value in values)


def rule_matches(rule: Object, operation: str, resource: ResourceType) -> bool:
    scope = rule.get("scope", "*")
    return (
        _listed(rule.get("operations"), operation)
        and _listed(rule.get("apiGroups"), resource.group)
        and _listed(rule.get("apiVersions"), resource.version)
        and (_listed(rule.get("resources"), resource.plural) or "*/*" in (rule.get("resources") or []))
        and (scope == "*" or (scope == "Namespaced") == resource.namespaced)
    )


def applies(webhook: Object, operation: str, target: Target, obj: Object) -> bool:
    """Whether ``webhook`` is called for this write: a rule matches and both selectors select it."""
    if not any(rule_matches(rule, operation, target.resource) for rule in webhook.get("rules") or []):
        return False
    labels = (obj.get("metadata") or {}).get("labels") or {}
    if not selectors.label_matcher(selectors.render(webhook.get("objectSelector")))(labels):
        return False
    namespace_labels = {"kubernetes.io/metadata.name": target.namespace or ""}
    return not target.resource.namespaced or selectors.label_matcher(
        selectors.render(webhook.get("namespaceSelector"))
    )(namespace_labels)


def review(uid: str, operation: str, target: Target, obj: Object) -> Object:
    """The AdmissionReview the API server POSTs."""
    resource = target.resource
    return {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": uid,
            "kind": {"group": resource.group, "version": resource.version, "kind": resource.kind},
            "resource": {"group": resource.group, "version": resource.version, "resource": resource.plural},
            "requestKind": {"group": resource.group, "version": resource.version, "kind": resource.kind},
            "requestResource": {
                "group": resource.group,
                "version": resource.version,
                "resource": resource.plural,
            },
            "name": (obj.get("metadata") or {}).get("name", ""),
            "namespace": target.namespace or "",
            "operation": operation,
            "userInfo": {"username": "system:fakecluster", "groups": ["system:masters"]},
            "object": obj,
            "oldObject": None,
            "dryRun": False,
            "options": {"kind": "CreateOptions", "apiVersion": "meta.k8s.io/v1"},
        },
    }


def mutated(obj: Object, answer: Any, uid: str, webhook: str) -> Object:
    """``obj`` with the webhook's ``answer`` applied: its JSONPatch, or the denial as an error."""
    response = answer.get("response") if isinstance(answer, dict) else None
    if not isinstance(response, dict) or answer.get("apiVersion") != "admission.k8s.io/v1":
        raise ValueError("the answer is not an admission.k8s.io/v1 AdmissionReview with a response")
    if response.get("uid") != uid:
        raise ValueError(f"response.uid {response.get('uid')!r} is not the request's {uid!r}")
    if not response.get("allowed"):
        status = response.get("status") or {}
        why = status.get("message", "without explanation")
        message = f'admission webhook "{webhook}" denied the request: {why}'
        raise Denied(status.get("code", 400), status.get("reason", "BadRequest"), message)
    if "patch" not in response:
        return obj
    if response.get("patchType") != "JSONPatch":
        raise ValueError(f"patchType {response.get('patchType')!r}: only JSONPatch is defined")
    patched = patches.json_patch(obj, json.loads(base64.b64decode(response["patch"])))
    if not isinstance(patched, dict):
        raise ValueError(f"the webhook's patch made the object a {type(patched).__name__}")
    return patched


class MutatingAdmission:
    """Calls the cluster's mutating webhooks for a write; the routes await it before a create."""

    def __init__(self, cluster: Cluster) -> None:
        self._cluster = cluster
        # One TLS context per caBundle, made once: ssl.create_default_context() loads the system's
        # CA store, ~60 ms here, which every pod create used to pay (a scale from zero included).
        self._contexts: dict[str, ssl.SSLContext] = {}

    async def __call__(self, operation: str, target: Target, obj: Object) -> Object:
        if not isinstance(obj, dict):
            return obj  # validation refuses it next, with the reason
        configurations = self._cluster.list_collection(MUTATING_WEBHOOKS, None)["items"]
        for configuration in sorted(configurations, key=lambda item: item["metadata"]["name"]):
            for webhook in configuration.get("webhooks") or []:
                if applies(webhook, operation, target, obj):
                    obj = await self._call(webhook, operation, target, obj)
        return obj

    async def _call(self, webhook: Object, operation: str, target: Target, obj: Object) -> Object:
        name, uid = webhook["name"], str(uuid.uuid4())
        try:
            url, server_name = self._address(webhook.get("clientConfig") or {})
            timeout_s = webhook.get("timeoutSeconds", 10)
            context = self._context((webhook.get("clientConfig") or {}).get("caBundle") or "")
            async with httpx.AsyncClient(verify=context, timeout=timeout_s, trust_env=False) as client:
                answer = await client.post(
                    f"{url}?timeout={timeout_s}s",
                    json=review(uid, operation, target, obj),
                    extensions={"sni_hostname": server_name} if server_name else {},
                )
            answer.raise_for_status()
            return mutated(obj, answer.json(), uid, name)
        except Denied:
            raise
        except (ApiError, httpx.HTTPError, ValueError, LookupError, ssl.SSLError) as error:
            if webhook.get("failurePolicy", "Fail") == "Ignore":
                return obj
            raise errors.internal(f'failed calling webhook "{name}": {error}') from None

    def _context(self, bundle: str) -> ssl.SSLContext:
        """The context trusting ``bundle`` (base64 PEM), or the system's CAs when it is empty."""
        context = self._contexts.get(bundle)
        if context is None:
            cadata = base64.b64decode(bundle).decode() if bundle else None
            context = self._contexts[bundle] = ssl.create_default_context(cadata=cadata)
        return context

    def _address(self, client_config: Object) -> tuple[str, str | None]:
        """The URL to POST to, and the TLS server name when it differs from the URL's host."""
        if client_config.get("url"):
            return client_config["url"], None
        service = client_config.get("service")
        if not service:
            raise ValueError("clientConfig has neither url nor service")
        namespace, name, port = service["namespace"], service["name"], service.get("port", 443)
        spec = self._cluster.get(SERVICES, namespace, name).get("spec") or {}
        entry: dict[str, Any] = next((e for e in spec.get("ports") or [] if e.get("port") == port), {})
        target = entry.get("targetPort", port)
        slices = self._cluster.list_collection(
            ENDPOINTSLICES, namespace, f"kubernetes.io/service-name={name}"
        )["items"]
        # As kube-apiserver's endpoint resolver: the endpoints' port named as the Service port (so a
        # named targetPort works), else a numbered targetPort.
        target = next(
            (
                p.get("port")
                for piece in slices
                for p in piece.get("ports") or []
                if p.get("name", "") == entry.get("name", "") and isinstance(p.get("port"), int)
            ),
            target,
        )
        ready = [
            endpoint["addresses"][0]
            for piece in slices
            for endpoint in piece.get("endpoints") or []
            if (endpoint.get("conditions") or {}).get("ready") is not False
        ]
        if not ready or not isinstance(target, int):
            raise LookupError(
                f"service {namespace}/{name} has no ready endpoint on a numbered port {target!r}"
            )
        return f"https://{ready[0]}:{target}{service.get('path', '')}", f"{name}.{namespace}.svc"
