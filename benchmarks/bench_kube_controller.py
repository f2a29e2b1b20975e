"""`kpa controller` on the fake cluster (issue 12, "Performance"): idle cost and scale from zero.

    .venv/bin/python benchmarks/bench_kube_controller.py [--revisions 1000] [--idle 30] [--baseline 10]
                                                         [--rounds 20]
    .venv/bin/python benchmarks/bench_kube_controller.py --smoke      # the same, small: under a minute

One fake API server with its node (``fakecluster``; pods are local processes on 127.x addresses)
runs in this process; ``kpa controller`` (through a kubeconfig, leading at once) and two
``kpa activator --kubernetes`` pods run as their own processes. ``--revisions`` plain Deployments at
0 replicas are enrolled (class kpa, initial scale 0), plus ``--rounds`` more for (c); they are
seeded straight into the store, so the API server counts only what the controller and the
activators ask.

(a) **API requests per idle revision per tick**, sampled over ``--idle`` seconds once the controller
    has made every revision's Service and EndpointSlice and their echoes have settled: every request
    the API server answers (the controller's and the activators'), divided by revisions and 2 s
    decision ticks. The baseline is a polling controller run here as a child process: one GET of
    each revision's Deployment per 2 s tick (``--baseline`` seconds), measured the same way.
(b) **The controller's CPU** while idle: its process CPU time over the same ``--idle`` seconds, per
    wall second (% of one core), against the poller's. Issue 12's bound: under 5 %.
(c) **Scale from zero through the in-cluster path**, for ``--rounds`` revisions in turn: a GET to an
    activator pod (``Host: <revision>-kpa.bench``) at zero; the activator holds it and pokes the
    controller, which patches the scale; the Deployment controller makes the pod and the kubelet
    starts it; the activator learns it is Ready from its watch, probes it, forwards. The pod's own
    start-to-ready time is the kubelet's: from its status write after starting the containers to the
    one marking the pod Ready (read as the writes happen, through the fake's controller seam).
    Overhead = (first response − request sent) − start-to-ready; issue 12's bound: p50 within 100 ms.
    The pods carry the queue-proxy as the sidecar webhook adds it (``kubebackend.sidecar`` applied
    to the template here: ``kpa controller`` does not serve the webhook yet) and a user container
    that is ``python -m http.server``; the revision is deleted after its round.

Prints the machine, every figure with its baseline and their ratio.
"""

from __future__ import annotations

import argparse
import http.client
import json
import logging
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import cpu_seconds, free_port, machine, stop
from _kube_objects import (
    KPA_IMAGE,
    NS,
    PY,
    SYSTEM,
    activator_objects,
    deployment,
    wake_deployment,
    webhook_objects,
)

from fakecluster import FakeApiServer
from fakecluster.cluster import Cluster
from fakecluster.kubelet import Kubelet
from fakecluster.resources import (
    CONFIGMAPS,
    DEPLOYMENTS,
    ENDPOINTSLICES,
    PODS,
    SERVICES,
)
from fakecluster.resources import (
    MUTATING_WEBHOOKS as WEBHOOKS,
)
from fakecluster.store import Change
from kubebackend.sidecar import REVISION_LABEL

TICK_S = 2.0  # Knative's decision tick, the controller's
ENTRYPOINTS = {KPA_IMAGE: [PY, "-m", "kpa"]}  # images/Dockerfile.kpa's ENTRYPOINT ["kpa"]
CPU_BOUND, OVERHEAD_BOUND_MS = 5.0, 100.0  # issue 12
STAGES = ("scaled", "created", "bound", "started", "ready")  # what Timeline records of a woken revision


