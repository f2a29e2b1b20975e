"""How ``kpa sweep`` collects its cells (simulation/sweep_runners.drive), on a thread pool standing in
for the process pool or the Dask cluster: a cell that fails is reported on its own and the rest go
on; a bound met in a cell, a cluster without workers or Ctrl-C cancels what has not finished."""

import concurrent.futures as cf
import threading

import pytest

from simulation.scenario import ScenarioError
from simulation.sweep_cells import CellOutput
from simulation.sweep_runners import Runner, SchedulerError, drive


def output(cell):
    return CellOutput({"cell": cell}, {})


@pytest.fixture
def pool():
    with cf.ThreadPoolExecutor(2) as executor:
        yield executor


def test_every_cell_is_done_once_and_a_failed_one_is_reported_on_its_own(pool):
    def work(cell):
        if cell == 2:
            raise RuntimeError("worker died")  # what Dask's KilledWorker or a broken pool looks like
        return output(cell)

    done = {}
    failed = drive(Runner(pool, lambda: 2), 6, lambda ex, c: ex.submit(work, c), done.__setitem__)
    assert failed == {2: "RuntimeError: worker died"}
    assert sorted(done) == [0, 1, 3, 4, 5] and all(done[c].report == {"cell": c} for c in done)


def test_no_more_cells_are_in_flight_than_the_runner_takes(pool):
    """Each cell carries its parsed scenario and brings back its files: only a few travel at once."""
    submitted, finished, outstanding = [], [], []

    def submit(executor, cell):
        submitted.append(cell)
        outstanding.append(len(submitted) - len(finished))
        return executor.submit(output, cell)

    assert drive(Runner(pool, lambda: 3), 10, submit, lambda c, o: finished.append(c)) == {}
    assert submitted == list(range(10)) and sorted(finished) == submitted
    assert max(outstanding) == 3


def test_a_bound_met_in_a_cell_cancels_the_cells_not_started(pool):
    release = threading.Event()
    futures = []

    def work(cell):
        if cell == 0:
            raise ScenarioError("duration: above the limit")
        release.wait(5)
        return output(cell)

    def submit(executor, cell):
        futures.append(executor.submit(work, cell))
        return futures[-1]

    with pytest.raises(ScenarioError, match="above the limit"):
        drive(Runner(pool, lambda: 4), 8, submit, lambda c, o: None)
    release.set()
    assert len(futures) == 4 and any(f.cancelled() for f in futures)


def test_a_cluster_that_cannot_take_cells_ends_the_sweep_with_its_error(pool):
    def capacity():
        raise SchedulerError("the Dask scheduler at tcp://127.0.0.1:1 has had no worker for 60 s")

    with pytest.raises(SchedulerError, match="no worker for 60 s"):
        drive(Runner(pool, capacity), 3, lambda ex, c: ex.submit(output, c), lambda c, o: None)


def test_ctrl_c_cancels_the_cells_in_flight(pool):
    release = threading.Event()
    futures = []

    def submit(executor, cell):  # cell 0 finishes at once, the others wait
        futures.append(executor.submit(output, cell) if cell == 0 else executor.submit(release.wait, 5))
        return futures[-1]

    def done(cell, _):
        raise KeyboardInterrupt  # Ctrl-C while the first result is being written

    with pytest.raises(KeyboardInterrupt):
        drive(Runner(pool, lambda: 4), 4, submit, done)
    release.set()
    assert len(futures) == 4 and futures[3].cancelled()  # 2 threads: cell 3 had not started
