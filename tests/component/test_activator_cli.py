"""`kpa activator` as a child process: JSON ready line, serving, admin, clean SIGTERM, bad flags."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys

import httpx
import pytest
from activator_fixtures import FakeAutoscaler, Pod, run

KPA = [sys.executable, "-m", "kpa", "activator"]


def test_cli_serves_revisions_from_a_file_and_stops_cleanly_on_sigterm(tmp_path):
    async def body():
        async with Pod() as pod, FakeAutoscaler() as autoscaler:
            revisions = tmp_path / "revisions.yaml"
            revisions.write_text(
                "revisions:\n"
                "  - name: hello\n"
                "    container_concurrency: 1\n"
                f"    endpoints: ['{pod.address}']\n"
            )
            proc = await asyncio.create_subprocess_exec(
                *KPA, "--port", "0", "--admin-port", "0", "--revisions", str(revisions),
                "--revision", "other.ns:cc=4,timeout=5", "--autoscaler-url", autoscaler.url,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
                env={"POD_NAME": "activator-7", "PROBE_FREQUENCY": "50ms", "PATH": "/usr/bin:/bin"},
            )
            try:
                ready = json.loads(await asyncio.wait_for(proc.stdout.readline(), 10))
                assert ready["event"] == "listening"
                assert ready["revisions"] == ["default/hello", "ns/other"]
                async with httpx.AsyncClient(timeout=5.0) as client:
                    serving = f"http://127.0.0.1:{ready['serving_port']}"
                    reply = await client.get(serving, headers={"host": "hello"})
                    assert reply.status_code == 200
                    await autoscaler.wait_for(lambda stats: len(stats) >= 1, timeout=3.0)
                    assert autoscaler.stats()[0][2].pod_name == "activator-7"
                    status = (await client.get(f"http://127.0.0.1:{ready['admin_port']}/revisions")).json()
                    other = next(r for r in status["revisions"] if r["name"] == "other")
                    assert (other["container_concurrency"], other["timeout_seconds"]) == (4, 5.0)
                proc.send_signal(signal.SIGTERM)
                assert await asyncio.wait_for(proc.wait(), 10) == 0
            finally:
                if proc.returncode is None:
                    proc.kill()
                    await proc.wait()

    run(body, timeout=30)


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--port", "70000"], "--port=70000: must be a port in 0..65535"),
        (["--probe-frequency", "abc"], "--probe-frequency='abc': not a duration"),
        (["--probe-timeout", "-1"], "--probe-timeout='-1': must be a positive duration"),
        (["--revision", "hello:cc=x"], "--revision 'hello:cc=x': cc='x' is not a number"),
        (["--revision", "hello:color=red"], "bad option 'color=red'"),
        (["--revision", "hello:endpoints=nohost"], "endpoint address 'nohost'"),
        (["--activator-index", "2", "--activator-count", "2"], "activator index=2 count=2"),
        (["--autoscaler-url", "ftp://x"], "--autoscaler-url='ftp://x': must be an http://"),
        (["--revisions", "/nonexistent.yaml"], "--revisions /nonexistent.yaml: cannot read it"),
    ],
    ids=[
        "port-out-of-range", "probe-frequency-not-a-duration", "probe-timeout-negative",
        "revision-cc-not-a-number", "revision-unknown-option", "endpoint-without-port", "index-past-count",
        "autoscaler-url-not-http", "unreadable-revisions-file",
    ],
)  # fmt: skip
def test_bad_flags_exit_with_a_message_naming_them(flags, message):
    done = subprocess.run([*KPA, "--port", "0", "--admin-port", "0", *flags], capture_output=True, text=True,
                          timeout=20)
    assert done.returncode == 2
    assert message in done.stderr
