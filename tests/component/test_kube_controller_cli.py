"""`kpa controller`, the command: reaches the fake API server through a kubeconfig, wins the Lease,
serves its status (which `kpa status --controller URL` shows) and its webhook, releases the Lease and
stops on SIGTERM, so a second replica takes over at once; bad flags, a missing kubeconfig and no
queue-proxy image say what to give instead."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import httpx
import pytest
from fakecluster_fixtures import Kube
from kube_controller_fixtures import NS, activator_slice, deployment
from waiting import wait_until_blocking

pytestmark = pytest.mark.timeout(60)


def kpa(*args: str) -> list[str]:
    return [sys.executable, "-m", "kpa", *args]


def kubeconfig(path, url: str) -> str:
    path.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: fake\n"
        f"clusters: [{{name: fake, cluster: {{server: '{url}'}}}}]\n"
        "users: [{name: tester, user: {}}]\n"
        "contexts: [{name: fake, context: {cluster: fake, user: tester}}]\n"
    )
    return str(path)


# Short election durations (lease 2 s, renew deadline 1.5 s, retry 0.5 s): the test waits seconds.
FAST = ["--lease-duration", "2", "--renew-deadline", "1.5", "--retry-period", "0.5"]


class Command:
    """`kpa controller` as a child process (its stderr gathered on a thread); killed at the end."""

    def __init__(self, config: str, *extra: str) -> None:
        env = {**os.environ, "NO_PROXY": "127.0.0.1,localhost"}
        env.pop("POD_NAME", None)
        command = kpa(
            "controller", "--kubeconfig", config, "--host", "127.0.0.1", "--port", "0",
            "--webhook-port", "0", "--queue-proxy-image", "kpa:test", *FAST, *extra,
        )  # fmt: skip
        self.process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, env=env)
        self.lines: list[str] = []
        self._reader = threading.Thread(target=lambda: self.lines.extend(self.process.stderr), daemon=True)
        self._reader.start()

    def url(self) -> str:
        """The status API's URL, once the command said it started."""
        wait_until_blocking(lambda: self._said("status on "), timeout=30, what=self.output)
        return self._said("status on ").split("status on ")[1].split("/status")[0]

    def _said(self, text: str) -> str:
        return next((line for line in self.lines if text in line), "")

    def output(self) -> str:
        return "".join(self.lines)

    def leading(self) -> bool:
        try:
            return bool(httpx.get(self.url() + "/status", timeout=5).json()["leader"])
        except httpx.HTTPError:
            return False

    def stop(self) -> int:
        self.process.send_signal(signal.SIGTERM)
        code = self.process.wait(timeout=20)
        self._reader.join(5)
        return code

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


def readyz(url: str) -> str:
    try:
        return httpx.get(url + "/readyz", timeout=5).text
    except httpx.HTTPError:
        return ""


def test_the_command_leads_serves_its_status_and_webhook_and_stops_on_sigterm(tmp_path):
    with Kube() as kube:
        kube.discovery.create_namespaced_endpoint_slice("kpa-system", activator_slice())
        kube.apps.create_namespaced_deployment(
            NS,
            deployment("hello", {"autoscaling.knative.dev/class": "kpa.autoscaling.knative.dev"}, replicas=1),
        )
        command = Command(kubeconfig(tmp_path / "kubeconfig", kube.server.url))
        try:
            url = command.url()
            wait_until_blocking(command.leading, timeout=15, what=command.output)
            doc = httpx.get(url + "/status", timeout=5).json()
            assert [r["name"] for r in doc["revisions"]] == ["hello"]
            # /readyz waits for the lists and the webhook (its certificate is made at start, slow on
            # a busy machine); the webhook's line may trail the leadership.
            wait_until_blocking(lambda: readyz(url) == "ok\n", timeout=30, what=command.output)
            wait_until_blocking(
                lambda: "webhook on https://127.0.0.1:" in command.output(), timeout=10, what=command.output
            )
            wide = {**os.environ, "NO_PROXY": "127.0.0.1,localhost", "COLUMNS": "200"}  # rich's width
            shown = subprocess.run(
                kpa("status", "--controller", url), capture_output=True, text=True, timeout=30, env=wide
            )
            assert shown.returncode == 0 and "kpa controller" in shown.stdout and "ns/hello" in shown.stdout
            assert command.stop() == 0
        finally:
            command.kill()
        assert "kpa controller: stopped" in command.output()
        lease = kube.coordination.read_namespaced_lease("kpa-controller", "kpa-system")
        assert not lease.spec.holder_identity  # released on the way out


def test_two_replicas_elect_one_leader_and_a_sigterm_hands_over_within_a_retry_period(tmp_path):
    with Kube() as kube:
        kube.discovery.create_namespaced_endpoint_slice("kpa-system", activator_slice())
        config = kubeconfig(tmp_path / "kubeconfig", kube.server.url)
        first, second = Command(config), Command(config)
        try:
            wait_until_blocking(lambda: first.leading() or second.leading(), timeout=30, what=first.output)
            leader, standby = (first, second) if first.leading() else (second, first)
            assert not standby.leading()
            pushed = httpx.post(standby.url() + "/stats", json=[], timeout=5)
            assert pushed.status_code == 503 and "kpa-controller-leader" in pushed.json()["error"]
            stopped = time.monotonic()
            assert leader.stop() == 0  # releases the Lease: no waiting out the 2 s lease
            took = wait_until_blocking(standby.leading, timeout=10, what=standby.output)
            assert time.monotonic() - stopped < 2.0 + 1.0, took
        finally:
            first.kill()
            second.kill()


@pytest.mark.parametrize(
    ("args", "says"),
    [
        pytest.param(
            ["--activator-service", "kpa-activator"], "give namespace/name", id="service without namespace"
        ),
        pytest.param(
            ["--kubeconfig", "/nonexistent/kubeconfig"], "cannot reach a cluster", id="no kubeconfig"
        ),
        pytest.param(["--kubeconfig", "x", "--in-cluster"], "not allowed with argument", id="both sources"),
        pytest.param(
            ["--lease-duration", "5", "--renew-deadline", "6"],
            "must exceed the renew deadline",
            id="durations",
        ),
    ],
)
def test_bad_flags_say_what_to_give_instead(args, says):
    done = subprocess.run(kpa("controller", *args), capture_output=True, text=True, timeout=30)
    assert done.returncode == 2
    assert says in done.stderr


def test_outside_a_pod_without_a_queue_proxy_image_it_says_to_give_one(tmp_path):
    config = kubeconfig(tmp_path / "kubeconfig", "http://127.0.0.1:9")  # never called
    env = {key: value for key, value in os.environ.items() if key not in ("POD_NAME", "POD_NAMESPACE")}
    done = subprocess.run(
        kpa("controller", "--kubeconfig", config, "--host", "127.0.0.1", "--port", "0"),
        capture_output=True,
        text=True,
        timeout=30,
        env=env,
    )
    assert done.returncode == 2
    assert "give --queue-proxy-image" in done.stderr
