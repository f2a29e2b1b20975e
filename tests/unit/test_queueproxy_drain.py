"""The drain rule: done once the quiet period passed since the later of drain start and last request."""

import pytest

from queueproxy.drain import Drainer


@pytest.mark.parametrize(
    ("requests_at", "drain_at", "expected"),
    [
        ([], 10.0, 40.0),  # no traffic: the full quiet period from the drain start
        ([5.0], 10.0, 40.0),  # traffic before the drain does not extend it
        ([12.0], 10.0, 42.0),  # a request while draining restarts the quiet period
        ([12.0, 39.0], 10.0, 69.0),  # ... every time
    ],
    ids=["no-traffic", "traffic-before-the-drain", "a-request-while-draining", "every-request-restarts-it"],
)
def test_drain_completes_a_quiet_period_after_the_last_request(requests_at, drain_at, expected):
    drainer = Drainer(quiet_period=30.0)
    for at in [t for t in requests_at if t < drain_at]:
        drainer.touch(at)
    drainer.start(drain_at)
    for at in [t for t in requests_at if t >= drain_at]:
        drainer.touch(at)
    assert drainer.draining
    assert drainer.drained_at() == expected


def test_not_draining_has_no_end_and_a_second_start_keeps_the_first():
    drainer = Drainer(quiet_period=30.0)
    assert drainer.drained_at() is None and not drainer.draining
    drainer.start(1.0)
    drainer.start(5.0)  # a second start (SIGTERM then SIGINT) keeps the first
    assert drainer.drained_at() == 31.0
