"""Runs Debian's ``prometheus`` on loopback against a file_sd target file (`kpa up`'s), for the demo,
``kpa dashboard --run-prometheus`` and the end-to-end test.

Its own temporary storage and config, a free port on 127.0.0.1, a 1 s scrape interval (the
autoscaler ticks every 2 s: slower scrapes would blur what the dashboard is for), stopped by its PID
and its directory removed: nothing is left behind.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

import httpx

BINARY = "prometheus"
INSTALL_HINT = "install it with `apt-get install prometheus` (Debian) or put a prometheus binary on PATH"
SCRAPE_INTERVAL = "1s"


class PrometheusUnavailable(RuntimeError):
    """No prometheus binary here, or it would not start; the message says what to do."""


def config_text(targets_file: Path, scrape_interval: str = SCRAPE_INTERVAL) -> str:
    return (
        "global:\n"
        f"  scrape_interval: {scrape_interval}\n"
        f"  evaluation_interval: {scrape_interval}\n"
        "scrape_configs:\n"
        "  - job_name: kpa\n"
        "    file_sd_configs:\n"
        f"      - files: [{str(targets_file)!r}]\n"
        "        refresh_interval: 5s\n"
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PrometheusServer:
    """``with PrometheusServer(targets_file) as prom: prom.url`` — started and ready inside the block."""

    def __init__(self, targets_file: Path, binary: str | None = None, startup_timeout: float = 30.0) -> None:
        self.targets_file = targets_file
        self.binary = binary or shutil.which(BINARY)
        self.startup_timeout = startup_timeout
        self.url = ""
        self._dir: Path | None = None
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        if not self.binary:
            raise PrometheusUnavailable(f"no `{BINARY}` on PATH: {INSTALL_HINT}")
        self._dir = Path(tempfile.mkdtemp(prefix="kpa-prometheus-"))
        config = self._dir / "prometheus.yml"
        config.write_text(config_text(self.targets_file))
        port = _free_port()
        self.url = f"http://127.0.0.1:{port}"
        log = (self._dir / "prometheus.log").open("wb")
        self._proc = subprocess.Popen(
            [
                self.binary,
                f"--config.file={config}",
                f"--storage.tsdb.path={self._dir / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--storage.tsdb.retention.time=1d",
            ],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                tail = self.log_tail()
                self.stop()
                raise PrometheusUnavailable(f"prometheus exited with code {self._proc.returncode}: {tail}")
            try:
                if httpx.get(f"{self.url}/-/ready", timeout=1.0).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        self.stop()
        raise PrometheusUnavailable(f"prometheus did not become ready within {self.startup_timeout:g}s")

    def log_tail(self, limit: int = 2000) -> str:
        if self._dir is None:
            return ""
        try:
            return (self._dir / "prometheus.log").read_text(errors="replace")[-limit:]
        except OSError:
            return ""

    def stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    def __enter__(self) -> PrometheusServer:
        self.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
