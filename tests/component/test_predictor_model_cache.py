"""Many models per pod: `kpa predictor --max-models/--memory-budget` loads on demand, shares one load among
concurrent first requests, unloads the least recently used, says when a request waited, and never unloads a
model with requests in flight."""

from __future__ import annotations

import asyncio
import json
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from predictor_fixtures import PredictorProcess, write_config

from predictor.backends import probe_platform
from predictor.compile_cache import CompileCache
from predictor.demo_models import build_many_models_repository, many_model, many_model_name
from predictor.loader import VersionLoader
from predictor.manager import ModelManager, ModelNotReady
from predictor.model_cache import Budget
from predictor.repository import Repository

X = np.linspace(-1, 1, 16, dtype=np.float32).reshape(1, 16)
BODY = json.dumps(
    {"inputs": [{"name": "x", "shape": [1, 16], "datatype": "FP32", "data": X.ravel().tolist()}]}
)


def _expected(index: int) -> np.ndarray:
    with torch.no_grad():
        return many_model(index)(torch.from_numpy(X)).numpy().ravel()


@pytest.fixture(scope="module")
def repository(tmp_path_factory) -> Path:
    return build_many_models_repository(tmp_path_factory.mktemp("many") / "repo", count=6)


def _infer(server: PredictorProcess, index: int) -> tuple[int, dict, dict]:
    status, headers, body = server.request(
        "POST", f"/v2/models/{many_model_name(index)}/infer", BODY.encode()
    )
    return status, {k.lower(): v for k, v in headers.items()}, json.loads(body)


def _rows(server: PredictorProcess) -> dict[str, dict]:
    status, rows = server.json("POST", "/v2/repository/index")
    assert status == 200
    return {row["name"]: row for row in rows}


