"""A model's KServe status (predictor.model_status): active and target states, transition, copies."""

import pytest
from tables import named

from predictor.model_status import Failure, Phase, model_status, states


@pytest.mark.parametrize(
    ("label", "phase", "expected"),
    named([
        ("in the repository, not loaded", Phase(serving=False), ("Standby", "", "UpToDate")),
        ("waiting for room in the budget", Phase(False, loading=True, waiting_for_room=True),
         ("Pending", "", "InProgress")),
        ("first load running", Phase(False, loading=True), ("Loading", "", "InProgress")),
        ("serving", Phase(serving=True), ("Loaded", "", "UpToDate")),
        ("serving while a new version loads", Phase(True, loading=True), ("Loaded", "Loading", "InProgress")),
        ("a broken change: the old version serves", Phase(True, failed=True),
         ("Loaded", "FailedToLoad", "BlockedByFailedLoad")),
        ("never loaded: failed", Phase(False, failed=True), ("FailedToLoad", "", "BlockedByFailedLoad")),
    ]),
)  # fmt: skip
def test_states(label, phase, expected):
    assert states(phase) == expected


def test_the_document_has_kserves_field_names_and_the_last_failure():
    failure = Failure("version 1: RuntimeError: bad zip", "2025-01-02T03:04:05Z", "pod-a/pid 7")
    doc = model_status(Phase(True, failed=True), failure)
    assert doc == {
        "transitionStatus": "BlockedByFailedLoad",
        "states": {"activeModelState": "Loaded", "targetModelState": "FailedToLoad"},
        "copies": {"failedCopies": 1, "totalCopies": 1},
        "lastFailureInfo": {
            "reason": "ModelLoadFailed",
            "message": "version 1: RuntimeError: bad zip",
            "time": "2025-01-02T03:04:05Z",
            "location": "pod-a/pid 7",
        },
    }
    assert "lastFailureInfo" not in model_status(Phase(False), None)
