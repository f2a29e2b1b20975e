"""The servers under fuzz, as child processes: how each is started, and what its logs say.

Each target is one or more real processes (the queue-proxy in front of the sample app, the predictor
with a tiny model, ...); the fuzzed one is the last. Their stdout and stderr are read by threads, so
a traceback or ERROR line logged while a batch ran is seen, and ``dead`` says when one has exited.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from fuzz_cases import ENTRY, GENERIC, PREDICTOR, REVISION, Profile

ROOT = Path(__file__).resolve().parents[2]

_ERROR_LINE = re.compile(
    r"Traceback \(most recent call last\)|^(ERROR|CRITICAL)\b| (ERROR|CRITICAL) |unhandled|"
    r"Task exception was never retrieved|Exception in callback|Fatal error"
)


class _Child:
    """One child process whose stdout/stderr lines are collected by reader threads."""

    def __init__(
        self, command: list[str], env: dict[str, str] | None = None, cwd: Path | None = None
    ) -> None:
        self.command = command
        self.proc = subprocess.Popen(
            command,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env={**os.environ, **(env or {})},
            cwd=cwd,
            start_new_session=True,
        )
        self.stdout: list[str] = []
        self.stderr: list[str] = []
        self._lock = threading.Lock()
        for stream, lines in ((self.proc.stdout, self.stdout), (self.proc.stderr, self.stderr)):
            threading.Thread(target=self._pump, args=(stream, lines), daemon=True).start()

    def _pump(self, stream, lines: list[str]) -> None:
        for raw in stream:
            with self._lock:
                lines.append(raw.decode("utf-8", "replace").rstrip("\n"))

    def wait_line(self, predicate: Callable[[str], bool], timeout: float) -> str:
        deadline = time.monotonic() + timeout
        seen = 0
        while time.monotonic() < deadline:
            with self._lock:
                fresh = self.stdout[seen:]
            seen += len(fresh)
            for line in fresh:
                if predicate(line):
                    return line
            if self.proc.poll() is not None:
                break
            time.sleep(0.02)
        tail = "\n".join(self.stderr[-20:])
        raise RuntimeError(f"{' '.join(self.command)}: no start line within {timeout}s; stderr:\n{tail}")

    @property
    def label(self) -> str:
        """Which program this is, for a report: ``kpa queue-proxy``, ``kpa.sample_app``, a script name."""
        args = self.command[1:]
        if args[:1] == ["-m"]:
            return " ".join(args[1:3]) if args[1] == "kpa" else args[1]
        return " ".join(Path(a).name for a in args[:2])

    def errors_since(self, mark: int) -> str:
        """stderr from the first error line after line ``mark`` on (25 lines at most), or ""."""
        with self._lock:
            lines = self.stderr[mark:]
        for at, line in enumerate(lines):
            if _ERROR_LINE.search(line):
                return f"{self.label}: " + " | ".join(lines[at : at + 25])
        return ""

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)  # the queue-proxy skips its drain quiet period on SIGINT
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _json_port(key: str) -> Callable[[str], int | None]:
    def port_of(line: str) -> int | None:
        try:
            doc = json.loads(line)
        except ValueError:
            return None
        return doc.get(key) if isinstance(doc, dict) else None

    return port_of


@dataclass
class Target:
    """A server under fuzz: how to start its processes and which of them is fuzzed."""

    name: str
    profile: Profile
    launch: Callable[[], tuple[list[_Child], int]]  # -> (children, fuzzed port); the last child is fuzzed
    children: list[_Child] = field(default_factory=list)
    port: int = 0

    def start(self) -> None:
        self.children, self.port = self.launch()

    def stop(self) -> None:
        for child in reversed(self.children):
            child.stop()
        self.children = []

    def dead(self) -> str | None:
        """Why a process of this target has exited, or None while all run."""
        for child in self.children:
            code = child.proc.poll()
            if code is not None:
                tail = " | ".join(child.stderr[-5:])
                return f"{child.command[2:5]} exited with {code}: {tail}"
        return None

    def marks(self) -> list[int]:
        """Where each process's stderr is now; ``errors_since(marks)`` reads what came after."""
        return [len(child.stderr) for child in self.children]

    def errors_since(self, marks: Sequence[int]) -> str:
        """Error lines (with their tracebacks) logged by any of this target's processes since ``marks``."""
        found = [child.errors_since(mark) for child, mark in zip(self.children, marks, strict=True)]
        return "\n".join(text for text in found if text)


