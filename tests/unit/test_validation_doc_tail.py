"""docs/simulation-validation.md is generated, but not its live measurements: a regeneration keeps them."""

import pytest
from tables import named

from simulation.validation import KEPT_MARKER, keep_measured, main

TAILS = [
    ("no previous file", "", ""),
    ("a previous file without measurements", "# Simulator validation\n| old | table |\n", ""),
    (
        "measurements after the marker",
        f"# Simulator validation\n| old |\n\n{KEPT_MARKER}\n## Live step-downs\n| 110 | 132 |\n",
        f"\n{KEPT_MARKER}\n## Live step-downs\n| 110 | 132 |\n",
    ),
]


@pytest.mark.parametrize(("label", "previous", "kept"), named(TAILS))
def test_only_what_follows_the_marker_is_kept(label, previous, kept):
    assert keep_measured(previous) == kept


def test_a_regeneration_replaces_the_tables_and_keeps_the_measured_section(tmp_path, monkeypatch):
    out = tmp_path / "validation.md"
    out.write_text(f"stale tables\n\n{KEPT_MARKER}\n## Live step-downs\nmeasured\n")
    monkeypatch.setattr("simulation.validation.render", lambda seeds, duration: "fresh tables\n")
    assert main(["--seeds", "2", "--duration", "10", "--out", str(out)]) == 0
    assert out.read_text() == f"fresh tables\n\n{KEPT_MARKER}\n## Live step-downs\nmeasured\n"