def test_concurrent_first_requests_share_one_load_and_say_they_waited(repository, tmp_path):
    server = PredictorProcess(repository, tmp_path / "cache", "--max-models", "3").start()
    try:
        assert all(
            r["modelStatus"]["states"]["activeModelState"] == "Standby" for r in _rows(server).values()
        )
        answers: list[tuple[int, dict, dict]] = []
        start = threading.Barrier(8)

        def first() -> None:
            start.wait()
            answers.append(_infer(server, 0))

        threads = [threading.Thread(target=first) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        assert [status for status, _, _ in answers] == [200] * 8
        for _, _, doc in answers:
            np.testing.assert_allclose(doc["outputs"][0]["data"], _expected(0), rtol=1e-5, atol=1e-6)
        waited = [
            float(headers["x-kpa-model-load"]) for _, headers, _ in answers if "x-kpa-model-load" in headers
        ]
        assert waited and all(ms >= 0 for ms in waited)
        row = _rows(server)[many_model_name(0)]
        assert row["cache"]["loads"] == 1, row
        assert row["cache"]["misses"] == len(waited) and row["cache"]["hits"] == 8 - len(waited)
        assert row["cache"]["resident_bytes"] == sum(p.numel() * 4 for p in many_model(0).parameters())
        status, headers, _ = _infer(server, 0)
        assert status == 200 and "x-kpa-model-load" not in headers  # loaded now: a hit says nothing
    finally:
        assert server.stop() == 0


def test_the_least_recently_used_model_is_unloaded_and_metrics_say_so(repository, tmp_path):
    server = PredictorProcess(repository, tmp_path / "cache", "--max-models", "2").start()
    try:
        for index in (0, 1, 0, 2):  # model 1 is the least recently used when model 2 needs room
            status, _, doc = _infer(server, index)
            assert status == 200
            np.testing.assert_allclose(doc["outputs"][0]["data"], _expected(index), rtol=1e-5, atol=1e-6)
        rows = _rows(server)
        active = {name: row["modelStatus"]["states"]["activeModelState"] for name, row in rows.items()}
        assert active[many_model_name(0)] == "Loaded" and active[many_model_name(2)] == "Loaded"
        assert active[many_model_name(1)] == "Standby" and rows[many_model_name(1)]["state"] == "UNAVAILABLE"
        assert rows[many_model_name(1)]["cache"]["evictions"] == 1
        status, _, text = server.request("GET", "/metrics")
        metrics = text.decode()
        assert 'kpa_predictor_model_state{model_name="mlp00",state="Loaded"} 1.0' in metrics
        assert 'kpa_predictor_model_state{model_name="mlp01",state="Standby"} 1.0' in metrics
        assert 'kpa_predictor_model_evictions_total{model_name="mlp01"} 1.0' in metrics
        assert 'kpa_predictor_model_cache_hits_total{model_name="mlp00"} 1.0' in metrics
        assert 'kpa_predictor_model_cache_misses_total{model_name="mlp00"} 1.0' in metrics
        assert 'kpa_predictor_model_load_wait_seconds_count{model_name="mlp02"} 1.0' in metrics
        assert 'kpa_predictor_resident_bytes{model_name="mlp02"} 6432.0' in metrics
        assert 'kpa_predictor_resident_bytes{model_name="mlp01"}' not in metrics
    finally:
        assert server.stop() == 0


def test_repository_load_and_unload_under_a_budget(repository, tmp_path):
    server = PredictorProcess(repository, tmp_path / "cache", "--memory-budget", "16Ki").start()
    try:
        name = many_model_name(3)
        status, _ = server.json("POST", f"/v2/repository/models/{name}/load")
        assert status == 200
        assert _rows(server)[name]["modelStatus"]["states"]["activeModelState"] == "Loaded"
        status, _ = server.json("POST", f"/v2/repository/models/{name}/unload")
        assert status == 200
        row = _rows(server)[name]
        assert row["modelStatus"]["states"]["activeModelState"] == "Standby", row
        assert "next request loads it again" in row["reason"]
        status, headers, _ = _infer(server, 3)
        assert status == 200 and "x-kpa-model-load" in headers
    finally:
        assert server.stop() == 0


def test_a_model_bigger_than_the_budget_is_refused_with_a_clear_503(tmp_path):
    repository = build_many_models_repository(tmp_path / "repo", count=1)
    config = (repository / "mlp00" / "config.pbtxt").read_text()
    write_config(
        repository / "mlp00", config + 'parameters { key: "size_bytes" value { string_value: "1Mi" } }\n'
    )
    server = PredictorProcess(repository, tmp_path / "cache", "--memory-budget", "64Ki").start()
    try:
        status, _, doc = _infer(server, 0)
        assert status == 503
        assert "1,048,576 bytes" in doc["error"] and "--memory-budget 65,536 bytes" in doc["error"]
        row = _rows(server)["mlp00"]
        assert row["modelStatus"]["states"]["activeModelState"] == "FailedToLoad"
        assert "--memory-budget" in row["modelStatus"]["lastFailureInfo"]["message"]
    finally:
        assert server.stop() == 0


def test_bad_budget_flags_are_refused_naming_the_flag(tmp_path):
    import subprocess
    import sys

    for flags, message in ((["--memory-budget", "lots"], "--memory-budget 'lots': expected bytes"),
                           (["--max-models", "0"], "must be > 0")):  # fmt: skip
        done = subprocess.run(
            [sys.executable, "-m", "kpa", "predictor", "--model-repository", str(tmp_path), *flags],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert done.returncode == 2 and message in done.stderr


def test_a_model_in_use_is_never_unloaded_a_load_waits_for_it_bounded(repository, tmp_path):
    """In process, with real models: model 0 is held by a request; model 1 needs its place (max 1)."""

    async def scenario() -> None:
        loader = VersionLoader(CompileCache(tmp_path / "cache"), probe_platform())
        manager = ModelManager(Repository(repository), loader, Budget(max_models=1), room_wait_s=0.5)
        try:
            await manager.load_repository()
            held = await manager.acquire(many_model_name(0))
            with pytest.raises(
                ModelNotReady, match=r"--max-models 1 .*in flight or loading: mlp00\).*waited 0.5 s"
            ):
                await manager.acquire(many_model_name(1))
            rows = {r["name"]: r for r in manager.index()}  # a wait for room is no broken model: Standby
            assert rows[many_model_name(1)]["modelStatus"]["states"]["activeModelState"] == "Standby"
            assert "waited 0.5 s" in rows[many_model_name(1)]["modelStatus"]["lastFailureInfo"]["message"]
            assert manager.entry(many_model_name(0)).versions  # still loaded
            waiting = asyncio.ensure_future(manager.acquire(many_model_name(1)))
            await asyncio.sleep(0.1)
            rows = {r["name"]: r for r in manager.index()}
            assert rows[many_model_name(1)]["modelStatus"]["states"]["activeModelState"] == "Pending"
            held.release()  # the request is done: now model 0 may go
            second = await asyncio.wait_for(waiting, 10)
            assert second.load_wait_s is not None and second.version.name == many_model_name(1)
            assert not manager.entry(many_model_name(0)).versions
            second.release()
        finally:
            await manager.close()

    asyncio.run(scenario())
