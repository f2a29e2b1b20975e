"""No ``asyncio.wait_for`` in the project's code: ``asyncio.timeout`` instead.

On Python 3.11, ``wait_for`` cancelled in the very step its inner await finished returns the result
instead of raising ``CancelledError``: the cancellation is lost. A loop stopped by cancelling it then
runs on, and whoever awaits it waits forever — the autoscaler's decide loop did exactly that when a
pod change poked it as the stack stopped (``test_close_ends_the_loops_even_when_a_poke_arrives_in_the
_same_step``). ``asyncio.timeout`` counts cancellations (``Task.uncancel``) and never swallows one.
"""

import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_code_uses_asyncio_timeout_never_wait_for():
    files = subprocess.run(
        ["git", "ls-files", "*.py"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    found = [
        f"{name}:{number}: {line.strip()}"
        for name in files
        if not name.startswith("tests/")
        for number, line in enumerate((ROOT / name).read_text().splitlines(), 1)
        if "wait_for(" in line and "asyncio.wait_for" in line
    ]
    assert not found, "use `async with asyncio.timeout(t): await x` instead:\n" + "\n".join(found)
