"""Where ``kpa sweep`` runs its cells: a local process pool (the default) or a Dask cluster.

Both are a :class:`concurrent.futures.Executor` (Dask's through ``Client.get_executor``), so one loop,
:func:`drive`, submits, collects and cancels the cells of either. The loop keeps only a few cells in
flight per worker thread (each carries its parsed scenario and brings back its files), and never
waits unboundedly: it looks at the cluster every second, and a cluster with no worker for
``stall_timeout`` seconds ends the sweep with an error instead of a hang.

Dask is optional (``pip install 'kpa-emulator[sweep-cluster]'``) and imported only for ``--scheduler``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures as cf
import multiprocessing
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from simulation.scenario import ScenarioError
from simulation.sweep_cells import CellOutput

IN_FLIGHT_PER_THREAD = 2  # enough to keep a worker busy while its last result travels back


class SchedulerError(Exception):
    """The Dask cluster cannot run the sweep; the message names the address and what to do."""


@dataclass(frozen=True)
class Runner:
    """An executor and how many cells it can usefully hold right now (raising when it can hold none)."""

    executor: cf.Executor
    capacity: Callable[[], int]


@contextmanager
def local_runner(jobs: int) -> Iterator[Runner]:
    """``jobs`` fresh (spawned) processes on this machine."""
    with cf.ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        yield Runner(pool, lambda: IN_FLIGHT_PER_THREAD * jobs)


def _fix(address: str) -> str:
    return (
        f"start a scheduler there with `dask scheduler --host HOST --port PORT` and workers with "
        f"`dask worker {address}` (docs/experiments.md, 'Sweeps on a cluster'), or leave out --scheduler "
        "to sweep on this machine"
    )


async def _probe(address: str, timeout: float) -> None:
    from distributed.comm import connect

    comm = await connect(address, timeout=timeout)
    await comm.close()


@contextmanager
def dask_runner(address: str, connect_timeout: float, stall_timeout: float) -> Iterator[Runner]:
    """A client of the Dask scheduler at ``address``, failing within ``connect_timeout`` seconds when
    it cannot be reached or has no worker."""
    try:
        from distributed import Client
    except ImportError:
        raise SchedulerError(
            f"--scheduler {address}: Dask's distributed is not installed; "
            "pip install 'kpa-emulator[sweep-cluster]' (or 'dask[distributed]')"
        ) from None
    try:  # a bare connection first: a Client that fails to start leaves noise behind it at exit
        asyncio.run(_probe(address, connect_timeout))
        client = Client(address, timeout=connect_timeout, set_as_default=False)
    except ValueError as exc:
        raise SchedulerError(
            f"--scheduler {address}: not a Dask address ({exc}); e.g. tcp://HOST:8786"
        ) from None
    except Exception as exc:  # OSError for refused or timed out; anything else from a non-Dask server
        raise SchedulerError(
            f"cannot reach the Dask scheduler at {address} within {connect_timeout:g} s "
            f"({type(exc).__name__}: {exc}); {_fix(address)}"
        ) from None
    try:
        try:
            client.wait_for_workers(1, timeout=connect_timeout)
        except TimeoutError:
            raise SchedulerError(
                f"the Dask scheduler at {address} has no worker after {connect_timeout:g} s; {_fix(address)}"
            ) from None
        watch = _WorkerWatch(client, address, stall_timeout)
        yield Runner(client.get_executor(pure=False), watch.capacity)
    finally:
        client.close()


class _WorkerWatch:
    """How many cells the cluster can take now: two per worker thread; none for too long is an error."""

    def __init__(self, client: Any, address: str, stall_timeout: float) -> None:
        self._client, self._address, self._stall = client, address, stall_timeout
        self._since: float | None = None  # when the cluster was last seen without a worker

    def capacity(self) -> int:
        threads = sum(self._client.nthreads().values()) if self._client.status == "running" else 0
        if threads:
            self._since = None
            return IN_FLIGHT_PER_THREAD * threads
        now = time.monotonic()
        self._since = self._since if self._since is not None else now
        if now - self._since > self._stall:
            raise SchedulerError(
                f"the Dask scheduler at {self._address} has had no worker (or no connection) for "
                f"{self._stall:g} s; the cells not finished cannot run; {_fix(self._address)}"
            )
        return 1  # one cell waits on the scheduler for a worker to come back


def drive(
    runner: Runner,
    count: int,
    submit: Callable[[cf.Executor, int], cf.Future[CellOutput]],
    done: Callable[[int, CellOutput], None],
) -> dict[int, str]:
    """Run cells ``0 .. count-1`` through ``submit``, calling ``done`` as each finishes, in any order.

    Returns the cells that failed (a crashed worker after Dask's retries, a broken pool) with why; a
    :class:`ScenarioError` (a bound met during a run), a :class:`SchedulerError` or Ctrl-C cancels
    every cell not finished and propagates.
    """
    failed: dict[int, str] = {}
    flying: dict[cf.Future[CellOutput], int] = {}
    following = 0
    try:
        while following < count or flying:
            room = runner.capacity() - len(flying)
            while room > 0 and following < count:
                flying[submit(runner.executor, following)] = following
                following, room = following + 1, room - 1
            finished, _ = cf.wait(flying, timeout=1.0, return_when=cf.FIRST_COMPLETED)
            for future in finished:
                cell = flying.pop(future)
                try:
                    output = future.result()
                except ScenarioError:
                    raise
                except cf.CancelledError:
                    failed[cell] = "cancelled (the cluster lost it)"
                except Exception as exc:
                    failed[cell] = f"{type(exc).__name__}: {exc}"
                else:
                    done(cell, output)
    except BaseException:
        for future in flying:
            future.cancel()
        raise
    return failed
