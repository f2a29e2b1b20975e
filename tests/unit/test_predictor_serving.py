"""Which model calls may run on the event loop thread: only those the latest call says are short."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
import torch

from predictor.config import parse_model_config
from predictor.repository import VersionSource
from predictor.serving import BackendInfo, ModelVersion

CONFIG = """
max_batch_size: 8
input [{ name: "x" data_type: TYPE_FP32 dims: [2] }]
output [{ name: "y" data_type: TYPE_FP32 dims: [2] }]
"""


class SleepingRunner:
    """Doubles its input after sleeping ``seconds``: a model of known minimum duration."""

    backend = "eager"
    record = None

    def __init__(self, seconds: float):
        self.seconds = seconds

    def run(self, inputs: list[torch.Tensor]) -> torch.Tensor:
        if self.seconds:
            time.sleep(self.seconds)
        return inputs[0] * 2


@pytest.mark.parametrize(
    ("sleep_s", "calls_with_rows", "asked_rows", "fits"),
    [
        (0.0, None, 1, False),  # never ran: nothing says it is short
        (0.0, 1, 1, True),  # a trivial call
        (0.0, 1, 8, True),
        (0.020, 1, 1, False),  # 20 ms per call is too long to hold the loop
        (0.006, 3, 1, True),  # 2 ms per example when 3 rows took 6 ms ...
        (0.006, 3, 4, False),  # ... so 4 rows would take 8 ms
    ],
    ids=["never-ran", "trivial", "trivial-8-rows", "20ms-call", "2ms-per-row-asked-1", "2ms-per-row-asked-4"],
)
def test_only_calls_expected_to_be_short_may_run_on_the_event_loop(
    sleep_s, calls_with_rows, asked_rows, fits
):
    config = parse_model_config(CONFIG, "double")
    source = VersionSource(1, Path("model.pt"), None)
    model = ModelVersion(config, source, SleepingRunner(sleep_s), BackendInfo("eager", "test", 0.0))
    try:
        if calls_with_rows is not None:
            for _ in range(2):  # the latest call counts; a process's first torch call is slow anyway
                [out] = model.execute([np.ones((calls_with_rows, 2), np.float32)])
            np.testing.assert_array_equal(out, np.full((calls_with_rows, 2), 2, np.float32))
        assert model.fits_inline(asked_rows) is fits
    finally:
        model.stop(5)
