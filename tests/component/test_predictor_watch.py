"""Directory monitoring against a real `kpa predictor --watch` process: models appear, change and vanish
on disk while clients keep sending requests — and no request fails because of it."""

from __future__ import annotations

import http.client
import json
import shutil
import threading
from pathlib import Path

import pytest
from predictor_fixtures import PredictorProcess, write_scale_model
from waiting import wait_until_blocking

pytestmark = pytest.mark.timeout(120)


class Hammer:
    """Threads sending requests to one model over keep-alive connections until stopped."""

    def __init__(self, port: int, model: str, threads: int = 3):
        self.port, self.model = port, model
        self.answers: list[list[float]] = [[] for _ in range(threads)]  # factor seen, per thread, in order
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(i,)) for i in range(threads)]

    def __enter__(self) -> Hammer:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *_) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=10)

    def _run(self, index: int) -> None:
        body = json.dumps(
            {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4], "data": [1, 1, 1, 1]}]}
        )
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        while not self._stop.is_set():
            try:
                connection.request("POST", f"/v2/models/{self.model}/infer", body=body)
                response = connection.getresponse()
                payload = response.read()
            except (OSError, http.client.HTTPException) as exc:
                self.failures.append(f"{type(exc).__name__}: {exc}")
                connection.close()
                connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
                continue
            if response.status != 200:
                self.failures.append(f"{response.status}: {payload[:200]!r}")
                continue
            self.answers[index].append(json.loads(payload)["outputs"][0]["data"][0])
        connection.close()

    def seen(self) -> set[float]:
        return {factor for thread in self.answers for factor in thread}

    def count(self) -> int:
        return sum(len(thread) for thread in self.answers)


@pytest.fixture
def repository(tmp_path) -> Path:
    root = tmp_path / "repo"
    write_scale_model(root, "alpha", 1, 1.0)
    return root


@pytest.fixture
def server(repository, tmp_path):
    process = PredictorProcess(repository, tmp_path / "cache", "--watch").start()
    yield process
    assert process.stop() == 0


def _state(server: PredictorProcess, name: str) -> dict:
    status, body = server.json("GET", f"/v2/models/{name}")
    return body if status == 200 else {"status": status, **body}


def test_new_model_is_loaded_and_removed_model_unloaded(server, repository):
    write_scale_model(repository, "beta", 1, 5.0)
    wait_until_blocking(
        lambda: server.request("GET", "/v2/models/beta/ready")[0] == 200, 20, "beta ready", interval=0.1
    )
    status, body = server.json(
        "POST",
        "/v2/models/beta/infer",
        {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4], "data": [1, 2, 3, 4]}]},
    )
    assert status == 200 and body["outputs"][0]["data"] == [5.0, 10.0, 15.0, 20.0]
    shutil.rmtree(repository / "beta")
    wait_until_blocking(
        lambda: server.request("GET", "/v2/models/beta/ready")[0] == 404, 20, "beta gone", interval=0.1
    )
    (repository / "alpha" / "config.pbtxt").unlink()
    wait_until_blocking(
        lambda: server.request("GET", "/v2/models/alpha")[0] == 404, 20, "alpha unloaded", interval=0.1
    )
    assert server.json("GET", "/v2/models")[1] == {"models": []}


def test_new_version_swaps_in_without_a_failed_request(server, repository):
    with Hammer(server.port, "alpha") as hammer:
        wait_until_blocking(lambda: hammer.count() > 20, 20, "traffic flowing", interval=0.1)
        write_scale_model(repository, "alpha", 2, 2.0)
        wait_until_blocking(lambda: 2.0 in hammer.seen(), 20, "version 2 answering", interval=0.1)
        # Every client, not just the fastest, must get a few answers from version 2 before the check.
        wait_until_blocking(
            lambda: all(a.count(2.0) >= 5 for a in hammer.answers),
            20,
            "every client on version 2",
            interval=0.1,
        )
    assert hammer.failures == []
    assert hammer.seen() == {1.0, 2.0}
    for answers in hammer.answers:  # each client saw the switch exactly once, never back
        first_new = answers.index(2.0)
        assert set(answers[first_new:]) == {2.0}
    assert _state(server, "alpha")["versions"] == ["2"]
    status, body = server.json("GET", "/v2/models/alpha/versions/1/ready")
    assert status == 404 and "serving: 2" in body["error"]