@dataclass
class Timeline:
    """When each revision's scale, pod and pod states were written (monotonic seconds), recorded by a
    controller plugged into the fake's seam, first: it runs at each commit, before the fake's own
    controllers (the EndpointSlice controller's scan of 1,000 Services takes a while), so the times
    are the writes'. A watcher may still see a write before it is recorded here."""

    scaled: dict[str, float] = field(default_factory=dict)
    created: dict[str, float] = field(default_factory=dict)
    bound: dict[str, float] = field(default_factory=dict)  # the kubelet took it (spec.nodeName)
    started: dict[str, float] = field(default_factory=dict)
    ready: dict[str, float] = field(default_factory=dict)

    def observe(self, change: Change, cluster: Cluster) -> None:
        now = time.monotonic()
        obj = change.object
        if change.resource is DEPLOYMENTS and change.previous is not None:
            name = obj["metadata"]["name"]
            before = (change.previous.get("spec") or {}).get("replicas")
            if before == 0 and obj["spec"].get("replicas", 0) > 0:
                self.scaled.setdefault(name, now)
        elif change.resource is PODS and change.type != "DELETED":
            revision = (obj["metadata"].get("labels") or {}).get(REVISION_LABEL)
            if revision is None:
                return
            status = obj.get("status") or {}
            self.created.setdefault(revision, now)
            if (obj.get("spec") or {}).get("nodeName"):
                self.bound.setdefault(revision, now)
            states = [c.get("state") or {} for c in status.get("containerStatuses") or []]
            if states and all("running" in s for s in states):
                self.started.setdefault(revision, now)
            if any(c["type"] == "Ready" and c["status"] == "True" for c in status.get("conditions") or []):
                self.ready.setdefault(revision, now)


def wait(predicate: Callable[[], bool], timeout: float, what: str | Callable[[], str]) -> float:
    start = time.monotonic()
    while not predicate():
        if time.monotonic() - start > timeout:
            raise SystemExit(
                f"timed out after {timeout:g} s waiting for {what() if callable(what) else what}"
            )
        time.sleep(0.05)
    return time.monotonic() - start


def admin(ip: str, path: str) -> Any:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(f"http://{ip}:8085{path}", timeout=2) as answer:
            return json.loads(answer.read())
    except OSError:
        return None


def get(ip: str, host: str) -> int:
    connection = http.client.HTTPConnection(ip, 8012, timeout=60)
    try:
        connection.request("GET", "/", headers={"Host": host})
        answer = connection.getresponse()
        answer.read()
        return answer.status
    finally:
        connection.close()


def ready_ips(cluster: Cluster, namespace: str, selector: str) -> list[str]:
    pods = cluster.list_collection(PODS, namespace, selector, "")["items"]
    return sorted(
        p["status"]["podIP"]
        for p in pods
        if not p["metadata"].get("deletionTimestamp")
        and any(c["type"] == "Ready" and c["status"] == "True" for c in p["status"].get("conditions") or [])
    )


VERBS = ("get", "list", "watch", "create", "update", "patch", "delete", "deletecollection")
RESOURCES = (
    "deployments", "deployments/scale", "deployments/status", "pods", "pods/status", "services",
    "endpointslices", "leases", "events", "configmaps", "secrets", "mutatingwebhookconfigurations",
    "inferenceservices",
)  # fmt: skip


def counts(server: FakeApiServer) -> dict[tuple[str, str], int]:
    """Requests answered so far by (verb, resource), and ("*", "other") for the rest."""
    found = {(v, r): server.requests(v, r) for v in VERBS for r in RESOURCES}
    found = {key: n for key, n in found.items() if n}
    found[("*", "other")] = server.requests() - sum(found.values())
    return found


def percentile(values: list[float], q: float) -> float:
    """The median at 0.5, else the nearest-rank ``q`` quantile."""
    if q == 0.5:
        return statistics.median(values)
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


# ---- the baseline: a polling controller ------------------------------------------------------------


