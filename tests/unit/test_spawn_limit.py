"""The local backend's launch pacing: in-flight cap plus token bucket, with time as a parameter."""

import pytest

from localbackend.spawn_limit import SpawnLimiter, SpawnLimitError


def replay(limiter: SpawnLimiter, steps: list[tuple[float, str]]) -> list[int]:
    """Apply ('take' | 'done' | 'ask') steps at their times; returns what each 'ask' saw."""
    seen = []
    for now, action in steps:
        if action == "take":
            limiter.take(now)
        elif action == "done":
            limiter.finished()
        else:
            seen.append(limiter.allowed(now))
    return seen


CASES = [
    # (max_in_flight, per_second, burst, steps, allowed seen at each 'ask')
    ("fresh limiter allows a full burst, capped by in-flight", 3, 10.0, 5, [(0.0, "ask")], [3]),
    ("fresh limiter allows a full burst", 10, 10.0, 5, [(0.0, "ask")], [5]),
    (
        "burst spent: one token back after 1/rate seconds",
        10,
        10.0,
        2,
        [(0.0, "take"), (0.0, "take"), (0.0, "ask"), (0.05, "ask"), (0.1, "ask"), (10.0, "ask")],
        [0, 0, 1, 2],
    ),
    (
        "in-flight places come back only with finished()",
        2,
        100.0,
        10,
        [(0.0, "take"), (0.0, "take"), (5.0, "ask"), (5.0, "done"), (5.0, "ask")],
        [0, 1],
    ),
    (
        "a clock going backwards neither adds nor removes tokens",
        10,
        1.0,
        1,
        [(10.0, "take"), (9.0, "ask"), (10.5, "ask"), (11.0, "ask")],
        [0, 0, 1],
    ),
    (
        "finished() without a launch is ignored",
        1,
        1.0,
        1,
        [(0.0, "done"), (0.0, "take"), (0.0, "done"), (0.0, "done"), (0.0, "ask"), (1.0, "ask")],
        [0, 1],
    ),
]


@pytest.mark.parametrize(
    ("name", "in_flight", "rate", "burst", "steps", "expected"), CASES, ids=[c[0] for c in CASES]
)
def test_allowed_launches(name, in_flight, rate, burst, steps, expected):
    assert replay(SpawnLimiter(in_flight, rate, burst), steps) == expected


def test_launches_over_a_long_run_never_exceed_burst_plus_rate_times_time():
    limiter = SpawnLimiter(max_in_flight=1000, per_second=40.0, burst=10)
    started = 0
    for tick in range(1001):  # 10 s in 10 ms steps, taking all that is allowed each time
        now = tick * 0.01
        for _ in range(limiter.allowed(now)):
            limiter.take(now)
            started += 1
    assert started == 10 + 40 * 10


WAITS = [
    # (steps before, now, expected wait)
    ([], 0.0, 0.0),
    ([(0.0, "take")], 0.0, 0.5),  # burst 1, 2/s: the next token in 0.5 s
    ([(0.0, "take")], 0.2, pytest.approx(0.3)),
    ([(0.0, "take"), (1.0, "take")], 1.0, None),  # both in-flight places taken: only finished() helps
]


@pytest.mark.parametrize(
    ("steps", "now", "expected"),
    WAITS,
    ids=["fresh", "after-one-take", "part-way-to-the-next-token", "both-in-flight-places-taken"],
)
def test_wait_says_when_to_look_again(steps, now, expected):
    limiter = SpawnLimiter(max_in_flight=2, per_second=2.0, burst=1)
    replay(limiter, steps)
    assert limiter.wait(now) == expected


def test_take_beyond_the_limit_is_refused_naming_the_state():
    limiter = SpawnLimiter(max_in_flight=1, per_second=1.0, burst=1)
    limiter.take(0.0)
    with pytest.raises(SpawnLimitError, match="1 of 1 in flight"):
        limiter.take(0.0)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((0, 1.0, 1), "max_in_flight=0: must be at least 1"),
        ((1, 0.0, 1), "per_second=0.0: must be a finite number > 0"),
        ((1, float("inf"), 1), "per_second=inf"),
        ((1, 1.0, 0), "burst=0: must be at least 1"),
    ],
    ids=["max-in-flight-0", "per-second-0", "per-second-inf", "burst-0"],
)
def test_unworkable_limits_are_rejected(args, message):
    with pytest.raises(SpawnLimitError, match=message):
        SpawnLimiter(*args)
