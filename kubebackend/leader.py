"""Leader election on a coordination.k8s.io Lease, as client-go does it: the decision, pure.

Two controller replicas run; only the one holding the Lease ``kpa-controller`` may scale. Each
replica reads the Lease every retry period and :func:`decide` says what to do with what it read:

* no Lease: **create** it, holding it;
* held by us: **renew** it (new ``renewTime``, same ``acquireTime`` and ``leaseTransitions``);
* held by another: **wait** while the record keeps changing, and **take over** once it has not
  changed for its ``leaseDurationSeconds``. That time is measured on *this process's own clock*
  from when this process first saw the record as it is now (:func:`observe`), never from the
  timestamps in the record: the holder's clock may be skewed, and a record stamped in the future
  must not keep a dead leader in place forever, nor a record stamped in the past unseat a live one;
* released (empty holder, written by a leader shutting down cleanly): take over at once;
* **lost**: we led, but could not renew for ``renew_deadline`` (measured from when our last
  successful write was *sent*), or the record now names someone else. A leader stops acting at
  once then. Because ``renew_deadline < lease`` and the others start counting no earlier than our
  write landed, the old leader has stopped before anyone else may start.

Every write is a PUT carrying the resourceVersion that was read (a create: a POST), so when two
replicas try at once the API server lets one win and answers the other 409: the shell treats a 409
like any failed write, as "not this time".

Differences from client-go, each on the safe side: the deadline runs from the last successful
renewal rather than from the first failed retry (client-go stops up to one retry period later), and
a leader whose Lease disappears stops leading before it recreates it (client-go would recreate it
and go on, while another replica may be creating it too).

Pure: no clock and no I/O. ``now`` is a monotonic local clock in seconds; ``wall_now`` the Unix
time for the timestamps written, as Kubernetes MicroTime (:func:`micro_time`). The shell is
:mod:`kubebackend.leader_election`.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = [
    "JITTER_FACTOR",
    "LEADER_LABEL",
    "LEADER_SERVICE",
    "Action",
    "Decision",
    "Durations",
    "LeaseRecord",
    "Observed",
    "decide",
    "jittered",
    "micro_time",
    "observe",
    "release",
    "renew_deadline_passed",
]

JITTER_FACTOR = 1.2  # client-go's: a candidate waits retry × (1 + rand × 1.2) between tries
# The label the leader puts on its own pod; Service kpa-controller-leader selects on it, so stats the
# activators push reach the leader and not the standby (docs/kubernetes.md, "High availability").
LEADER_LABEL = "kpa-emulator.dev/leader"
LEADER_SERVICE = "kpa-controller-leader"  # in kpa-system, port 8080: the stat-push and status address


@dataclass(frozen=True, slots=True)
class Durations:
    """The election's three durations in seconds; defaults are client-go's and Kubernetes' own.

    ``lease``: how long others wait after the record last changed before taking over; written
    into the Lease as whole seconds, so it must be a whole number. ``renew_deadline``: how long a
    leader keeps leading without a successful renewal. ``retry``: how often everyone tries.
    client-go's constraints hold: lease > renew_deadline > 1.2 × retry.
    """

    lease: float = 15.0
    renew_deadline: float = 10.0
    retry: float = 2.0

    def __post_init__(self) -> None:
        if self.retry <= 0:
            raise ValueError(f"retry period {self.retry!r} s: must be > 0")
        if self.lease != int(self.lease) or self.lease < 1:
            raise ValueError(f"lease duration {self.lease!r} s: must be a whole number of seconds >= 1")
        if not self.lease > self.renew_deadline:
            raise ValueError(
                f"lease duration {self.lease} s must exceed the renew deadline {self.renew_deadline} s"
            )
        if not self.renew_deadline > JITTER_FACTOR * self.retry:
            raise ValueError(
                f"renew deadline {self.renew_deadline} s must exceed {JITTER_FACTOR} × the retry period"
                f" {self.retry} s"
            )

    @property
    def lease_seconds(self) -> int:
        """``spec.leaseDurationSeconds`` as written."""
        return int(self.lease)


def jittered(retry: float, fraction: float) -> float:
    """A candidate's wait before its next try, for ``fraction`` drawn uniformly from [0, 1).

    Jitter keeps replicas that start together (a rollout) from asking in lockstep."""
    return retry * (1.0 + JITTER_FACTOR * fraction)


@dataclass(frozen=True, slots=True)
class LeaseRecord:
    """The election's part of a Lease's ``spec``; timestamps kept as the MicroTime text read.

    ``holder`` "" means nobody holds it (released, or never held).
    """

    holder: str = ""
    lease_duration_seconds: int | None = None
    acquire_time: str | None = None
    renew_time: str | None = None
    transitions: int = 0

    @classmethod
    def from_spec(cls, spec: Mapping[str, Any] | None) -> LeaseRecord:
        spec = spec or {}
        duration = spec.get("leaseDurationSeconds")
        return cls(
            holder=str(spec.get("holderIdentity") or ""),
            lease_duration_seconds=int(duration) if duration is not None else None,
            acquire_time=spec.get("acquireTime"),
            renew_time=spec.get("renewTime"),
            transitions=int(spec.get("leaseTransitions") or 0),
        )

    def to_spec(self) -> dict[str, Any]:
        """The ``spec`` to write; fields left None are left out."""
        spec: dict[str, Any] = {"holderIdentity": self.holder, "leaseTransitions": self.transitions}
        if self.lease_duration_seconds is not None:
            spec["leaseDurationSeconds"] = self.lease_duration_seconds
        if self.acquire_time is not None:
            spec["acquireTime"] = self.acquire_time
        if self.renew_time is not None:
            spec["renewTime"] = self.renew_time
        return spec


@dataclass(frozen=True, slots=True)
class Observed:
    """A Lease as last read: its record, its resourceVersion (the precondition of our next write),
    and ``changed_at``: when this process first saw this record, on its own clock."""

    record: LeaseRecord
    resource_version: str
    changed_at: float


def observe(previous: Observed | None, record: LeaseRecord, resource_version: str, now: float) -> Observed:
    """What we know after reading ``record`` at ``now``: the change time moves only when the record
    differs from the one seen before (a write that touched only other fields does not count, as in
    client-go, which compares the records)."""
    if previous is not None and previous.record == record:
        return Observed(record, resource_version, previous.changed_at)
    return Observed(record, resource_version, now)


class Action(enum.Enum):
    CREATE = "create"  # POST a new Lease holding it
    TAKE_OVER = "take over"  # PUT ourselves as holder of another's expired or released Lease
    RENEW = "renew"  # PUT a new renewTime on our own Lease
    WAIT = "wait"  # another holds a live Lease: try again after the retry period
    LOST = "lost"  # we led and may no longer: stop acting now, write nothing


@dataclass(frozen=True, slots=True)
class Decision:
    """What to do, the record to write for CREATE, TAKE_OVER and RENEW, and why (for the log)."""

    action: Action
    write: LeaseRecord | None
    reason: str


def renew_deadline_passed(renewed_at: float | None, now: float, durations: Durations) -> bool:
    """True when a leader whose last successful write was sent at ``renewed_at`` must stop."""
    return renewed_at is not None and now - renewed_at >= durations.renew_deadline


def decide(
    observed: Observed | None,
    *,
    identity: str,
    now: float,
    wall_now: float,
    durations: Durations,
    renewed_at: float | None,
) -> Decision:
    """The election step after reading the Lease (``observed`` None: there is none).

    ``renewed_at``: when our last successful write (create, take-over or renewal) was sent, on the
    local clock, while we lead; None while we do not.
    """
    leading = renewed_at is not None
    if renew_deadline_passed(renewed_at, now, durations):
        return Decision(
            Action.LOST, None, f"no renewal for the renew deadline ({durations.renew_deadline:g} s)"
        )
    stamp = micro_time(wall_now)
    if observed is None:
        if leading:
            return Decision(Action.LOST, None, "the Lease is gone")
        return Decision(Action.CREATE, _record(identity, durations, stamp, stamp, 0), "no Lease yet")
    record = observed.record
    if record.holder == identity:
        acquired = record.acquire_time or stamp
        why = "renewing our Lease" if leading else "the Lease still names us"
        return Decision(Action.RENEW, _record(identity, durations, acquired, stamp, record.transitions), why)
    if leading:
        who = f"held by {record.holder}" if record.holder else "released"
        return Decision(Action.LOST, None, f"the Lease is now {who}")
    take_over = _record(identity, durations, stamp, stamp, record.transitions + 1)
    if not record.holder:
        return Decision(Action.TAKE_OVER, take_over, "the Lease was released")
    duration = record.lease_duration_seconds
    expires = observed.changed_at + (duration if duration is not None else durations.lease)
    if now < expires:
        return Decision(
            Action.WAIT, None, f"held by {record.holder}, unchanged for {now - observed.changed_at:.1f} s"
        )
    return Decision(Action.TAKE_OVER, take_over, f"{record.holder} stopped renewing")


def release(observed: Observed | None, identity: str, wall_now: float) -> LeaseRecord | None:
    """The record a leader shutting down writes so the standby takes over at once (client-go's
    release: no holder, a one-second lease, transitions kept); None when the Lease is not ours."""
    if observed is None or observed.record.holder != identity:
        return None
    stamp = micro_time(wall_now)
    return LeaseRecord("", 1, stamp, stamp, observed.record.transitions)


def _record(
    identity: str, durations: Durations, acquired: str, renewed: str, transitions: int
) -> LeaseRecord:
    return LeaseRecord(identity, durations.lease_seconds, acquired, renewed, transitions)


def micro_time(epoch_seconds: float) -> str:
    """Unix seconds as Kubernetes MicroTime: UTC, exactly six fractional digits, ``Z``.

    The API server parses exactly this layout and refuses a time without the fraction, which is
    what ``datetime.isoformat`` writes when the microseconds happen to be 0 (the python client's
    own LeaseLock has that bug). Calendar arithmetic by hand keeps this module clock-free.
    """
    micros = round(epoch_seconds * 1_000_000)
    seconds, micro = divmod(micros, 1_000_000)
    days, second_of_day = divmod(seconds, 86_400)
    year, month, day = _civil_from_days(days)
    hour, rest = divmod(second_of_day, 3600)
    minute, second = divmod(rest, 60)
    return f"{year:04d}-{month:02d}-{day:02d}T{hour:02d}:{minute:02d}:{second:02d}.{micro:06d}Z"


def _civil_from_days(days: int) -> tuple[int, int, int]:
    """(year, month, day) of a count of days since 1970-01-01 (H. Hinnant's ``civil_from_days``)."""
    z = days + 719_468
    era = z // 146_097
    day_of_era = z - era * 146_097
    year_of_era = (day_of_era - day_of_era // 1460 + day_of_era // 36_524 - day_of_era // 146_096) // 365
    day_of_year = day_of_era - (365 * year_of_era + year_of_era // 4 - year_of_era // 100)
    shifted_month = (5 * day_of_year + 2) // 153  # March = 0
    day = day_of_year - (153 * shifted_month + 2) // 5 + 1
    month = shifted_month + 3 if shifted_month < 10 else shifted_month - 9
    return year_of_era + era * 400 + (1 if month <= 2 else 0), month, day