def poll(kubeconfig: str, namespace: str, seconds: float) -> None:
    """A controller that polls: every 2 s tick, one GET of each revision's Deployment. Prints its ticks
    and the CPU it used while polling (its start-up, imports included, is left out)."""
    from kubernetes import client, config

    api = client.AppsV1Api(config.new_client_from_config(config_file=kubeconfig))
    names = [d.metadata.name for d in api.list_namespaced_deployment(namespace).items]
    cpu, start = time.process_time(), time.monotonic()
    ticks, longest = 0, 0.0
    while time.monotonic() - start < seconds:
        tick = time.monotonic()
        for name in names:
            api.read_namespaced_deployment(name, namespace)
        ticks += 1
        spent = time.monotonic() - tick
        longest = max(longest, spent)
        time.sleep(max(0.0, TICK_S - spent))
    wall = time.monotonic() - start
    report = {"ticks": ticks, "longest_tick_s": round(longest, 2), "wall_s": wall}
    print(json.dumps({**report, "cpu_s": time.process_time() - cpu}))


# ---- the run -----------------------------------------------------------------------------------------


def main(args: argparse.Namespace) -> None:
    # A woken revision is deleted after its round; its pod's preStop (the queue-proxy's drain, a 30 s
    # quiet period) outlasts its 10 s grace, which the kubelet logs as a warning each time.
    logging.getLogger("fakecluster.kubelet").setLevel(logging.ERROR)
    print(f"machine: {machine()}")
    print(f"command: {' '.join([Path(sys.argv[0]).name, *sys.argv[1:]])}")
    total = args.revisions + args.rounds
    timeline = Timeline()
    with tempfile.TemporaryDirectory(prefix="bench-kube-") as tmp_name:
        tmp = Path(tmp_name)
        site = tmp / "site"
        site.mkdir()
        (site / "index.html").write_text("hello\n")
        (tmp / "pods").mkdir()
        with (
            Kubelet(max_pods=args.rounds + 8, entrypoints=ENTRYPOINTS, log_dir=tmp / "pods") as kubelet,
            FakeApiServer(controllers=[timeline.observe, *kubelet.controllers]) as server,
        ):
            cluster = server.cluster
            kubeconfig = tmp / "kubeconfig"
            kubeconfig.write_text(
                json.dumps(
                    {
                        "apiVersion": "v1", "kind": "Config", "current-context": "fake",
                        "clusters": [{"name": "fake", "cluster": {"server": server.url}}],
                        "users": [{"name": "bench", "user": {}}],
                        "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "bench"}}],
                    }
                )
            )  # fmt: skip
            port, webhook_port = free_port(), free_port()
            for resource, body in webhook_objects(webhook_port):
                cluster.create(resource, None if resource is WEBHOOKS else SYSTEM, body)
            activator, service = activator_objects(port, kubeconfig)
            cluster.create(SERVICES, SYSTEM, service)
            cluster.create(DEPLOYMENTS, SYSTEM, activator)
            cluster.create(
                CONFIGMAPS,
                SYSTEM,
                {"metadata": {"name": "config-autoscaler"}, "data": {"allow-zero-initial-scale": "true"}},
            )
            for i in range(args.revisions):
                cluster.create(DEPLOYMENTS, NS, deployment(f"idle-{i:04d}"))
            for i in range(args.rounds):
                cluster.create(DEPLOYMENTS, NS, wake_deployment(f"wake-{i:02d}", site))

            def pod_logs() -> str:
                names = [
                    p["metadata"]["name"] for p in cluster.list_collection(PODS, SYSTEM, "", "")["items"]
                ]
                return "\n".join(kubelet.logs(SYSTEM, n)[-1500:] for n in names)

            wait(lambda: len(ready_ips(cluster, SYSTEM, "app=kpa-activator")) == 2, 60, pod_logs)
            activators = ready_ips(cluster, SYSTEM, "app=kpa-activator")

            log_path = tmp / "controller.log"
            command = [PY, "-m", "kpa", "controller", "--kubeconfig", str(kubeconfig)]
            command += ["--host", "127.0.0.1", "--port", str(port), "--webhook-port", str(webhook_port)]
            command += ["--queue-proxy-image", KPA_IMAGE]
            with open(log_path, "w") as log:
                controller = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
            try:
                run_controller(args, server, cluster, controller, log_path, activators, total, tmp, timeline)
            finally:
                stop(controller, timeout=15)
                # The activator pods' watches are still open when the API server stops (the kubelet
                # stops them after it): uvicorn logs each cancelled stream. Nothing is wrong.
                logging.getLogger("uvicorn.error").setLevel(logging.CRITICAL)


