"""`kpa predictor` command line: where it listens, CPU pinning, flag errors, and the demo repository."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from predictor_fixtures import PredictorProcess

from predictor.config import parse_model_config

pytestmark = pytest.mark.timeout(90)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _kpa(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "kpa", "predictor", *args],
        capture_output=True, text=True, timeout=60, env={**os.environ, **(env or {})},
    )  # fmt: skip


def test_port_comes_from_the_environment_unless_the_flag_says_otherwise(tmp_path, monkeypatch):
    port = _free_port()
    monkeypatch.setenv("PORT", str(port))
    server = PredictorProcess(tmp_path, tmp_path / "cache")
    server.command.remove("--port")
    server.command.remove("0")
    server.start()
    try:
        assert server.port == port
        assert server.request("GET", "/v2/health/ready")[0] == 200  # an empty repository is ready at once
    finally:
        assert server.stop() == 0
    flagged = PredictorProcess(tmp_path, tmp_path / "cache").start()  # --port 0 wins over PORT
    try:
        assert flagged.port not in (0, port)
    finally:
        assert flagged.stop() == 0


def test_cpu_affinity_pins_the_process(tmp_path):
    server = PredictorProcess(tmp_path, tmp_path / "cache", "--cpu-affinity", "0").start()
    try:
        status = Path(f"/proc/{server.process.pid}/status").read_text()
        assert "Cpus_allowed_list:\t0\n" in status
    finally:
        assert server.stop() == 0


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (["--model-repository", "/nonexistent/repo"], {}, "is not a directory"),
        ([], {}, "--model-repository DIR is required"),
        (["--model-repository", ".", "--threads", "0"], {}, "must be >= 1"),
        (["--model-repository", ".", "--cpu-affinity", "1-x"], {}, "ranges like 0,2-3"),
        (["--model-repository", ".", "--cpu-affinity", "4096"], {}, "this process may use CPUs"),
        (["--model-repository", "."], {"PORT": "eighty"}, "PORT='eighty' is not a port number"),
    ],
    ids=[
        "repository-missing",
        "no-repository-flag",
        "zero-threads",
        "affinity-not-a-range",
        "affinity-cpu-not-allowed",
        "port-env-not-a-number",
    ],
)
def test_bad_invocations_say_what_to_fix(args, env, message):
    result = _kpa(*args, env=env)
    assert result.returncode == 2
    assert message in result.stderr


def test_build_demo_repo_writes_servable_models(tmp_path):
    result = _kpa("--build-demo-repo", str(tmp_path / "demo"), "--demo-backend", "auto")
    assert result.returncode == 0, result.stderr
    for name in ("cnn", "transformer"):
        config = parse_model_config((tmp_path / "demo" / name / "config.pbtxt").read_text(), name)
        assert config.backend == "auto" and config.dynamic_batching is not None
        assert (tmp_path / "demo" / name / "1" / "model.pt").stat().st_size > 0
        assert (tmp_path / "demo" / name / "1" / "model.pt2").stat().st_size > 0
