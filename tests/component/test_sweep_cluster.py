"""`kpa sweep --scheduler` on a Dask LocalCluster on loopback, against the same sweep on local processes.

One cluster for the module (two worker processes, one thread each; every socket it listens on, its
health/metrics HTTP server included, on 127.0.0.1: the fixture checks), closed by its fixture. The
sweeps run as a user runs them: `kpa sweep` in a child.
"""

import csv
import json
import os
import signal
import socket
import subprocess
import sys
import time

import psutil
import pytest
from waiting import wait_until_blocking

distributed = pytest.importorskip("distributed", reason="Dask's distributed: pip install '.[sweep-cluster]'")

WALL_CLOCK = ("wall_seconds", "requests_per_wall_second")  # the only figures that measure the run itself
GRID = [
    "--grid",
    "revision.annotations.autoscaling.knative.dev/target=1,2",
    "--grid",
    "config.stable-window=20s,40s",
]

# ~100,000 requests: about half a second of simulation per cell, so a worker can be killed in the middle.
SCENARIO = """\
duration: 400
warmup: 10
seed: 3
revision:
  container_concurrency: 2
  queue_depth: 20
  service_time: {dist: exponential, mean: 0.2}
  cold_start: {dist: constant, value: 2.0}
  annotations: {"autoscaling.knative.dev/target-burst-capacity": "0"}
workload:
  - {type: poisson, rate: 0, duration: 20}
  - {type: poisson, rate: 300, duration: 340}
  - {type: poisson, rate: 0, duration: 40}
"""


def kpa_sweep(scenario, out, *extra, timeout=90):
    command = [
        sys.executable,
        "-m",
        "kpa",
        "sweep",
        str(scenario),
        *GRID,
        "--out",
        str(out),
        *map(str, extra),
    ]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout)


def on_loopback(address):
    return address.startswith("tcp://127.0.0.1:")


def loopback_cluster(workers):
    """A LocalCluster whose scheduler, nannies, workers and HTTP servers all listen on 127.0.0.1 only
    (``dashboard_address=None`` would still open the scheduler's HTTP server, on the fixed port 8787;
    ``":0"`` would put it on every interface)."""
    return distributed.LocalCluster(
        n_workers=workers,
        threads_per_worker=1,
        processes=True,
        host="127.0.0.1",
        dashboard_address="127.0.0.1:0",
    )


def listening(process):
    return [c.laddr for c in process.connections("inet") if c.status == psutil.CONN_LISTEN]


@pytest.fixture(scope="module")
def cluster():
    with loopback_cluster(2) as local, distributed.Client(local, set_as_default=False) as client:
        workers = client.scheduler_info()["workers"]
        addresses = [local.scheduler_address, *workers, *(w["nanny"] for w in workers.values())]
        assert len(workers) == 2 and all(map(on_loopback, addresses)), addresses
        here = psutil.Process()
        sockets = [a for p in [here, *here.children(recursive=True)] for a in listening(p)]
        assert len(sockets) >= 5 and {a.ip for a in sockets} == {"127.0.0.1"}, sockets
        yield local, client


@pytest.fixture(scope="module")
def scenario(tmp_path_factory):
    path = tmp_path_factory.mktemp("scenario") / "load.yaml"
    path.write_text(SCENARIO)
    return path


@pytest.fixture(scope="module")
def local_sweep(scenario, tmp_path_factory):
    out = tmp_path_factory.mktemp("local")
    started = time.monotonic()
    result = kpa_sweep(scenario, out, "--jobs", 2)
    assert result.returncode == 0, result.stderr
    print(f"local sweep: {time.monotonic() - started:.1f} s")
    return out


def results(out):
    """Every file of the sweep's cells and its summaries, wall-clock figures left out."""
    files = {}
    for path in sorted((out / "cells").glob("*/*")):
        content = path.read_bytes()
        if path.name == "report.json":
            report = json.loads(content)
            assert set(WALL_CLOCK) <= set(report)
            content = json.dumps({k: v for k, v in report.items() if k not in WALL_CLOCK}, indent=2).encode()
        files[str(path.relative_to(out))] = content
    with (out / "sweep.csv").open() as handle:
        files["sweep.csv"] = [
            {k: v for k, v in row.items() if k != "wall_seconds"} for row in csv.DictReader(handle)
        ]
    files["pareto.json"] = (out / "pareto.json").read_bytes()
    return files


