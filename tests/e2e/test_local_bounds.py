"""Bounds of the local backend: the capacity cap, pending pods, which pods scale-down stops, and
that nothing `kpa up` started outlives it — SIGTERM, Ctrl-C twice, even SIGKILL."""

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil
from stack_fixtures import REVISION, run, running_stack, stack_text
from waiting import wait_until, wait_until_blocking

from localbackend.actuator import LocalActuator
from localbackend.pod import PodTemplate

SAMPLE_APP = [sys.executable, "-m", "kpa.sample_app"]


class KpaUp:
    """`kpa up` as a child process on free ports, found through its ready file."""

    def __init__(self, tmp_path: Path, stack: str, *flags: str) -> None:
        (tmp_path / "stack.yaml").write_text(stack)
        self.ready_file = tmp_path / "ready.json"
        self.stderr = (tmp_path / "kpa-up.err").open("wb")
        command = [sys.executable, "-m", "kpa", "up", str(tmp_path / "stack.yaml"), "--port", "0"]
        command += ["--admin-port", "0", "--no-live", "--ready-file", str(self.ready_file)]
        self.proc = subprocess.Popen(
            [*command, "--log-dir", str(tmp_path / "logs"), *flags],
            stdout=subprocess.DEVNULL,
            stderr=self.stderr,
        )
        self.err_path = tmp_path / "kpa-up.err"
        self.admin = ""

    def wait_ready(self, timeout: float = 20.0) -> None:
        def listening() -> bool:
            assert self.proc.poll() is None, f"kpa up exited {self.proc.returncode}: {self.err()}"
            return self.ready_file.exists() and self.ready_file.read_text().endswith("\n")

        wait_until_blocking(listening, timeout, lambda: f"kpa up to listen: {self.err()}", 0.05)
        self.admin = json.loads(self.ready_file.read_text())["admin"]

    def status(self) -> dict:
        return httpx.get(self.admin + "/status", timeout=5).json()

    def poll_status(self, predicate, timeout: float, what: str) -> dict:
        """The first /status document that satisfies ``predicate``."""
        seen: list[dict] = []

        def satisfied() -> bool:
            seen.append(self.status())
            return predicate(seen[-1])

        wait_until_blocking(satisfied, timeout, lambda: f"{what}: {seen[-1]}", 0.1)
        return seen[-1]

    def descendants(self) -> list[psutil.Process]:
        return psutil.Process(self.proc.pid).children(recursive=True)

    def err(self) -> str:
        return self.err_path.read_text(errors="replace")[-3000:]

    def close(self) -> None:
        """Whatever the test did, leave nothing behind."""
        survivors = self.descendants() if self.proc.poll() is None else []
        self.proc.kill()
        self.proc.wait()
        for child in survivors:
            child.kill()
        self.stderr.close()


def alive(processes: list[psutil.Process]) -> list[psutil.Process]:
    living = []
    for p in processes:
        try:
            if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                living.append(p)
        except psutil.NoSuchProcess:
            pass
    return living


def wait_all_gone(processes: list[psutil.Process], timeout: float) -> float:
    """Seconds until every one of ``processes`` is gone; on a timeout the survivors are killed."""

    def survivors() -> str:
        return f"every process gone: {[(p.pid, ' '.join(p.cmdline())) for p in alive(processes)]} still run"

    try:
        return wait_until_blocking(lambda: not alive(processes), timeout, survivors, 0.05)
    finally:
        for p in alive(processes):
            p.kill()


def runaway_stack() -> str:
    return stack_text(delay=0.0, cc=0, annotations={"min-scale": "100000"})


