"""`kpa controller`, the command: reaches the fake API server through a kubeconfig, leads, serves its
status (which `kpa status --controller URL` shows), stops on SIGTERM; bad flags and a missing
kubeconfig say what to give instead."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading

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


def test_the_command_leads_serves_its_status_and_stops_on_sigterm(tmp_path):
    with Kube() as kube:
        kube.discovery.create_namespaced_endpoint_slice("kpa-system", activator_slice())
        kube.apps.create_namespaced_deployment(
            NS,
            deployment("hello", {"autoscaling.knative.dev/class": "kpa.autoscaling.knative.dev"}, replicas=1),
        )
        config = kubeconfig(tmp_path / "kubeconfig", kube.server.url)
        env = {**os.environ, "NO_PROXY": "127.0.0.1,localhost"}
        command = kpa("controller", "--kubeconfig", config, "--host", "127.0.0.1", "--port", "0")
        process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, env=env)
        lines: list[str] = []
        reader = threading.Thread(target=lambda: lines.extend(process.stderr), daemon=True)
        reader.start()
        try:
            wait_until_blocking(lambda: any("leading; status on" in line for line in lines), timeout=30,
                                what=lambda: "".join(lines))  # fmt: skip
            url = (
                next(line for line in lines if "leading; status on" in line)
                .split("status on ")[1]
                .split("/status")[0]
            )
            doc = httpx.get(url + "/status", timeout=5).json()
            assert doc["leader"] is True and [r["name"] for r in doc["revisions"]] == ["hello"]
            wide = {**env, "COLUMNS": "200"}  # rich shortens cells to the console's width
            shown = subprocess.run(
                kpa("status", "--controller", url), capture_output=True, text=True, timeout=30, env=wide
            )
            assert shown.returncode == 0 and "kpa controller" in shown.stdout and "ns/hello" in shown.stdout
            process.send_signal(signal.SIGTERM)
            assert process.wait(timeout=15) == 0
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
        reader.join(5)
        assert "kpa controller: stopped" in "".join(lines)


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
    ],
)
def test_bad_flags_say_what_to_give_instead(args, says):
    done = subprocess.run(kpa("controller", *args), capture_output=True, text=True, timeout=30)
    assert done.returncode == 2
    assert says in done.stderr
