"""A model's status in KServe's vocabulary (``InferenceService.status.modelStatus``), pure.

KServe describes a model with ``states.activeModelState`` (what serves now) and
``states.targetModelState`` (what a change in progress is heading to), each one of Pending, Standby,
Loading, Loaded or FailedToLoad; ``transitionStatus`` (UpToDate, InProgress, BlockedByFailedLoad);
``lastFailureInfo {reason, message, time, location}``; and ``copies {failedCopies, totalCopies}``. Here:

* Standby — in the repository, not loaded (a multi-model pod loads it on its first request);
* Pending — a load was asked for but waits for room in the memory budget;
* Loading — its first load runs (a reload of a served model shows Loaded, target Loading);
* Loaded — a version serves;
* FailedToLoad — the latest load failed. With a version still serving (a broken change) the active state
  stays Loaded and the *target* is FailedToLoad, transition BlockedByFailedLoad: the old version serves.

The repository index carries this as ``modelStatus`` beside the older ``state`` (READY, LOADING,
UNAVAILABLE), which clients already read and which does not change.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

PENDING, STANDBY, LOADING, LOADED, FAILED_TO_LOAD = "Pending", "Standby", "Loading", "Loaded", "FailedToLoad"
MODEL_STATES = (PENDING, STANDBY, LOADING, LOADED, FAILED_TO_LOAD)
UP_TO_DATE, IN_PROGRESS, BLOCKED = "UpToDate", "InProgress", "BlockedByFailedLoad"
MODEL_LOAD_FAILED = "ModelLoadFailed"  # KServe's FailureReason for a load that failed in the runtime


@dataclass(frozen=True)
class Failure:
    """KServe's ``FailureInfo``: ``time`` is RFC 3339 (UTC), ``location`` the pod (host) and process."""

    message: str
    time: str
    location: str
    reason: str = MODEL_LOAD_FAILED

    def as_dict(self) -> dict[str, str]:
        return {"reason": self.reason, "message": self.message, "time": self.time, "location": self.location}


@dataclass(frozen=True)
class Phase:
    """What the manager knows of one model, in the terms the status is derived from."""

    serving: bool  # a version answers requests
    loading: bool = False  # a load or reload of it runs now
    waiting_for_room: bool = False  # a load waits for the memory budget
    failed: bool = False  # the latest load or reload failed (its failure not yet superseded)


def states(phase: Phase) -> tuple[str, str, str]:
    """(activeModelState, targetModelState, transitionStatus); target is "" when nothing is changing."""
    if phase.serving:
        if phase.loading:
            return LOADED, LOADING, IN_PROGRESS
        if phase.failed:
            return LOADED, FAILED_TO_LOAD, BLOCKED
        return LOADED, "", UP_TO_DATE
    if phase.waiting_for_room:
        return PENDING, "", IN_PROGRESS
    if phase.loading:
        return LOADING, "", IN_PROGRESS
    if phase.failed:
        return FAILED_TO_LOAD, "", BLOCKED
    return STANDBY, "", UP_TO_DATE


def model_status(phase: Phase, last_failure: Failure | None) -> dict[str, Any]:
    """KServe's ``ModelStatus`` document for one model on this pod (one copy at most)."""
    active, target, transition = states(phase)
    doc: dict[str, Any] = {
        "transitionStatus": transition,
        "states": {"activeModelState": active, "targetModelState": target},
        "copies": {
            "failedCopies": int(FAILED_TO_LOAD in (active, target)),
            "totalCopies": int(active == LOADED),
        },
    }
    if last_failure is not None:
        doc["lastFailureInfo"] = last_failure.as_dict()
    return doc