def run_controller(
    args: argparse.Namespace,
    server: FakeApiServer,
    cluster: Cluster,
    controller: subprocess.Popen[bytes],
    log_path: Path,
    activators: list[str],
    total: int,
    tmp: Path,
    timeline: Timeline,
) -> None:
    started = time.monotonic()

    def slices() -> int:
        return len(cluster.list_collection(ENDPOINTSLICES, NS, "", "")["items"])

    def controller_log() -> str:
        return f"{slices()} of {total} slices; controller log:\n{log_path.read_text()[-3000:]}"

    wait(lambda: slices() == total, 300, controller_log)
    startup = time.monotonic() - started
    creates = server.requests("create", "services"), server.requests("create", "endpointslices")
    for i in range(args.rounds):  # every activator routes every wake-* revision (at zero)
        path = f"/revisions/{NS}/wake-{i:02d}"
        wait(
            lambda path=path: all(admin(ip, path) for ip in activators), 30, f"the activators knowing {path}"
        )
    time.sleep(3.0)  # the writes' watch echoes come back; then nothing is due until a request comes

    # (a) and (b): idle
    print(f"\nstartup: {total} revisions enrolled, {creates[0]} Services and {creates[1]} slices made, "
          f"in {startup:.1f} s (from the controller's start)")  # fmt: skip
    counts_before, cpu_before, wall_before = counts(server), cpu_seconds(controller.pid), time.monotonic()
    time.sleep(args.idle)  # the idleness under measurement
    wall = time.monotonic() - wall_before
    cpu_pct = 100 * (cpu_seconds(controller.pid) - cpu_before) / wall
    after = counts(server)
    idle = {key: n - counts_before.get(key, 0) for key, n in after.items() if n != counts_before.get(key, 0)}
    election = sum(n for (verb, resource), n in idle.items() if resource == "leases")
    per_revision = sum(idle.values()) - election  # anything else an idle revision could cause
    ours = per_revision / total / (wall / TICK_S)

    kubeconfig = str(tmp / "kubeconfig")
    gets_before = server.requests("get", "deployments")
    command = [PY, __file__, "--poll", kubeconfig, NS, str(args.baseline)]
    polled = json.loads(subprocess.run(command, capture_output=True, text=True, check=True).stdout)
    baseline = (server.requests("get", "deployments") - gets_before) / total / polled["ticks"]
    baseline_cpu = 100 * polled["cpu_s"] / polled["wall_s"]

    print(f"\n(a) API requests per idle revision per 2 s tick, over {wall:.0f} s idle, {total} revisions")
    print(f"    kpa controller (+ 2 activators): {ours:.4f}  ({per_revision} requests; besides them the "
          f"leader's Lease: {election}, {election / wall:.2f}/s for any number of revisions)")  # fmt: skip
    print(f"    every request while idle, by (verb, resource): {idle or 'none'}")
    print(f"    baseline, a poller (1 GET/revision/tick; {polled['ticks']} ticks, {polled['wall_s']:.0f} s, "
          f"longest tick {polled['longest_tick_s']} s): {baseline:.3f}")  # fmt: skip
    print(f"    ratio ours/baseline: {ours / baseline:.4f}")
    print(f"(b) controller CPU while idle: {cpu_pct:.2f} % of one core (bound {CPU_BOUND:g} %); "
          f"the poller: {baseline_cpu:.1f} %; ratio {cpu_pct / baseline_cpu:.3f}")  # fmt: skip

    # (c): scale from zero, one revision at a time
    rows = []
    for i in range(args.rounds):
        name = f"wake-{i:02d}"
        ip = activators[i % len(activators)]
        sent = time.monotonic()
        status = get(ip, f"{name}-kpa.{NS}")
        answered = time.monotonic()
        if status != 200:
            raise SystemExit(f"{name}: answered {status}")
        wait(lambda name=name: all(name in getattr(timeline, k) for k in STAGES), 5, f"{name}'s pod Ready")
        t = {k: getattr(timeline, k)[name] for k in STAGES}
        pod_s = t["ready"] - t["started"]
        rows.append(
            {
                "first": answered - sent,
                "pod": pod_s,
                "overhead": answered - sent - pod_s,
                "wake": t["scaled"] - sent,
                "create": t["created"] - t["scaled"],
                "bind": t["bound"] - t["created"],
                "spawn": t["started"] - t["bound"],
                "forward": answered - t["ready"],
            }
        )
        cluster.delete(DEPLOYMENTS, NS, name, {})  # its pod drains away meanwhile
        time.sleep(0.3)
    print(f"\n(c) scale from zero through an activator, {len(rows)} revisions in turn (ms)")
    print("    " + " ".join(f"{k:>9}" for k in ("", *rows[0])))
    for label, q in (("p50", 0.5), ("p90", 0.9), ("max", 1.0)):
        cells = [f"{1000 * percentile([r[k] for r in rows], q):9.1f}" for k in rows[0]]
        print(f"    {label:>9} " + " ".join(cells))
    overhead = 1000 * statistics.median(r["overhead"] for r in rows)
    pod = 1000 * statistics.median(r["pod"] for r in rows)
    print(
        "    first = request sent -> response; pod = the kubelet's status writes from containers started\n"
        "    to Ready (the baseline); overhead = first - pod, made of: wake = sent -> scale patched\n"
        "    (activator push, controller poke and PATCH); create = -> pod created (the fake's Deployment\n"
        "    controller, the controller's webhook); bind = -> the kubelet took it; spawn = -> containers\n"
        "    started (two processes); forward = Ready -> response (activator's watch, probe, proxy)"
    )
    print(f"    p50 overhead {overhead:.1f} ms (bound {OVERHEAD_BOUND_MS:g} ms); first response / pod "
          f"start-to-ready at p50: {(pod + overhead) / pod:.2f}")  # fmt: skip
    verdicts = {
        "(a) no request per idle revision per tick": per_revision == 0,
        f"(b) CPU under {CPU_BOUND:g} %": cpu_pct < CPU_BOUND,
        f"(c) p50 overhead within {OVERHEAD_BOUND_MS:g} ms": overhead <= OVERHEAD_BOUND_MS,
    }
    print("\n" + "\n".join(f"{'met' if ok else 'NOT MET'}: {what}" for what, ok in verdicts.items()))


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--revisions", type=int, default=1000, help="idle enrolled revisions (default 1000)")
    parser.add_argument("--idle", type=float, default=30.0, help="seconds of idleness measured (default 30)")
    parser.add_argument("--baseline", type=float, default=10.0, help="seconds the poller runs (default 10)")
    parser.add_argument("--rounds", type=int, default=20, help="revisions woken from zero (default 20)")
    parser.add_argument("--smoke", action="store_true", help="50 revisions, 5 s idle, 4 s poller, 3 rounds")
    parser.add_argument(
        "--poll", nargs=3, metavar=("KUBECONFIG", "NAMESPACE", "SECONDS"), help=argparse.SUPPRESS
    )
    args = parser.parse_args(argv)
    if args.smoke:
        args.revisions, args.idle, args.baseline, args.rounds = 50, 5.0, 4.0, 3
    return args


if __name__ == "__main__":
    parsed = parse()
    if parsed.poll:
        poll(parsed.poll[0], parsed.poll[1], float(parsed.poll[2]))
    else:
        main(parsed)
