"""The watched repository under churn (issue 15's robustness question): while clients keep asking three
intact models, other model directories are rewritten with garbage, half-written in place, renamed,
deleted, given a broken config and created without a version. The intact models answer every request
correctly; each damaged model reports what the docs say (the old version serving with target
FailedToLoad, unloaded, or FailedToLoad); the server never stops answering. Runs with a budget, so the
on-demand paths (registration, loads, reloads, unloads) are the ones under churn."""

from __future__ import annotations

import json
import shutil
import threading
import time
from pathlib import Path

import numpy as np
import torch
from predictor_fixtures import PredictorProcess, write_config
from waiting import wait_until_blocking

from predictor.demo_models import build_many_models_repository, many_model, many_model_name

X = np.linspace(-1, 1, 16, dtype=np.float32).reshape(1, 16)
BODY = json.dumps(
    {"inputs": [{"name": "x", "shape": [1, 16], "datatype": "FP32", "data": X.ravel().tolist()}]}
)
CONFIG = """name: "{name}"
max_batch_size: 8
input [{{ name: "x" data_type: TYPE_FP32 dims: [16] }}]
output [{{ name: "y" data_type: TYPE_FP32 dims: [8] }}]
parameters {{ key: "backend" value {{ string_value: "eager" }} }}
"""
VICTIMS = {"rewritten": 10, "halfwritten": 11, "renamed": 12, "deleted": 13, "badconfig": 14}


def _expected(index: int) -> list[float]:
    with torch.no_grad():
        return many_model(index)(torch.from_numpy(X)).numpy().ravel().tolist()


def _model_bytes(index: int, scratch: Path) -> bytes:
    path = scratch / f"model{index}.pt"
    torch.jit.save(torch.jit.script(many_model(index)), str(path))
    return path.read_bytes()


def _write_model(repository: Path, name: str, index: int, scratch: Path) -> None:
    write_config(repository / name, CONFIG.format(name=name))
    (repository / name / "1").mkdir(parents=True, exist_ok=True)
    (repository / name / "1" / "model.pt").write_bytes(_model_bytes(index, scratch))


def _replace(path: Path, data: bytes) -> None:
    aside = path.with_name(f".{path.name}.partial")
    aside.write_bytes(data)
    aside.replace(path)


def test_models_left_intact_never_fail_while_others_are_damaged(tmp_path):
    repository = build_many_models_repository(tmp_path / "repo", count=3)
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    for name, index in VICTIMS.items():
        _write_model(repository, name, index, scratch)
    server = PredictorProcess(repository, tmp_path / "cache", "--watch", "--max-models", "12").start()
    expected = [_expected(i) for i in range(3)]
    failures: list[str] = []
    answered = [0]
    stop = threading.Event()

    def client(index: int) -> None:
        name = many_model_name(index)
        while not stop.is_set():
            try:
                status, _, body = server.request("POST", f"/v2/models/{name}/infer", BODY.encode())
                data = json.loads(body)["outputs"][0]["data"] if status == 200 else None
                if data is None or not np.allclose(data, expected[index], rtol=1e-5, atol=1e-6):
                    failures.append(f"{name}: {status} {body[:200]!r}")
                answered[0] += 1
            except Exception as exc:  # a refused or cut connection is a failure too
                failures.append(f"{name}: {type(exc).__name__}: {exc}")

    def rows() -> dict[str, dict]:
        return {row["name"]: row for row in server.json("POST", "/v2/repository/index")[1]}

    def state(name: str) -> tuple[str, str] | None:
        row = rows().get(name)
        if row is None:
            return None
        states = row["modelStatus"]["states"]
        return states["activeModelState"], states["targetModelState"]

    clients = [threading.Thread(target=client, args=(i % 3,)) for i in range(3)]
    try:
        for name in VICTIMS:  # loaded before the damage, so a broken change has an old version to keep
            assert server.request("POST", f"/v2/models/{name}/infer", BODY.encode())[0] == 200
        for thread in clients:
            thread.start()
        started = time.monotonic()
        model_file = repository / "rewritten" / "1" / "model.pt"
        _replace(model_file, b"this is not a TorchScript archive")
        half = _model_bytes(4, scratch)
        with open(repository / "halfwritten" / "1" / "model.pt", "wb") as caught:
            caught.write(half[: len(half) // 2])
            caught.flush()
            (repository / "renamed").rename(repository / "renamed-now")
            shutil.rmtree(repository / "deleted")
            _replace(repository / "badconfig" / "config.pbtxt", b"max_batch_size: banana\n")
            write_config(repository / "fresh", CONFIG.format(name="fresh"))  # no version directory
            wait_until_blocking(
                lambda: state("halfwritten") == ("Loaded", "FailedToLoad"),
                20,
                lambda: str(rows().get("halfwritten")),
            )
            caught.write(half[len(half) // 2 :])  # the write ends: the new version loads and serves
        wait_until_blocking(lambda: state("rewritten") == ("Loaded", "FailedToLoad"), 20, lambda: str(rows()))
        wait_until_blocking(lambda: state("badconfig") == ("Loaded", "FailedToLoad"), 20, lambda: str(rows()))
        wait_until_blocking(
            lambda: state("renamed") is None and state("deleted") is None, 20, lambda: str(rows())
        )
        wait_until_blocking(lambda: state("renamed-now") == ("FailedToLoad", ""), 20, lambda: str(rows()))
        wait_until_blocking(lambda: state("fresh") == ("FailedToLoad", ""), 20, lambda: str(rows()))
        wait_until_blocking(lambda: state("halfwritten") == ("Loaded", ""), 20, lambda: str(rows()))
        for name, index in (("rewritten", VICTIMS["rewritten"]), ("badconfig", VICTIMS["badconfig"]),
                            ("halfwritten", 4)):  # fmt: skip
            status, _, body = server.request("POST", f"/v2/models/{name}/infer", BODY.encode())
            assert status == 200, body
            assert np.allclose(json.loads(body)["outputs"][0]["data"], _expected(index), rtol=1e-5, atol=1e-6)
        info = rows()["rewritten"]["modelStatus"]
        assert info["transitionStatus"] == "BlockedByFailedLoad" and info["lastFailureInfo"]["time"]
        assert "renamed" in rows()["renamed-now"]["modelStatus"]["lastFailureInfo"]["message"]
        for gone in ("renamed", "deleted"):
            assert server.request("POST", f"/v2/models/{gone}/infer", BODY.encode())[0] == 404
        elapsed = time.monotonic() - started
    finally:
        stop.set()
        for thread in clients:
            thread.join(30)
        code = server.stop()
    assert failures == [], failures[:5]
    assert answered[0] > 30, f"only {answered[0]} requests answered in {elapsed:.1f} s"
    assert code == 0
