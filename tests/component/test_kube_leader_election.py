"""Two controller replicas' electors against the fake API server: one leader at a time, always.

Short durations (lease 2 s, renew deadline 1.5 s, retry 0.3 s) keep each case to a few seconds. Each
elector has its own ApiClient, so one can be cut off from the API server (its host pointed at a
socket that never answers) while the other still reaches it. Every leadership term is recorded on
the one monotonic clock both share, and every test ends by checking that no two terms overlapped:
the old leader's ``on_stopped_leading`` ran before the new leader's ``on_started_leading``.
"""

from __future__ import annotations

import asyncio
import itertools
import re
import socket
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass

import pytest
from fakecluster_fixtures import Kube
from kubernetes import client
from waiting import wait_until

from fakecluster.resources import LEASES, PODS
from kubebackend.leader import LEADER_LABEL, Durations
from kubebackend.leader_calls import holder_identity
from kubebackend.leader_election import LeaderElector
from kubebackend.rbac import CONTROLLER, CONTROLLER_CALLS, SYSTEM_NAMESPACE

pytestmark = pytest.mark.timeout(60)

D = Durations(lease=2, renew_deadline=1.5, retry=0.3)
MAX_JITTERED_RETRY = D.retry * 2.2
SLACK = 0.5  # scheduling on a loaded 2-core machine
MICRO_TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z")


@dataclass
class Term:
    name: str
    started: float
    stopped: float | None = None


class Terms:
    """Every leadership term of every candidate, on the clock both candidates share."""

    def __init__(self) -> None:
        self.terms: list[Term] = []

    def started(self, name: str) -> None:
        self.terms.append(Term(name, time.monotonic()))

    def stopped(self, name: str) -> None:
        term = next((t for t in reversed(self.terms) if t.name == name and t.stopped is None), None)
        assert term is not None, f"{name} stopped leading without having started"
        term.stopped = time.monotonic()

    def last_start(self, name: str) -> float:
        return max(t.started for t in self.terms if t.name == name)

    def assert_never_two_leaders(self) -> None:
        ordered = sorted(self.terms, key=lambda t: t.started)
        for before, after in itertools.pairwise(ordered):
            assert before.stopped is not None and before.stopped <= after.started, (
                f"overlap: {before}, {after}"
            )


class Candidate:
    """One replica: an elector on its own ApiClient, its terms recorded in ``terms``."""

    def __init__(self, kube: Kube, name: str, terms: Terms, *, pod: bool = False) -> None:
        self.name = name
        self.api_client = client.ApiClient(kube.server.configuration())
        self.elector = LeaderElector(
            self.api_client,
            identity=f"{name}_0",
            on_started_leading=lambda: terms.started(name),
            on_stopped_leading=lambda: terms.stopped(name),
            durations=D,
            pod_name=name if pod else None,
        )
        self._url = kube.server.configuration().host

    @property
    def leading(self) -> bool:
        return self.elector.leading

    def cut_off(self, black_hole: str) -> None:
        self.api_client.configuration.host = black_hole

    def reconnect(self) -> None:
        self.api_client.configuration.host = self._url

    def kill(self, terms: Terms) -> float:
        """Stop the elector dead, as SIGKILL would: no more renewals, no release, no label removed
        (its term ends now: a dead process does nothing more). Returns when its last successful
        renewal was sent."""
        elector = self.elector
        assert elector._task is not None and elector._renewed_at is not None
        renewed_at = elector._renewed_at
        elector._task.cancel()
        terms.stopped(self.name)
        elector._renewed_at, elector._started, elector._labels = None, False, None
        elector.release_on_close = False
        return renewed_at


@asynccontextmanager
async def candidates(
    kube: Kube, terms: Terms, *names: str, pod: bool = False
) -> AsyncIterator[list[Candidate]]:
    running = [Candidate(kube, name, terms, pod=pod) for name in names]
    for candidate in running:
        candidate.elector.start()
    try:
        yield running
    finally:
        for candidate in running:
            await candidate.elector.close()
            candidate.api_client.close()


