"""Small helpers shared by the benchmarks: the machine, free ports, child processes, wrk.

Every benchmark prints ``machine()`` next to its numbers, since absolute figures on shared 2-core
machines drift 2-3x between runs and only ratios taken in one run compare.
"""

from __future__ import annotations

import os
import platform
import re
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass

_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3}


def machine() -> str:
    """CPU model, logical cores, memory, Python: one line for a benchmark report."""
    model = platform.processor() or "unknown CPU"
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            model = next(line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    memory = ""
    try:
        with open("/proc/meminfo") as meminfo:
            kib = int(next(line.split()[1] for line in meminfo if line.startswith("MemTotal")))
        memory = f", {kib / 1024 / 1024:.0f} GiB RAM"
    except (OSError, StopIteration, ValueError):
        pass
    load = f", load avg {os.getloadavg()[0]:.2f}" if hasattr(os, "getloadavg") else ""
    return f"{model}, {os.cpu_count()} logical cores{memory}, Python {platform.python_version()}{load}"


def ensure_debian_packages(binaries: dict[str, str]) -> None:
    """Install missing tools from Debian (binary name -> package), as the benchmarks' setup step."""
    missing = [package for binary, package in binaries.items() if shutil.which(binary) is None]
    if not missing:
        return
    if shutil.which("apt-get") is None:
        raise SystemExit(f"missing {', '.join(missing)} and no apt-get to install them")
    print(f"installing {' '.join(missing)} with apt-get ...", flush=True)
    subprocess.run(["apt-get", "install", "-y", "-q", *missing], check=True, stdout=subprocess.DEVNULL)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, timeout: float = 10.0, host: str = "127.0.0.1") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.02)
    raise RuntimeError(f"nothing listening on {host}:{port} after {timeout}s")


def stop(proc: subprocess.Popen, timeout: float = 5.0) -> None:
    """Terminate a child we started (by its own handle), killing it if it lingers."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far (Linux)."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class WrkResult:
    rps: float
    p50_ms: float
    p99_ms: float
    requests: int
    errors: int  # socket errors plus non-2xx/3xx answers


def _ms(value: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m)", value)
    if not match:
        raise ValueError(f"unexpected wrk latency {value!r}")
    return float(match.group(1)) * _UNITS[match.group(2)]


def parse_wrk(output: str) -> WrkResult:
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))
    p50 = _ms(re.search(r"^\s+50%\s+(\S+)", output, re.M).group(1))
    p99 = _ms(re.search(r"^\s+99%\s+(\S+)", output, re.M).group(1))
    requests = int(re.search(r"(\d+) requests in", output).group(1))
    errors = 0
    socket_errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output)
    if socket_errors:
        errors += sum(int(n) for n in socket_errors.groups())
    if non_2xx := re.search(r"Non-2xx or 3xx responses: (\d+)", output):
        errors += int(non_2xx.group(1))
    return WrkResult(rps, p50, p99, requests, errors)


def run_wrk(
    url: str, connections: int, duration: float, threads: int = 1, headers: tuple[str, ...] = ()
) -> WrkResult:
    """One wrk run; one thread by default, since more would take CPU from the system under test.

    ``headers`` are ``"Name: value"`` strings sent with every request (e.g. a Host to route by)."""
    args = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{max(1, round(duration))}s", "--latency", url]
    for header in headers:
        args += ["-H", header]
    out = subprocess.run(args, capture_output=True, text=True, check=True, timeout=duration + 30).stdout
    return parse_wrk(out)


def tree_env(tree: str | None, extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment for a child running another checkout's code (``--baseline-tree``), or ours.

    ``PYTHONPATH`` is searched before the editable install's finder, so ``python -m kpa`` in the child
    imports the baseline's packages; everything else (venv, wrk, the upstream) stays the same, which is
    what lets one run compare two versions of our code on one machine at one time.
    """
    env = {**os.environ, **(extra or {})}
    if tree:
        env["PYTHONPATH"] = os.path.abspath(tree)
    return env
