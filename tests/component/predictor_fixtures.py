"""Shared helpers for the predictor component tests: run `kpa predictor` as a real child process on a
free loopback port, talk raw HTTP to it, and write small test models."""

from __future__ import annotations

import http.client
import json
import queue
import subprocess
import sys
import threading
import time
from pathlib import Path

import torch
from torch import nn


class PredictorProcess:
    """`python -m kpa predictor ... --port 0` with its announced port; stopped by PID."""

    def __init__(self, repository: Path, cache_dir: Path, *extra: str, log_path: Path | None = None):
        self.command = [
            sys.executable, "-m", "kpa", "predictor",
            "--model-repository", str(repository), "--port", "0", "--cache-dir", str(cache_dir), *extra,
        ]  # fmt: skip
        self.log_path = log_path or cache_dir / "predictor.log"
        self.events: queue.Queue[dict] = queue.Queue()
        self.process: subprocess.Popen | None = None
        self.port = 0
        self.listening: dict = {}  # the "listening" line: port, grpc_port / modelmesh_port when asked for
        self.ready_event: dict = {}

    def start(self, ready_timeout: float = 60.0, wait_ready: bool = True) -> PredictorProcess:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "a")  # noqa: SIM115 - lives as long as the child
        self.process = subprocess.Popen(self.command, stdout=subprocess.PIPE, stderr=log, text=True)
        threading.Thread(target=self._read_events, daemon=True).start()
        try:
            self.listening = self.wait_event("listening", ready_timeout)
            self.port = self.listening["port"]
            if wait_ready:
                self.ready_event = self.wait_event("ready", ready_timeout)
        except BaseException:  # a start that fails leaves no process behind
            self.stop()
            raise
        return self

    def _read_events(self) -> None:
        assert self.process is not None and self.process.stdout is not None
        for line in self.process.stdout:
            try:
                self.events.put(json.loads(line))
            except ValueError:
                continue

    def wait_event(self, name: str, timeout: float) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                event = self.events.get(timeout=0.2)
            except queue.Empty:
                assert self.process is not None
                if self.process.poll() is not None:
                    message = f"predictor exited with {self.process.returncode}; see {self.log_path}"
                    raise AssertionError(message) from None
                continue
            if event.get("event") == name:
                return event
        raise AssertionError(f"no {name!r} event within {timeout} s; see {self.log_path}")

    @property
    def url(self) -> str:
        return f"127.0.0.1:{self.port}"

    def stop(self) -> int:
        assert self.process is not None
        self.process.terminate()
        try:
            return self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait(timeout=5)

    def request(
        self, method: str, path: str, body: bytes | None = None, headers: dict | None = None
    ) -> tuple[int, dict, bytes]:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            connection.request(method, path, body=body, headers=headers or {})
            response = connection.getresponse()
            return response.status, dict(response.getheaders()), response.read()
        finally:
            connection.close()

    def json(self, method: str, path: str, doc: dict | None = None) -> tuple[int, dict]:
        status, _, body = self.request(method, path, None if doc is None else json.dumps(doc).encode())
        return status, json.loads(body) if body else {}


def write_config(folder: Path, text: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.pbtxt").write_text(text)


def save_torchscript(module: nn.Module, path: Path) -> None:
    """Script ``module`` to ``path`` atomically (write aside, then rename), as a careful user would."""
    path.parent.mkdir(parents=True, exist_ok=True)
    aside = path.with_name(f".{path.name}.partial")
    torch.jit.save(torch.jit.script(module), str(aside))
    aside.replace(path)


class Scale(nn.Module):
    """y = x * factor: outputs that say which version answered."""

    def __init__(self, factor: float):
        super().__init__()
        self.factor = factor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.factor


SCALE_CONFIG = """
name: "{name}"
max_batch_size: {max_batch_size}
input [{{ name: "x" data_type: TYPE_FP32 dims: [4] }}]
output [{{ name: "y" data_type: TYPE_FP32 dims: [4] }}]
parameters {{ key: "backend" value {{ string_value: "eager" }} }}
{extra}
"""


def write_scale_model(
    repository: Path, name: str, version: int, factor: float, max_batch_size: int = 8, extra: str = ""
) -> None:
    """A model whose outputs say which version answered; ``extra`` is appended to its config.pbtxt."""
    config = SCALE_CONFIG.format(name=name, max_batch_size=max_batch_size, extra=extra)
    write_config(repository / name, config)
    save_torchscript(Scale(factor), repository / name / str(version) / "model.pt")