@contextmanager
def black_hole() -> Iterator[str]:
    """An address that accepts connections and never answers: requests to it hang until timeout."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        listener.close()


def lease(kube: Kube) -> dict:
    return kube.server.cluster.get(LEASES, SYSTEM_NAMESPACE, CONTROLLER)


async def one_leader(group: list[Candidate], timeout: float = 3.0) -> Candidate:
    await wait_until(lambda: sum(c.leading for c in group) == 1, timeout, "one of the candidates leads")
    return next(c for c in group if c.leading)


def test_exactly_one_of_two_leads_renews_and_writes_micro_time():
    async def body(kube: Kube) -> None:
        terms = Terms()
        async with candidates(kube, terms, "a", "b") as group:
            leader = await one_leader(group)
            first = lease(kube)["spec"]
            await asyncio.sleep(2 * D.lease)  # the behaviour under test: two lease durations pass
            assert [c.leading for c in group].count(True) == 1 and leader.leading
            spec = lease(kube)["spec"]
            assert spec["holderIdentity"] == leader.elector.identity
            assert (spec["leaseDurationSeconds"], spec["leaseTransitions"]) == (2, 0)
            assert spec["renewTime"] > first["renewTime"] and spec["acquireTime"] == first["acquireTime"]
            assert MICRO_TIME.fullmatch(spec["renewTime"]) and MICRO_TIME.fullmatch(spec["acquireTime"])
        assert len(terms.terms) == 1
        terms.assert_never_two_leaders()

    with Kube(controllers=()) as kube:
        asyncio.run(body(kube))


def test_the_standby_takes_over_a_killed_leader_after_one_lease_duration():
    async def body(kube: Kube) -> None:
        terms = Terms()
        async with candidates(kube, terms, "a", "b") as group:
            leader = await one_leader(group)
            standby = next(c for c in group if c is not leader)
            last_renewal = leader.kill(terms)
            killed_at = time.monotonic()
            await wait_until(lambda: standby.leading, D.lease + MAX_JITTERED_RETRY + SLACK + 1, "takeover")
            started = terms.last_start(standby.name)
            # Not before the record had stood still for a whole lease on the standby's clock ...
            assert started - last_renewal >= D.lease
            # ... and at most one jittered retry after that.
            assert started - killed_at <= D.lease + MAX_JITTERED_RETRY + SLACK
            assert lease(kube)["spec"]["leaseTransitions"] == 1
        terms.assert_never_two_leaders()

    with Kube(controllers=()) as kube:
        asyncio.run(body(kube))


def test_a_leader_cut_off_from_the_api_server_stops_at_its_renew_deadline_before_the_standby_starts():
    async def body(kube: Kube) -> None:
        terms = Terms()
        with black_hole() as nowhere:
            async with candidates(kube, terms, "a", "b") as group:
                leader = await one_leader(group)
                standby = next(c for c in group if c is not leader)
                leader.cut_off(nowhere)  # its renewals now hang (request timeout 0.75 s)
                await wait_until(
                    lambda: not leader.leading, D.renew_deadline + SLACK + 1, "the cut-off leader stops"
                )
                await wait_until(
                    lambda: standby.leading, D.lease + MAX_JITTERED_RETRY + SLACK + 1, "takeover"
                )
                (term,) = [t for t in terms.terms if t.name == leader.name]
                assert term.stopped is not None and term.stopped < terms.last_start(standby.name)
                leader.reconnect()  # back: a candidate that sees a live leader and waits
                await asyncio.sleep(2 * D.lease)  # the behaviour under test: it does not lead again
                assert standby.leading and not leader.leading
        terms.assert_never_two_leaders()
        assert [t.name for t in terms.terms] == [leader.name, standby.name]

    with Kube(controllers=()) as kube:
        asyncio.run(body(kube))


def test_injected_500s_and_409s_on_leases_never_make_two_leaders(caplog):
    async def body(kube: Kube) -> None:
        terms = Terms()
        async with candidates(kube, terms, "a", "b") as group:
            await one_leader(group)
            for round_ in range(12):  # 12 bursts over about 4 s: renewals, reads and takeovers fail
                verb, code = (("update", 409), ("*", 500), ("get", 503), ("update", 500))[round_ % 4]
                kube.server.fail_next(2 + round_ % 3, verb, "leases", code)
                await asyncio.sleep(D.retry + 0.05)
                assert sum(c.leading for c in group) <= 1
            injected = [r for r in caplog.records if "injected by the fake cluster" in r.getMessage()]
            assert len(injected) >= 12  # the electors met the failures (and survived them)
            # And one leads again. Not a takeover-time check (those are above): a failure left queued
            # may cost a takeover attempt a lease duration more, and a loaded machine more still.
            await one_leader(group, 3 * D.lease + MAX_JITTERED_RETRY + SLACK + 2)
        terms.assert_never_two_leaders()

    with Kube(controllers=()) as kube:
        asyncio.run(body(kube))


def test_a_clean_shutdown_releases_the_lease_and_the_standby_takes_over_at_once():
    async def body(kube: Kube) -> None:
        terms = Terms()
        async with candidates(kube, terms, "a", "b") as group:
            leader = await one_leader(group)
            standby = next(c for c in group if c is not leader)
            closed = time.monotonic()
            await leader.elector.close()
            released = lease(kube)["spec"]
            await wait_until(lambda: standby.leading, D.lease, "takeover after the release")
            took = terms.last_start(standby.name) - closed
            assert took <= MAX_JITTERED_RETRY + SLACK < D.lease  # no lease duration waited out
            spec = lease(kube)["spec"]
            assert (spec["holderIdentity"], spec["leaseDurationSeconds"]) == (standby.elector.identity, 2)
            assert spec["leaseTransitions"] == 1
        assert released["holderIdentity"] in ("", standby.elector.identity)
        terms.assert_never_two_leaders()

    with Kube(controllers=()) as kube:
        asyncio.run(body(kube))


def _pod(name: str) -> dict:
    return {
        "metadata": {"name": name, "labels": {"app": CONTROLLER}},
        "spec": {"containers": [{"name": "c"}]},
    }


def _leader_pods(kube: Kube) -> list[str]:
    listed = kube.server.cluster.list_collection(PODS, SYSTEM_NAMESPACE, f"{LEADER_LABEL}=true")
    return sorted(item["metadata"]["name"] for item in listed["items"])


def test_the_leader_labels_its_pod_a_new_leader_takes_the_label_and_only_rbac_calls_are_made():
    async def body(kube: Kube) -> None:
        terms = Terms()
        for name in ("a", "b"):
            kube.server.cluster.create(PODS, SYSTEM_NAMESPACE, _pod(name))
        async with candidates(kube, terms, "a", "b", pod=True) as group:
            leader = await one_leader(group)
            standby = next(c for c in group if c is not leader)
            await wait_until(lambda: _leader_pods(kube) == [leader.name], 3, "the leader's pod labelled")
            leader.kill(terms)  # it cannot clean up: its label stays until the next leader removes it
            await wait_until(
                lambda: _leader_pods(kube) == [standby.name], 5, "the label moves to the new leader"
            )
            await standby.elector.close()  # a clean shutdown takes its own label off
            assert _leader_pods(kube) == []
        terms.assert_never_two_leaders()
        allowed = {
            (verb, resource)
            for group, resource, verb in CONTROLLER_CALLS
            if group in ("", "coordination.k8s.io")
        }
        made = {
            (verb, resource): kube.server.requests(verb, resource)
            for verb in ("get", "list", "watch", "create", "update", "patch", "delete", "deletecollection")
            for resource in ("leases", "pods")
        }
        assert {call for call, count in made.items() if count} <= allowed
        assert sum(made.values()) == kube.server.requests()  # nothing else was asked

    with Kube(controllers=()) as kube:
        asyncio.run(body(kube))


def test_the_identity_is_the_pod_name_and_a_random_suffix(monkeypatch):
    monkeypatch.setenv("POD_NAME", "kpa-controller-7d9f-abcde")
    monkeypatch.setenv("POD_NAMESPACE", "elsewhere")
    first, second = holder_identity(), holder_identity()
    assert first.startswith("kpa-controller-7d9f-abcde_") and first != second
    elector = LeaderElector.from_environment(client.ApiClient(), lambda: None, lambda: None)
    assert (elector.pod_name, elector.namespace) == ("kpa-controller-7d9f-abcde", "elsewhere")
    assert elector.identity.startswith("kpa-controller-7d9f-abcde_") and elector.durations == Durations()
