"""The blocking Kubernetes calls of leader election, for :mod:`kubebackend.leader_election` to run
on its own threads: the Lease's get / create / update, and the leader label on pods.

Lease bodies go out and come back as raw JSON. The client's generated methods would validate a body
into ``V1Lease``, whose datetimes serialize through ``isoformat`` — ``+00:00``, and no fraction at
all when the microseconds happen to be 0, which the API server refuses — so the MicroTime that
:mod:`kubebackend.leader` wrote would not be what is sent. Every call raises ApiException (or a
urllib3/OS error) on failure, except a Lease read's 404, which is "no Lease".

API calls (kubebackend/rbac.py): leases get/create/update; pods patch and list.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import socket
from typing import Any

from kubernetes.client import ApiClient, ApiException, CoreV1Api

from kubebackend.leader import LEADER_LABEL, LeaseRecord

log = logging.getLogger("kpa.controller")

Found = tuple[LeaseRecord, str] | None  # the Lease's record and resourceVersion; None: no Lease


def holder_identity(pod_name: str | None = None) -> str:
    """The Lease holder identity: the pod's name (env ``POD_NAME``; the host name outside a pod)
    and a random suffix, so a restarted container is a new candidate, never mistaken for the leader
    it replaced (which would let it renew without waiting out that leader's lease)."""
    base = pod_name or os.environ.get("POD_NAME") or socket.gethostname()
    return f"{base}_{secrets.token_hex(5)}"


class LeaseCalls:
    """The Lease's three calls, on raw JSON (see the module docstring)."""

    def __init__(self, api_client: ApiClient, namespace: str, name: str, timeout: float) -> None:
        self._client = api_client
        self.namespace, self.name, self._timeout = namespace, name, timeout
        self._collection = f"/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases"

    def read(self) -> Found:
        try:
            return _found(self._request("GET", f"{self._collection}/{self.name}"))
        except ApiException as error:
            if error.status == 404:
                return None
            raise

    def create(self, record: LeaseRecord) -> Found:
        return _found(self._request("POST", self._collection, self._body(record, None)))

    def replace(self, record: LeaseRecord, resource_version: str) -> Found:
        """PUT with the resourceVersion read: 409 when anyone wrote the Lease since."""
        return _found(
            self._request("PUT", f"{self._collection}/{self.name}", self._body(record, resource_version))
        )

    def _body(self, record: LeaseRecord, resource_version: str | None) -> dict[str, Any]:
        metadata = {"name": self.name, "namespace": self.namespace}
        if resource_version is not None:
            metadata["resourceVersion"] = resource_version
        return {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": metadata,
            "spec": record.to_spec(),
        }

    def _request(self, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        headers = {"Accept": "application/json"}
        if body is not None:
            headers["Content-Type"] = "application/json"
        request = self._client.param_serialize(
            method, path, header_params=headers, body=body, auth_settings=["BearerToken"]
        )
        response = self._client.call_api(*request, _request_timeout=self._timeout)
        response.read()
        if not 200 <= response.status <= 299:
            raise ApiException.from_response(http_resp=response, body=None, data=None)
        doc: dict[str, Any] = json.loads(response.data or b"{}")
        return doc


def _found(doc: dict[str, Any]) -> Found:
    return LeaseRecord.from_spec(doc.get("spec")), str(doc["metadata"]["resourceVersion"])


class PodLabels:
    """The leader label on controller pods: set on our own, removed from former leaders'."""

    def __init__(self, api_client: ApiClient, namespace: str, pod_name: str, timeout: float) -> None:
        self._pods = CoreV1Api(api_client)
        self.namespace, self.pod_name, self._timeout = namespace, pod_name, timeout

    def mark(self) -> None:
        """Label our pod, then take the label off every other pod still carrying it (a former
        leader that could not clean up: partitioned, or killed before it could)."""
        self._patch(self.pod_name, "true")
        pods = self._pods.list_namespaced_pod(
            self.namespace, label_selector=f"{LEADER_LABEL}=true", _request_timeout=self._timeout
        )
        for pod in pods.items:
            name = pod.metadata.name if pod.metadata else None
            if name and name != self.pod_name:
                try:
                    self._patch(name, None)
                except ApiException as error:
                    if error.status != 404:  # gone already: nothing to remove
                        raise
                log.info("leader election: removed the leader label from former leader %s", name)

    def unmark(self) -> None:
        self._patch(self.pod_name, None)

    def _patch(self, pod: str, value: str | None) -> None:
        body = {"metadata": {"labels": {LEADER_LABEL: value}}}  # a strategic merge; None deletes the key
        self._pods.patch_namespaced_pod(pod, self.namespace, body, _request_timeout=self._timeout)