def test_a_sweep_on_dask_gives_the_local_results_byte_for_byte(cluster, scenario, local_sweep, tmp_path):
    local, _ = cluster
    started = time.monotonic()
    result = kpa_sweep(scenario, tmp_path, "--scheduler", local.scheduler_address)
    assert result.returncode == 0, result.stderr
    print(f"Dask sweep: {time.monotonic() - started:.1f} s")
    remote, here = results(tmp_path), results(local_sweep)
    assert len(here) == 4 * 2 + 2  # report.json and timeline.csv of 4 cells, sweep.csv, pareto.json
    assert remote == here


def test_the_sweep_writes_its_pareto_view(local_sweep):
    with (local_sweep / "sweep.csv").open() as handle:
        rows = {row["cell"]: row for row in csv.DictReader(handle)}
    pareto = json.loads((local_sweep / "pareto.json").read_text())
    front = pareto["frontier"]
    assert front and pareto["without_p99"] == []
    for point in front:  # each frontier point is a cell with its own grid values and figures
        row = rows[point["cell"]]
        assert float(row["pod_seconds"]) == point["pod_seconds"] and float(row["p99"]) == point["p99"]
        assert str(point["grid"]["config.stable-window"]) == row["config.stable-window"]
    costs = [p["pod_seconds"] for p in front]
    assert costs == sorted(costs) and [p["p99"] for p in front] == sorted(
        (p["p99"] for p in front), reverse=True
    )
    for cell, row in rows.items():  # a cell off the frontier is beaten on both axes by one on it
        if cell not in {p["cell"] for p in front}:
            cost, p99 = float(row["pod_seconds"]), float(row["p99"])
            assert any(p["pod_seconds"] <= cost and p["p99"] <= p99 for p in front)
    assert (local_sweep / "pareto.png").read_bytes()[:4] == b"\x89PNG"


def test_a_worker_killed_mid_sweep_is_replaced_and_its_cell_rerun(cluster, scenario, local_sweep, tmp_path):
    local, client = cluster
    command = [sys.executable, "-m", "kpa", "sweep", str(scenario), *GRID, "--out", str(tmp_path),
               "--scheduler", local.scheduler_address]  # fmt: skip
    sweep = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_until_blocking(lambda: any(client.processing().values()), 30, "a cell running on a worker")
        busy = next(worker for worker, keys in client.processing().items() if keys)
        os.kill(client.run(os.getpid, workers=[busy])[busy], signal.SIGKILL)
        _, stderr = sweep.communicate(timeout=90)
    finally:
        sweep.kill()
    assert sweep.returncode == 0, stderr
    assert results(tmp_path) == results(local_sweep)
    client.wait_for_workers(2, timeout=30)  # the nanny restarted it, for the tests after this one


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_an_unreachable_scheduler_fails_fast_naming_the_address_and_the_fix(scenario, tmp_path):
    address = f"tcp://127.0.0.1:{free_port()}"  # nothing listens there
    started = time.monotonic()
    result = kpa_sweep(scenario, tmp_path, "--scheduler", address, "--connect-timeout", 2)
    assert result.returncode == 1 and time.monotonic() - started < 20
    message = " ".join(result.stderr.split())
    assert f"cannot reach the Dask scheduler at {address} within 2 s" in message
    assert f"dask worker {address}" in message and "leave out --scheduler" in message
    assert not (tmp_path / "sweep.csv").exists()


def test_a_scheduler_without_workers_fails_within_the_connect_timeout(scenario, tmp_path):
    with loopback_cluster(0) as empty:
        assert on_loopback(empty.scheduler_address)
        started = time.monotonic()
        result = kpa_sweep(scenario, tmp_path, "--scheduler", empty.scheduler_address, "--connect-timeout", 2)
    assert result.returncode == 1 and time.monotonic() - started < 20
    message = " ".join(result.stderr.split())
    assert f"the Dask scheduler at {empty.scheduler_address} has no worker after 2 s" in message
