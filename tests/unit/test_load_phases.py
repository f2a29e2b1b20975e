"""`kpa load` phase syntax and the open-loop send schedule it implies."""

import itertools

import pytest
from tables import named

from kpa.load import (
    LoadResult,
    Phase,
    PhaseError,
    Record,
    load_plan_file,
    parse_phase,
    parse_phases,
    percentile,
    send_offsets,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    named(
        [
            ("idle:10", [Phase("idle", 10.0)]),
            ("rate:50:20", [Phase("rate", 20.0, rate=50.0)]),
            ("rate:0.5:4", [Phase("rate", 4.0, rate=0.5)]),
            ("ramp:0:100:10", [Phase("ramp", 10.0, rate=0.0, rate_to=100.0)]),
            ("burst:200", [Phase("burst", 0.0, requests=200)]),
            ("burst:200:5", [Phase("burst", 5.0, requests=200)]),
            ("conc:8:30", [Phase("conc", 30.0, clients=8)]),
            (" idle:1 ", [Phase("idle", 1.0)]),
        ]
    ),
)
def test_each_phase_form_parses_to_its_phase(text, expected):
    assert parse_phase(text) == expected


def test_steps_expand_to_evenly_spaced_constant_rate_phases():
    assert parse_phase("steps:10:40:4:5") == [Phase("rate", 5.0, rate=r) for r in (10.0, 20.0, 30.0, 40.0)]
    assert parse_phase("steps:10:40:1:5") == [Phase("rate", 5.0, rate=10.0)]


@pytest.mark.parametrize(
    ("text", "message"),
    named(
        [
            ("wait:10", "unknown kind 'wait'"),
            ("rate:50", "rate takes 2 value(s)"),
            ("idle:1:2", "idle takes 1 value(s)"),
            ("burst:1:2:3", "burst takes 1 or 2 value(s)"),
            ("rate:fast:10", "RPS='fast' is not a number"),
            ("rate:50:0", "SECONDS='0' must be > 0"),
            ("rate:-5:10", "RPS='-5' must be > 0"),
            ("burst:2.5", "REQUESTS='2.5' is not a whole number"),
            ("conc:0:10", "CLIENTS='0' must be > 0"),
            ("ramp:0:0:10", "sends nothing"),
            ("idle:inf", "must be > 0"),
        ]
    ),
)
def test_bad_phases_are_rejected_naming_the_phase_and_value(text, message):
    with pytest.raises(PhaseError) as err:
        parse_phase(text)
    assert message in str(err.value)
    assert repr(text) in str(err.value)


def test_no_phases_at_all_is_an_error_that_says_how_to_add_one():
    with pytest.raises(PhaseError, match="--phase"):
        parse_phases([])


def test_constant_rate_sends_rate_times_duration_evenly_spaced():
    offsets = send_offsets(Phase("rate", 2.0, rate=50.0))
    assert len(offsets) == 100
    assert offsets[:3] == pytest.approx([0.0, 0.02, 0.04])
    assert offsets[-1] < 2.0


def test_ramp_sends_the_area_under_its_rate_and_speeds_up():
    offsets = send_offsets(Phase("ramp", 10.0, rate=0.0, rate_to=100.0))
    assert len(offsets) == 500
    gaps = [b - a for a, b in itertools.pairwise(offsets)]
    assert all(later <= earlier + 1e-12 for earlier, later in itertools.pairwise(gaps))
    assert offsets[-1] < 10.0
    # half the requests go out in the last ~29% of the time: t where 5 t^2 = 250
    assert offsets[250] == pytest.approx(7.0710678, rel=1e-6)


def test_burst_sends_everything_at_the_phase_start_and_idle_sends_nothing():
    assert send_offsets(Phase("burst", 5.0, requests=3)) == [0.0, 0.0, 0.0]
    assert send_offsets(Phase("idle", 5.0)) == []
    assert Phase("conc", 5.0, clients=2).planned_requests is None


def test_plan_file_reads_phases_and_request_options(tmp_path):
    plan = tmp_path / "plan.yaml"
    plan.write_text("phases: ['idle:1', 'rate:10:2']\nmethod: POST\nbody: '{}'\n")
    phases, options = load_plan_file(plan)
    assert phases == [Phase("idle", 1.0), Phase("rate", 2.0, rate=10.0)]
    assert options == {"method": "POST", "body": "{}"}


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("phases: rate:1:1\n", "'phases:' list"),
        ("phases: ['rate:1:1']\nrps: 5\n", "unknown key(s) ['rps']"),
        ("phases: [5]\n", "phases[0]=5: must be a string"),
        ("phases: ['bogus:1']\n", "unknown kind 'bogus'"),
        ("phases: [\n", "cannot read load plan"),
    ],
    ids=["not-a-list", "unknown-key", "phase-not-a-string", "unknown-kind", "not-yaml"],
)
def test_bad_plan_files_are_rejected_with_the_file_and_key(tmp_path, content, message):
    plan = tmp_path / "plan.yaml"
    plan.write_text(content)
    with pytest.raises(PhaseError) as err:
        load_plan_file(plan)
    assert message in str(err.value)


def test_percentile_is_nearest_rank():
    values = [float(i) for i in range(1, 101)]
    assert percentile(values, 50) == 50.0
    assert percentile(values, 99) == 99.0
    assert percentile(values, 100) == 100.0
    assert percentile([7.0], 50) == 7.0


def test_summary_counts_non_2xx_and_errors_as_failed():
    result = LoadResult(
        [Phase("rate", 1.0, rate=4.0)],
        [
            Record(0.0, 0.010, 200, "", 0),
            Record(0.25, 0.020, 200, "", 0),
            Record(0.5, 0.030, 503, "", 0),
            Record(0.75, 1.0, 0, "timeout", 0),
        ],
        duration=1.0,
    )
    summary = result.summary()
    assert (summary["requests"], summary["ok"], summary["failed"]) == (4, 2, 2)
    assert summary["outcomes"] == {"200": 2, "503": 1, "timeout": 1}
    assert summary["latency_ms"]["p50"] == 10.0  # latency percentiles cover successful requests only
