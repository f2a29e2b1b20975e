"""HTTP fuzzing benchmark: >= 10,000 grammar-built, bent HTTP/1.1 cases against every server we run,
and the same cases against Python's stock ``http.server`` as the baseline, in one run.

    .venv/bin/python benchmarks/bench_fuzz.py [--cases 10000] [--seed 1] [--concurrency 32]
        [--servers queue-proxy,activator,entry,predictor,sample-app] [--atheris-runs 10001]

The fuzzer is tests/fuzz/http_fuzz.py (cases: tests/fuzz/fuzz_cases.py): each case goes over its own
loopback connection to a real server process, and must end in well-formed responses or a clean close
within 2 s of the client's EOF; smuggling shapes (CL+TE, two Content-Lengths) must get 400. After
every batch of 200: the process is alive, it logged no traceback or ERROR line, and a plain request
gets 200. Prints per server: cases, crashes, hangs (incl. well-formed requests left unanswered),
unhandled errors, malformed answers, smuggling guesses, the final liveness check, cases/s and its ratio
to http.server's cases/s (same cases, same client), the findings with the bytes to reproduce them,
and the machine. Then the coverage-guided fuzzer of the engine itself (tests/fuzz/atheris_engine.py:
atheris/libFuzzer on the instrumented httpengine/) runs ``--atheris-runs`` inputs.
Everything binds 127.0.0.1; every process started here is stopped here.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import uvloop

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT / "tests" / "fuzz"))
from _common import machine  # noqa: E402
from fuzz_targets import BASELINE, SERVERS, standard_targets  # noqa: E402
from http_fuzz import Report, fuzz  # noqa: E402


def run_one(name: str, workdir: Path, args: argparse.Namespace) -> Report:
    target = standard_targets(workdir)[name]
    started = time.monotonic()
    target.start()
    print(f"{name}: started in {time.monotonic() - started:.1f}s; fuzzing {args.cases} cases", flush=True)
    done = 0

    def progress(n: int) -> None:
        nonlocal done
        done += n
        if done % 2000 < n:
            print(f"  {name}: {done}/{args.cases}", flush=True)

    try:
        return uvloop.run(
            fuzz(
                target,
                cases=args.cases,
                seed=args.seed,
                concurrency=args.concurrency,
                progress=progress,
            )
        )
    finally:
        target.stop()


def run_atheris(runs: int, seed: int, workdir: Path) -> dict:
    """The coverage-guided engine fuzzer (tests/fuzz/atheris_engine.py) as a child: its last stats
    line, its findings by kind, libFuzzer's final coverage and the exit code (non-zero: it crashed)."""
    findings = workdir / "atheris-findings.jsonl"
    command = [
        sys.executable, str(ROOT / "tests" / "fuzz" / "atheris_engine.py"), str(findings),
        str(workdir / "atheris-corpus"), f"-atheris_runs={runs}", f"-seed={seed}",
        f"-dict={ROOT / 'tests' / 'fuzz' / 'http.dict'}", "-max_len=4096", "-len_control=0",
    ]  # fmt: skip
    print(f"engine (atheris): {runs - 1} coverage-guided inputs", flush=True)
    started = time.monotonic()
    done = subprocess.run(command, capture_output=True, text=True, timeout=max(600, runs))
    seconds = time.monotonic() - started
    lines = [json.loads(line) for line in findings.read_text().splitlines()] if findings.exists() else []
    stats = next((line["stats"] for line in reversed(lines) if "stats" in line), {})
    kinds = Counter(line["finding"] for line in lines if "finding" in line)
    coverage = re.findall(r"cov: (\d+) ft: (\d+)", done.stderr)
    examples = {}
    for line in lines:
        examples.setdefault(line.get("finding"), line)
    return {
        "inputs": stats.get("inputs", 0), "seconds": seconds, "kinds": kinds, "exit": done.returncode,
        "coverage": coverage[-1] if coverage else ("?", "?"), "examples": examples,
        "tail": done.stderr[-1500:],
    }  # fmt: skip