def test_edited_config_reloads_beside_the_old_one(server, repository):
    with Hammer(server.port, "alpha") as hammer:
        wait_until_blocking(lambda: hammer.count() > 20, 20, "traffic flowing", interval=0.1)
        config = (
            (repository / "alpha" / "config.pbtxt")
            .read_text()
            .replace("max_batch_size: 8", "max_batch_size: 2")
        )
        aside = repository / "alpha" / ".config.pbtxt.new"
        aside.write_text(config)
        aside.replace(repository / "alpha" / "config.pbtxt")
        wait_until_blocking(
            lambda: _state(server, "alpha").get("max_batch_size") == 2, 20, "new config served", interval=0.1
        )
        served_after = hammer.count()
        wait_until_blocking(
            lambda: hammer.count() > served_after + 20, 20, "traffic after the reload", interval=0.1
        )
    assert hammer.failures == []
    status, body = server.json(
        "POST",
        "/v2/models/alpha/infer",
        {"inputs": [{"name": "x", "datatype": "FP32", "shape": [3, 4], "data": [0.0] * 12}]},
    )
    assert status == 400 and "max_batch_size 2" in body["error"]


def test_broken_new_version_keeps_the_old_one_serving(server, repository):
    with Hammer(server.port, "alpha") as hammer:
        wait_until_blocking(lambda: hammer.count() > 20, 20, "traffic flowing", interval=0.1)
        (repository / "alpha" / "2").mkdir()
        (repository / "alpha" / "2" / "model.pt").write_bytes(b"truncated upload")
        wait_until_blocking(
            lambda: "change not applied" in _state(server, "alpha")["reason"],
            20,
            "failure reported",
            interval=0.1,
        )
        served_after = hammer.count()
        wait_until_blocking(
            lambda: hammer.count() > served_after + 20, 20, "traffic after the failure", interval=0.1
        )
    assert hammer.failures == []
    assert hammer.seen() == {1.0}
    state = _state(server, "alpha")
    assert state["state"] == "READY" and state["versions"] == ["1"]
    assert "version 2" in state["reason"]


def test_broken_model_is_unavailable_with_a_reason_and_others_keep_serving(server, repository):
    (repository / "gamma").mkdir()
    (repository / "gamma" / "config.pbtxt").write_text("max_batch_size: -3\n")
    wait_until_blocking(
        lambda: _state(server, "gamma").get("state") == "UNAVAILABLE", 20, "gamma reported", interval=0.1
    )
    assert "max_batch_size must be >= 0" in _state(server, "gamma")["reason"]
    status, body = server.json("GET", "/v2/models/gamma/ready")
    assert status == 503 and "max_batch_size" in body["error"]
    assert server.request("GET", "/v2/models/alpha/ready")[0] == 200
    assert server.request("GET", "/v2/health/ready")[0] == 200


def test_a_model_linked_from_outside_the_repository_is_refused(server, repository, tmp_path):
    outside = tmp_path / "elsewhere"
    write_scale_model(outside, "secret", 1, 9.0)
    (repository / "secret").symlink_to(outside / "secret")
    wait_until_blocking(
        lambda: _state(server, "secret").get("state") == "UNAVAILABLE", 20, "secret refused", interval=0.1
    )
    assert "outside the model repository" in _state(server, "secret")["reason"]
    status, body = server.json(
        "POST",
        "/v2/models/secret/infer",
        {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4], "data": [1, 1, 1, 1]}]},
    )
    assert status == 503 and "outside the model repository" in body["error"]
