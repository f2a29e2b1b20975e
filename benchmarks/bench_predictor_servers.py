"""The servers bench_predictor.py measures, as child processes: `kpa predictor` and KServe's
``kserve.ModelServer`` (0.21, bound to 127.0.0.1, latency logging off, 1 torch thread), each ready once
GET /v2/health/ready answers 200; and the demo CNN's repository with a chosen backend and batching.
"""

from __future__ import annotations

import http.client
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

from _common import free_port, stop
from rich.console import Console

console = Console(stderr=True)
ROOT = Path(__file__).resolve().parent.parent

KSERVE_SERVER = r"""
import sys
import torch
import uvicorn

# kserve 0.21 hard-codes host="0.0.0.0"; keep this benchmark on loopback.
_config_init = uvicorn.Config.__init__
def _loopback(self, *args, **kwargs):
    kwargs["host"] = "127.0.0.1"
    _config_init(self, *args, **kwargs)
uvicorn.Config.__init__ = _loopback

from kserve import InferOutput, InferRequest, InferResponse, Model, ModelServer

model_path, name, port, output_name = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
torch.set_num_threads(1)

class TorchScriptModel(Model):
    def __init__(self):
        super().__init__(name)
        self.module = torch.jit.load(model_path).eval()
        self.ready = True

    def predict(self, payload, headers=None, response_headers=None):
        x = torch.from_numpy(payload.inputs[0].as_numpy())
        with torch.inference_mode():
            y = self.module(x).numpy()
        out = InferOutput(name=output_name, shape=list(y.shape), datatype="FP32")
        out.set_data_from_numpy(y, binary_data=False)
        return InferResponse(model_name=name, infer_outputs=[out], response_id=payload.id)

ModelServer(http_port=port, enable_grpc=False, workers=1, enable_latency_logging=False).start(
    [TorchScriptModel()]
)
"""


class Server:
    def __init__(self, name: str, process: subprocess.Popen, port: int, started: float):
        self.name, self.process, self.port, self.started = name, process, port, started

    def wait_ready(self, timeout: float = 600.0) -> float:
        """Seconds from launch until /v2/health/ready answers 200."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.process.returncode}")
            try:
                connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=1)
                connection.request("GET", "/v2/health/ready")
                if connection.getresponse().status == 200:
                    return time.monotonic() - self.started
            except OSError:
                pass
            finally:
                connection.close()
            time.sleep(0.01)
        raise RuntimeError(f"{self.name} not ready after {timeout} s")

    def stop(self) -> None:
        stop(self.process, timeout=15)


def start_ours(repository: Path, cache_dir: Path, wait: bool = True, extra: tuple[str, ...] = ()) -> Server:
    port = free_port()
    started = time.monotonic()
    process = subprocess.Popen(
        [sys.executable, "-m", "kpa", "predictor", "--model-repository", str(repository), "--port", str(port),
         "--cache-dir", str(cache_dir), "--log-level", "warning", *extra],
        stdout=subprocess.DEVNULL, cwd=ROOT,
    )  # fmt: skip
    server = Server("kpa predictor", process, port, started)
    if wait:
        server.wait_ready()
    return server


def start_kserve(model_file: Path, work: Path, wait: bool = True, cpu: str | None = None) -> Server:
    script = work / "kserve_server.py"
    script.write_text(KSERVE_SERVER)
    port = free_port()
    started = time.monotonic()
    pin = ["taskset", "-c", cpu] if cpu is not None else []
    arguments = [str(script), str(model_file), "cnn", str(port), "logits", "--log_level", "WARNING"]
    process = subprocess.Popen(
        [*pin, sys.executable, *arguments],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=work,
    )  # fmt: skip
    server = Server("kserve.ModelServer", process, port, started)
    if wait:
        server.wait_ready()
    return server


def cnn_repository(demo: Path, destination: Path, backend: str, batching: bool) -> Path:
    """A repository holding only the demo CNN, with the given backend and batching."""
    shutil.copytree(demo / "cnn", destination / "cnn")
    config = (destination / "cnn" / "config.pbtxt").read_text()
    config = config.replace('string_value: "eager"', f'string_value: "{backend}"')
    if not batching:
        config = "\n".join(line for line in config.splitlines() if not line.startswith("dynamic_batching"))
    (destination / "cnn" / "config.pbtxt").write_text(config + "\n")
    return destination


def model_p50_ms(server: Server) -> float | None:
    """Median model time per call over the latest calls, from our server's statistics; None for KServe."""
    if server.name != "kpa predictor":
        return None
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
    try:
        connection.request("GET", "/v2/models/cnn/stats")
        [stats] = json.loads(connection.getresponse().read())["model_stats"]
    finally:
        connection.close()
    return stats["recent_compute_ms"]["p50"]