def test_runaway_min_scale_stays_at_the_cap_shows_pending_and_sigterm_leaves_no_child(tmp_path):
    """min-scale 100000 with --max-pods 3: three pods and 99,997 pending (in /status and in
    `kpa status`), never a fourth; SIGTERM then stops spawning at once and leaves no process."""
    up = KpaUp(tmp_path, runaway_stack(), "--max-pods", "3")
    try:
        up.wait_ready()
        doc = up.poll_status(lambda d: d["revisions"][0]["ready_pods"] == 3, 20, "three ready pods")
        peak = 0
        for _ in range(10):  # a second more: the cap holds
            doc = up.status()
            peak = max(peak, doc["capacity"]["pods"], len(doc["pod_pids"]) // 2)
            time.sleep(0.1)
        assert peak == 3, doc["capacity"]
        row = doc["revisions"][0]
        assert row["desired_pods"] == 100000 and row["pending_pods"] == 99997, row
        assert doc["capacity"]["max_pods"] == 3
        shown = subprocess.run(
            [sys.executable, "-m", "kpa", "status", "--url", up.admin],
            capture_output=True,
            text=True,
            timeout=20,
            env={**os.environ, "COLUMNS": "200"},
        )
        assert shown.returncode == 0, shown.stderr
        assert "pending" in shown.stdout and "99997" in shown.stdout, shown.stdout
        assert "pods 3/3 (cap)" in shown.stdout, shown.stdout

        children = up.descendants()
        assert len(children) >= 7, children  # three pods of two processes, and the orphan guard
        up.proc.send_signal(signal.SIGTERM)
        assert up.proc.wait(10) == 0, up.err()
        wait_all_gone(children, 3.0)
        assert "Traceback" not in up.err(), up.err()
    finally:
        up.close()


def test_sigkill_of_kpa_up_takes_its_pods_and_their_children_down(tmp_path):
    """A user container started through `sh -c` runs its server as a grandchild of `kpa up`. SIGKILL
    of `kpa up` runs none of its code: the parent-death signal takes the direct children and the
    orphan guard the rest of their process groups."""
    command = ["sh", "-c", f"{sys.executable} -m kpa.sample_app; exit 0"]  # sh forks, no exec
    up = KpaUp(tmp_path, stack_text(delay=0.0, cc=0, annotations={"min-scale": "2"}, command=command))
    try:
        up.wait_ready()
        up.poll_status(lambda d: d["revisions"][0]["ready_pods"] == 2, 20, "two ready pods")
        children = up.descendants()
        grandchildren = [p for p in children if p.ppid() != up.proc.pid]
        assert len(grandchildren) >= 2, [(p.pid, p.ppid(), p.cmdline()) for p in children]
        up.proc.kill()
        up.proc.wait()
        took = wait_all_gone(children, 5.0)
        assert took < 5.0
    finally:
        up.close()


def test_ctrl_c_twice_stops_at_once_and_leaves_no_child(tmp_path):
    """The second Ctrl-C does not wait for drains: every pod is killed and `kpa up` exits."""
    up = KpaUp(tmp_path, stack_text(delay=0.0, cc=0, annotations={"min-scale": "2"}))
    try:
        up.wait_ready()
        up.poll_status(lambda d: d["revisions"][0]["ready_pods"] == 2, 20, "two ready pods")
        children = up.descendants()
        up.proc.send_signal(signal.SIGINT)
        up.proc.send_signal(signal.SIGINT)
        started = time.monotonic()
        assert up.proc.wait(10) == 0, up.err()
        assert time.monotonic() - started < 5.0
        wait_all_gone(children, 3.0)
    finally:
        up.close()


def test_scale_down_stops_the_youngest_pods_first(tmp_path):
    """Like a ReplicaSet and the simulator: from three ready pods down to one, the oldest stays."""

    async def scenario():
        template = PodTemplate(REVISION, tuple(SAMPLE_APP), startup_timeout=20.0)
        actuator = LocalActuator([template], tmp_path)
        await actuator.start()
        try:
            actuator.set_desired_scale(REVISION, 3)
            await wait_until(
                lambda: sum(p.ready for p in actuator.pods(REVISION)) == 3, 20, "three ready pods"
            )
            oldest = min(actuator.pods(REVISION), key=lambda p: p.started_at)
            actuator.set_desired_scale(REVISION, 1)
            await wait_until(lambda: len(actuator.process_groups(REVISION)) == 1, 10, "one pod left")
            assert [p.name for p in actuator.pods(REVISION)] == [oldest.name]
        finally:
            await actuator.close()

    run(scenario())


def test_a_crash_looping_revision_tells_the_activator_why_until_a_pod_is_ready(tmp_path):
    """The first start of the container crashes; held requests are then told why (the activator has
    the reason). The retry succeeds, and the reason is withdrawn once a pod is ready."""
    marker = tmp_path / "crashed-once"
    script = (
        f"if [ -e {marker} ]; then exec {sys.executable} -m kpa.sample_app; fi; "
        f"touch {marker}; echo 'boom: model missing' >&2; exit 3"
    )
    text = stack_text(delay=0.0, cc=0, command=["sh", "-c", script])

    async def scenario():
        async with running_stack(text, tmp_path / "logs") as stack:
            told: list[str | None] = []

            def activator_reason() -> str | None:
                reason = stack.activator.revision_status(REVISION)["last_failure"]
                if not told or told[-1] != reason:
                    told.append(reason)
                return reason

            await wait_until(lambda: activator_reason() is not None, 10, "the failure at the activator")
            assert "user container exited with code 3 before becoming ready" in told[-1], told
            assert told[-1].startswith("hello-1 "), told
            await wait_until(lambda: stack.actuator.pods(REVISION) != [] and activator_reason() is None,
                             15, "a ready pod clearing the failure")  # fmt: skip
            assert any(p.ready for p in stack.actuator.pods(REVISION))
            doc = stack.status()
            assert doc["revisions"][0]["pod_failure"].startswith("hello-1 user container exited")

    run(scenario())


def test_stopping_a_stack_cancels_launches_instead_of_waiting_for_them(tmp_path):
    """Pods that never become ready (the user container ignores its port) are being launched when
    the stack stops: close() cancels them and returns at once, with no process left."""

    async def scenario():
        template = PodTemplate(REVISION, ("sleep", "60"), startup_timeout=30.0)
        actuator = LocalActuator([template], tmp_path, max_pods=4)
        await actuator.start()
        pids: list[int] = []
        try:
            actuator.set_desired_scale(REVISION, 4)
            await wait_until(lambda: len(actuator.process_ids()) == 8, 10, "four launched pods")
            pids = actuator.process_ids()
            assert actuator.capacity() == {"max_pods": 4, "pods": 4, "starting": 4}
        finally:
            started = asyncio.get_running_loop().time()
            await actuator.close()
            took = asyncio.get_running_loop().time() - started
        assert took < 3.0, f"close took {took:.1f}s"
        assert not alive([psutil.Process(pid) for pid in pids if psutil.pid_exists(pid)])

    run(scenario())


def test_a_pod_whose_queue_proxy_dies_takes_its_user_container_down_and_is_replaced(tmp_path):
    """The user container is the queue-proxy's sibling, not its child: when only the queue-proxy is
    SIGKILLed, the actuator stops the user container too (no orphan) and starts a new pod."""

    async def scenario():
        template = PodTemplate(REVISION, tuple(SAMPLE_APP), startup_timeout=20.0)
        actuator = LocalActuator([template], tmp_path)
        await actuator.start()
        try:
            actuator.set_desired_scale(REVISION, 1)
            await wait_until(lambda: any(p.ready for p in actuator.pods(REVISION)), 20, "a ready pod")
            ((name, (queue_proxy, user_pid)),) = actuator.process_groups(REVISION).items()
            user = psutil.Process(user_pid)
            os.kill(queue_proxy, signal.SIGKILL)
            await wait_until(lambda: not alive([user]), 5, "the user container to go")
            await wait_until(
                lambda: any(p.ready and p.name != name for p in actuator.pods(REVISION)), 20, "a new pod"
            )
            assert "queue-proxy killed by SIGKILL" in actuator.last_failure(REVISION).reason
        finally:
            await actuator.close()

    run(scenario())
