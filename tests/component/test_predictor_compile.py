"""Compiled backends and the compile cache, with real compiles (the only ones in the suite: one model,
compiled once). An ``auto`` model is ready at once on eager, upgrades itself to the compiled package in
the background without failing a request, and the next process start loads that package from the
cache instead of compiling again."""

from __future__ import annotations

import shutil
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from predictor_fixtures import PredictorProcess, write_config
from torch import nn
from waiting import wait_until_blocking

from predictor.backends import EAGER, probe_platform, resolve_backend

EXPECTED = resolve_backend("auto", probe_platform())
pytestmark = [
    pytest.mark.timeout(240),
    pytest.mark.skipif(EXPECTED.backend == EAGER, reason=f"no compiled backend here: {EXPECTED.reason}"),
]

CONFIG = """
max_batch_size: 8
input [{ name: "x" data_type: TYPE_FP32 dims: [16] }]
output [{ name: "y" data_type: TYPE_FP32 dims: [4] }]
parameters { key: "backend" value { string_value: "auto" } }
"""


def _mlp() -> nn.Module:
    torch.manual_seed(3)
    return nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 4)).eval()


@pytest.fixture(scope="module")
def repository(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("repo")
    write_config(root / "mlp", CONFIG)
    (root / "mlp" / "1").mkdir()
    model, example = _mlp(), torch.randn(2, 16)
    torch.jit.save(torch.jit.trace(model, example), str(root / "mlp" / "1" / "model.pt"))
    batch = torch.export.Dim("batch", min=1, max=8)
    exported = torch.export.export(model, (example,), dynamic_shapes=({0: batch},))
    torch.export.save(exported, str(root / "mlp" / "1" / "model.pt2"))
    return root


def _infer(server: PredictorProcess, rows: np.ndarray) -> np.ndarray:
    doc = {
        "inputs": [
            {"name": "x", "datatype": "FP32", "shape": list(rows.shape), "data": rows.ravel().tolist()}
        ]
    }
    status, body = server.json("POST", "/v2/models/mlp/infer", doc)
    assert status == 200, body
    return np.array(body["outputs"][0]["data"], np.float32).reshape(len(rows), 4)


def _expected(rows: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return _mlp()(torch.from_numpy(rows)).numpy()


def test_auto_serves_eager_at_once_then_upgrades_and_the_next_start_hits_the_cache(repository, tmp_path):
    cache = tmp_path / "cache"
    rows = np.random.default_rng(0).standard_normal((3, 16)).astype(np.float32)
    first = PredictorProcess(repository, cache).start()
    try:
        metadata = first.json("GET", "/v2/models/mlp")[1]
        assert (metadata["backend"], metadata["compiling"], metadata["compile_cache"]) == (
            "eager",
            True,
            "none",
        )
        failures: list[str] = []
        stop = threading.Event()

        def keep_asking() -> None:  # traffic across the upgrade
            while not stop.is_set():
                try:
                    np.testing.assert_allclose(_infer(first, rows), _expected(rows), rtol=1e-4, atol=1e-5)
                except AssertionError as exc:
                    failures.append(str(exc))
                time.sleep(0.05)

        asker = threading.Thread(target=keep_asking)
        asker.start()
        try:
            wait_until_blocking(
                lambda: first.json("GET", "/v2/models/mlp")[1]["backend"] != "eager",
                200,
                "the background compile to finish",
                interval=0.5,
            )
        finally:
            stop.set()
            asker.join()
        upgraded = first.json("GET", "/v2/models/mlp")[1]
        assert failures == []
        assert (upgraded["backend"], upgraded["compiling"], upgraded["compile_cache"]) == (
            EXPECTED.backend,
            False,
            "miss",
        )
        if EXPECTED.backend == "zentorch":
            assert upgraded["zentorch_kernels"] > 0  # zentorch's linear kernels are in the package
        np.testing.assert_allclose(_infer(first, rows), _expected(rows), rtol=1e-4, atol=1e-5)
    finally:
        assert first.stop() == 0
    packages = sorted(cache.glob("*.pt2"))
    assert len(packages) == 1

    second = PredictorProcess(repository, cache).start()
    try:
        metadata = second.json("GET", "/v2/models/mlp")[1]
        assert (metadata["backend"], metadata["compile_cache"], metadata["compiling"]) == (
            EXPECTED.backend,
            "hit",
            False,
        )
        assert metadata["load_seconds"] < 1.0
        np.testing.assert_allclose(_infer(second, rows), _expected(rows), rtol=1e-4, atol=1e-5)
    finally:
        assert second.stop() == 0
    assert sorted(cache.glob("*.pt2")) == packages


def _children(pid: int) -> dict[int, str]:
    found = {}
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                found[int(entry.name)] = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
    return found


def test_stopping_during_a_compile_stops_the_compiler_too(repository, tmp_path):
    explicit = tmp_path / "repo"
    shutil.copytree(repository / "mlp", explicit / "mlp")
    config = (explicit / "mlp" / "config.pbtxt").read_text().replace('"auto"', f'"{EXPECTED.backend}"')
    (explicit / "mlp" / "config.pbtxt").write_text(config)
    server = PredictorProcess(explicit, tmp_path / "cache").start(wait_ready=False)
    try:
        assert (
            server.request("GET", "/v2/health/ready")[0] == 503
        )  # an explicit backend waits for its compile
        compilers: list[int] = []

        def compiler_started() -> bool:
            children = _children(server.process.pid).items()
            compilers[:] = [pid for pid, command in children if "predictor.compiler" in command]
            return bool(compilers)

        wait_until_blocking(compiler_started, 60, "a compiler child process", interval=0.1)
    finally:
        assert server.stop() == 0
    assert not Path(f"/proc/{compilers[0]}").exists()