def summarize(r: Report) -> Report:
    """Print one server's verdicts and up to 8 findings of different kinds (with their bytes) now, so a
    later failure cannot lose them."""
    verdicts = ", ".join(f"{k} {v}" for k, v in sorted(r.verdicts.items()))
    print(f"\n{r.target}: {r.cases} cases in {r.seconds:.1f}s ({r.rate:.0f}/s); verdicts: {verdicts}")
    seen: set[tuple[str, str]] = set()
    for finding in r.findings:
        key = (finding.category, finding.case.kind if finding.case else "")
        if key not in seen and len(seen) < 8:
            seen.add(key)
            print("  " + finding.describe()[:1500])
    if len(r.findings) > len(seen):
        print(f"  ... {len(r.findings)} findings in all")
    print(flush=True)
    return r


def table(reports: list[Report], baseline: Report | None) -> str:
    rows = [
        "| server | cases | crashes | hangs | unhandled | malformed | smuggling | liveness "
        "(final, checks) | cases/s | vs http.server |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in [*reports, *([baseline] if baseline else [])]:
        ratio = f"{r.rate / baseline.rate:.2f}" if baseline and baseline.rate else "-"
        rows.append(
            f"| {r.target} | {r.cases} | {r.crashes} | {r.hangs} | {r.unhandled} | "
            f"{r.count('malformed')} | {r.count('smuggled')} | {'200' if r.liveness_ok else 'FAILED'}, "
            f"{r.liveness_checks} | {r.rate:.0f} | {ratio} |"
        )
    return "\n".join(rows)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=10_000, help="cases per server (default 10000)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--concurrency", type=int, default=32, help="connections in flight (default 32)")
    parser.add_argument("--servers", default=",".join(SERVERS), help="comma-separated subset")
    parser.add_argument(
        "--atheris-runs", type=int, default=10_001, help="coverage-guided engine inputs + 1 (0: skip)"
    )
    args = parser.parse_args()
    names = [n for n in args.servers.split(",") if n]
    unknown = sorted(set(names) - set(SERVERS))
    if unknown:
        parser.error(f"--servers: unknown {', '.join(unknown)}; choose from {', '.join(SERVERS)}")
    print(f"machine: {machine()}", flush=True)
    reports: list[Report] = []
    with tempfile.TemporaryDirectory(prefix="bench-fuzz-") as tmp:
        for name in names:
            reports.append(summarize(run_one(name, Path(tmp), args)))
        baseline = summarize(run_one(BASELINE, Path(tmp), args))  # the queue-proxy's (generic) cases
        guided = run_atheris(args.atheris_runs, args.seed, Path(tmp)) if args.atheris_runs else None
    print("\n" + table(reports, baseline))  # markdown, for docs/benchmarks.md
    clean = all(r.crashes == 0 and r.liveness_ok for r in reports)
    if guided is not None:
        kinds = ", ".join(f"{k} {v}" for k, v in sorted(guided["kinds"].items())) or "none"
        rate = guided["inputs"] / guided["seconds"] if guided["seconds"] else 0.0
        print(
            f"\nengine, coverage-guided (atheris): {guided['inputs']} inputs in {guided['seconds']:.0f}s "
            f"({rate:.0f}/s), exit {guided['exit']}, final coverage {guided['coverage'][0]} edges / "
            f"{guided['coverage'][1]} features; findings: {kinds}"
        )
        for example in guided["examples"].values():
            if "finding" in example:
                print(f"  {example['finding']}: {example['detail'][:300]}\n    {example['input'][:600]}")
        if guided["exit"] != 0:
            print("  libFuzzer stderr tail:\n" + guided["tail"])
        clean = clean and guided["exit"] == 0
    print(f"\ngoal (issue 11): 0 crashes and still serving after >= 10,000 cases per server: "
          f"{'met' if clean and args.cases >= 10_000 else 'NOT met'}")  # fmt: skip
    print(f"machine: {machine()}")
    return 0 if clean else 1


if __name__ == "__main__":
    sys.exit(main())
