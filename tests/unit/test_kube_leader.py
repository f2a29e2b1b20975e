"""kubebackend.leader: client-go's Lease election decision, case by case, and the MicroTime it writes."""

from __future__ import annotations

import datetime as dt

import pytest
from tables import named

from kubebackend.leader import (
    Action,
    Durations,
    LeaseRecord,
    Observed,
    decide,
    jittered,
    micro_time,
    observe,
    release,
    renew_deadline_passed,
)

ME, OTHER = "ctl-a_1", "ctl-b_2"
D = Durations()  # 15 s lease, 10 s renew deadline, 2 s retry
WALL = 1_780_000_000.25  # the Unix time the decisions write
STAMP = "2026-05-28T20:26:40.250000Z"  # micro_time(WALL)
OLD = "2026-05-28T20:00:00.000000Z"
FUTURE = "2099-01-01T00:00:00.000000Z"


def held(holder: str, *, duration: int | None = 15, stamp: str = OLD, transitions: int = 3) -> LeaseRecord:
    return LeaseRecord(holder, duration, stamp, stamp, transitions)


def seen(record: LeaseRecord, changed_at: float) -> Observed:
    return Observed(record, "41", changed_at)


CREATED = LeaseRecord(ME, 15, STAMP, STAMP, 0)
TAKEN = LeaseRecord(ME, 15, STAMP, STAMP, 4)  # the old record's 3 transitions, plus one
RENEWED = LeaseRecord(ME, 15, OLD, STAMP, 3)


# (case, what was read (None: no Lease), now on the local clock, our last successful write while
# leading (None: not leading), action, the record written or None)
CASES = [
    ("no Lease: create it, holding it", None, 100.0, None, Action.CREATE, CREATED),
    ("our own Lease: renew, keeping acquireTime and transitions", seen(held(ME), 99.0), 100.0, 98.0,
     Action.RENEW, RENEWED),
    ("our own Lease while not leading (a write whose answer was lost): renew it", seen(held(ME), 50.0), 100.0,
     None, Action.RENEW, RENEWED),
    ("another's, changed 1 s ago: wait", seen(held(OTHER), 99.0), 100.0, None, Action.WAIT, None),
    ("another's, unchanged for 14.9 s: wait", seen(held(OTHER), 85.1), 100.0, None, Action.WAIT, None),
    ("another's, unchanged for the 15 s lease: take over", seen(held(OTHER), 85.0), 100.0, None,
     Action.TAKE_OVER, TAKEN),
    ("another's, stamped in the future but unchanged for 15 s here: take over",
     seen(held(OTHER, stamp=FUTURE), 85.0), 100.0, None, Action.TAKE_OVER, TAKEN),
    ("another's, stamped long ago but only just seen changing: wait",
     seen(held(OTHER, stamp="2001-01-01T00:00:00.000000Z"), 99.5), 100.0, None, Action.WAIT, None),
    ("the record's own lease duration counts (a 30 s lease, unchanged for 20 s): wait",
     seen(held(OTHER, duration=30), 80.0), 100.0, None, Action.WAIT, None),
    ("no duration in the record: ours counts (unchanged for 15 s): take over",
     seen(held(OTHER, duration=None), 85.0), 100.0, None, Action.TAKE_OVER, TAKEN),
    ("released (empty holder): take over at once", seen(held("", duration=1), 99.9), 100.0, None,
     Action.TAKE_OVER, TAKEN),
    ("leading, last renewal 9.9 s ago: renew", seen(held(ME), 90.1), 100.0, 90.1, Action.RENEW, RENEWED),
    ("leading, no renewal for the 10 s renew deadline: lost", seen(held(ME), 90.0), 100.0, 90.0,
     Action.LOST, None),
    ("leading, but the Lease names another: lost at once", seen(held(OTHER), 99.0), 100.0, 99.0,
     Action.LOST, None),
    ("leading, but the Lease was released by someone: lost", seen(held("", duration=1), 99.0), 100.0, 99.0,
     Action.LOST, None),
    ("leading, but the Lease is gone: lost (recreate it as a candidate)", None, 100.0, 99.0,
     Action.LOST, None),
]  # fmt: skip


@pytest.mark.parametrize(("case", "observed", "now", "renewed_at", "action", "write"), named(CASES))
def test_decide(case, observed, now, renewed_at, action, write):
    decision = decide(observed, identity=ME, now=now, wall_now=WALL, durations=D, renewed_at=renewed_at)
    assert (decision.action, decision.write) == (action, write), decision.reason
    assert decision.reason


