"""The conservation count from an off-the-shelf generator: `hey` (Debian package; ``make tools``)."""

from __future__ import annotations

import asyncio

from conservation_tally import Lost, Tally


def hey_command(url: str, host: str, requests: int, connections: int, timeout: float) -> list[str]:
    return ["hey", "-n", str(requests), "-c", str(connections), "-t", str(max(1, round(timeout))),
            "-host", host, "-disable-compression", url]  # fmt: skip


def parse_hey(output: str, requests: int) -> Tally:
    """Counts from hey's report: each line of "Status code distribution" is answers with that code,
    each of "Error distribution" requests with no answer (timeouts, resets). hey prints no per-request
    send times, so a lost request here is known only by its error text.

    Note: Go's HTTP client silently resends a GET whose reused keep-alive connection was closed before
    any answer byte, so hey can hide a loss that the raw clients see."""
    tally = Tally(sent=requests)
    section = ""
    for line in output.splitlines():
        stripped = line.strip()
        if stripped.endswith("distribution:"):
            section = stripped
            continue
        if not stripped.startswith("[") or "]" not in stripped:
            continue
        key, _, rest = stripped[1:].partition("]")
        if section.startswith("Status code"):  # "[200]	990 responses"
            tally.codes[int(key)] += int(rest.split()[0])
        elif section.startswith("Error"):  # "[3]	Get "http://...": context deadline exceeded"
            tally.lost += [Lost(0, -1, float("nan"), f"hey: {rest.strip()}")] * int(key)
    return tally


def hey_percentiles(output: str) -> tuple[float, float]:
    """p50 and p99 in seconds from hey's latency distribution (NaN when it printed none)."""
    found: dict[str, float] = {}
    for line in output.splitlines():
        parts = line.split()
        if len(parts) >= 4 and parts[0].endswith("%") and parts[1] == "in":
            found[parts[0]] = float(parts[2])
    return found.get("50%", float("nan")), found.get("99%", float("nan"))


async def run_hey(url: str, host: str, requests: int, connections: int, timeout: float) -> tuple[Tally, str]:
    """Run hey to completion; the tally of its report and the report itself."""
    proc = await asyncio.create_subprocess_exec(
        *hey_command(url, host, requests, connections, timeout),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await proc.communicate()
    text = out.decode(errors="replace")
    if proc.returncode != 0:
        raise RuntimeError(f"hey exited {proc.returncode}: {text[-500:]}")
    return parse_hey(text, requests), text
