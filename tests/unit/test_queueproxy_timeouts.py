"""Knative's three request timeouts, as the queue-proxy's ticker judges them."""

from dataclasses import dataclass

import pytest

from queueproxy.config import QueueProxyConfig
from queueproxy.handler import Timeouts


@dataclass
class FakeResponse:
    started: bool = False
    last_write: float = 0.0


@dataclass
class FakeRequest:
    started: float
    response: FakeResponse


@pytest.mark.parametrize(
    ("settings", "response", "now", "expired"),
    [
        ({"revision_timeout": 10}, FakeResponse(), 109.9, False),
        ({"revision_timeout": 10}, FakeResponse(), 110.0, True),
        ({"revision_timeout": 10}, FakeResponse(started=True, last_write=109.0), 110.0, True),  # always armed
        ({"response_start_timeout": 2}, FakeResponse(), 102.0, True),
        ({"response_start_timeout": 2}, FakeResponse(started=True, last_write=101.0), 105.0, False),
        ({"idle_timeout": 3}, FakeResponse(), 103.0, True),  # nothing written since the start
        (
            {"idle_timeout": 3},
            FakeResponse(started=True, last_write=108.0),
            110.9,
            False,
        ),  # re-armed by writes
        ({"idle_timeout": 3}, FakeResponse(started=True, last_write=108.0), 111.0, True),
        ({"response_start_timeout": 0, "idle_timeout": 0}, FakeResponse(), 250.0, False),  # 0 disables
    ],
    ids=[
        "revision-not-yet",
        "revision-at-its-deadline",
        "revision-after-the-response-started",
        "response-start",
        "response-start-disarmed-once-started",
        "idle-before-any-byte",
        "idle-rearmed-by-writes",
        "idle-after-the-last-write",
        "zero-disables",
    ],
)
def test_a_request_expires_on_whichever_timeout_comes_first(settings, response, now, expired):
    timeouts = Timeouts(QueueProxyConfig(**settings), loop=None)
    assert timeouts.expired(FakeRequest(started=100.0, response=response), now) is expired