def _started(command: list[str], port_key: str, timeout: float, **kwargs) -> tuple[_Child, int]:
    child = _Child(command, **kwargs)
    try:
        line = child.wait_line(lambda line: _json_port(port_key)(line) is not None, timeout)
    except RuntimeError:
        child.stop()
        raise
    return child, int(_json_port(port_key)(line))


def _wait_port(child: _Child, port: int, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return
        if child.proc.poll() is not None:
            break
        time.sleep(0.02)
    child.stop()
    raise RuntimeError(f"{' '.join(child.command)}: not listening on {port}; stderr: {child.stderr[-10:]}")


def _sample_app() -> tuple[_Child, int]:
    port = free_port()
    child = _Child([sys.executable, "-m", "kpa.sample_app", "--port", str(port)], cwd=ROOT)
    _wait_port(child, port)
    return child, port


def launch_sample_app() -> tuple[list[_Child], int]:
    child, port = _sample_app()
    return [child], port


def launch_queue_proxy() -> tuple[list[_Child], int]:
    user, user_port = _sample_app()
    zero = ["--serving-port", "0", "--admin-port", "0", "--stats-port", "0", "--metrics-port", "0"]
    command = [sys.executable, "-m", "kpa", "queue-proxy", "--user-port", str(user_port), *zero]
    proxy, port = _started(command, "serving_port", 15.0, cwd=ROOT, env={"CONTAINER_CONCURRENCY": "10"})
    return [user, proxy], port


def launch_in_process(kind: str) -> Callable[[], tuple[list[_Child], int]]:
    def launch() -> tuple[list[_Child], int]:
        script = str(Path(__file__).with_name("fuzz_servers.py"))
        child, port = _started([sys.executable, script, kind], "port", 20.0, cwd=ROOT)
        return [child], port

    return launch


def launch_predictor(workdir: Path) -> Callable[[], tuple[list[_Child], int]]:
    """`kpa predictor` serving one tiny model (y = 2x, four floats) from ``workdir``."""

    def launch() -> tuple[list[_Child], int]:
        repository = workdir / "models"
        if not (repository / "tiny").exists():
            sys.path.insert(0, str(ROOT / "tests" / "component"))
            from predictor_fixtures import write_scale_model

            write_scale_model(repository, "tiny", 1, 2.0)
        command = [sys.executable, "-m", "kpa", "predictor", "--model-repository", str(repository),
                   "--port", "0", "--cache-dir", str(workdir / "cache")]  # fmt: skip
        child, port = _started(command, "port", 60.0, cwd=ROOT)
        child.wait_line(lambda line: '"ready"' in line, 60.0)
        return [child], port

    return launch


def launch_stdlib_http_server(workdir: Path) -> Callable[[], tuple[list[_Child], int]]:
    """The baseline: Python's own ``http.server`` (threading) serving a small directory."""

    def launch() -> tuple[list[_Child], int]:
        (workdir / "www").mkdir(parents=True, exist_ok=True)
        (workdir / "www" / "index.html").write_text("hello\n")
        port = free_port()
        command = [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1",
                   "--directory", str(workdir / "www")]  # fmt: skip
        child = _Child(command)
        _wait_port(child, port)
        return [child], port

    return launch


SERVERS = ("queue-proxy", "activator", "entry", "predictor", "sample-app")  # ours; the baseline is apart
BASELINE = "stdlib-http.server"


def standard_targets(workdir: Path) -> dict[str, Target]:
    """Every server we run, in front of (or with) a trivial backend; plus the stdlib baseline."""
    return {
        "queue-proxy": Target("queue-proxy", GENERIC, launch_queue_proxy),
        "activator": Target("activator", REVISION, launch_in_process("activator")),
        "entry": Target("entry", ENTRY, launch_in_process("entry")),
        "predictor": Target("predictor", PREDICTOR, launch_predictor(workdir)),
        "sample-app": Target("sample-app", GENERIC, launch_sample_app),
        BASELINE: Target(BASELINE, GENERIC, launch_stdlib_http_server(workdir)),
    }