def test_waiting_on_a_record_that_keeps_changing_never_takes_over():
    """A live leader renews every 2 s: each read sees a new record, so the 15 s never run out."""
    observed = None
    for step in range(40):  # 80 s of another's renewals, read every 2 s
        now = 1000.0 + 2 * step
        renewed = f"2026-05-28T20:00:{step:02d}.000000Z"
        observed = observe(observed, LeaseRecord(OTHER, 15, OLD, renewed, 0), str(step), now)
        decision = decide(observed, identity=ME, now=now, wall_now=WALL, durations=D, renewed_at=None)
        assert decision.action is Action.WAIT
    assert observed is not None and observed.changed_at == now


def test_the_change_clock_moves_only_when_the_record_changes():
    record = held(OTHER)
    first = observe(None, record, "1", 10.0)
    same = observe(first, record, "2", 20.0)  # another field of the Lease changed (a label): same record
    assert (same.changed_at, same.resource_version) == (10.0, "2")
    renewed = observe(same, LeaseRecord(OTHER, 15, OLD, STAMP, 3), "3", 30.0)
    assert renewed.changed_at == 30.0


def test_the_record_reads_from_and_writes_to_the_lease_spec():
    spec = {
        "holderIdentity": ME,
        "leaseDurationSeconds": 15,
        "acquireTime": OLD,
        "renewTime": STAMP,
        "leaseTransitions": 2,
    }
    assert LeaseRecord.from_spec(spec) == LeaseRecord(ME, 15, OLD, STAMP, 2)
    assert LeaseRecord.from_spec(spec).to_spec() == spec
    assert LeaseRecord.from_spec({}) == LeaseRecord()  # a Lease nobody has held: no holder, 0 transitions
    assert LeaseRecord.from_spec(None) == LeaseRecord()


def test_release_hands_over_at_once_only_a_lease_we_hold():
    assert release(seen(held(ME, transitions=5), 1.0), ME, WALL) == LeaseRecord("", 1, STAMP, STAMP, 5)
    assert release(seen(held(OTHER), 1.0), ME, WALL) is None
    assert release(None, ME, WALL) is None


def test_renew_deadline():
    assert not renew_deadline_passed(None, 1e9, D)
    assert not renew_deadline_passed(100.0, 109.99, D)
    assert renew_deadline_passed(100.0, 110.0, D)


@pytest.mark.parametrize(
    ("case", "lease", "renew", "retry", "message"),
    named(
        [
            ("the lease must outlast the renew deadline", 10, 10, 2, "must exceed the renew deadline"),
            ("the deadline must allow a jittered retry", 15, 2.4, 2, "must exceed 1.2"),
            ("leaseDurationSeconds is an integer", 15.5, 10, 2, "whole number"),
            ("no zero retry period", 15, 10, 0, "must be > 0"),
        ],
    ),
)
def test_durations_keep_client_gos_constraints(case, lease, renew, retry, message):
    with pytest.raises(ValueError, match=message):
        Durations(lease, renew, retry)


def test_the_defaults_are_kubernetes_own():
    assert (D.lease, D.renew_deadline, D.retry, D.lease_seconds) == (15.0, 10.0, 2.0, 15)


def test_a_candidate_waits_between_one_and_2_2_retry_periods():
    assert (jittered(2.0, 0.0), jittered(2.0, 0.5), jittered(2.0, 0.999999)) == pytest.approx((2.0, 3.2, 4.4))


def _expected(epoch: float) -> str:
    micros = round(epoch * 1_000_000)
    moment = dt.datetime(1970, 1, 1, tzinfo=dt.UTC) + dt.timedelta(microseconds=micros)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


MICRO_TIMES = [
    ("the epoch", 0.0, "1970-01-01T00:00:00.000000Z"),
    ("whole seconds keep six zero digits", 1_780_000_000.0, "2026-05-28T20:26:40.000000Z"),
    ("microseconds", 1_780_000_000.123456, "2026-05-28T20:26:40.123456Z"),
    ("a leap day", 1_709_164_800.5, "2024-02-29T00:00:00.500000Z"),
    ("the last microsecond of a year", 1_798_761_599.999999, "2026-12-31T23:59:59.999999Z"),
    ("rounding carries into the next year", 1_798_761_599.9999996, "2027-01-01T00:00:00.000000Z"),
    ("2000-03-01, after a 400-year leap day", 951_868_800.0, "2000-03-01T00:00:00.000000Z"),
    ("2100 is no leap year", 4_107_542_400.0, "2100-03-01T00:00:00.000000Z"),
]


@pytest.mark.parametrize(("case", "epoch", "text"), named(MICRO_TIMES))
def test_micro_time_is_utc_with_exactly_six_fractional_digits_and_z(case, epoch, text):
    assert micro_time(epoch) == text == _expected(epoch)


def test_micro_time_agrees_with_the_calendar_across_four_centuries():
    for day in range(-1000, 150_000, 97):  # every 97th day from 1967 to 2380
        epoch = day * 86_400 + (day % 86_400) + 0.000001 * (day % 1_000_000)
        assert micro_time(epoch) == _expected(epoch)
