"""Section 1 of bench_predictor.py: eager (TorchScript) vs inductor vs zentorch AOTInductor packages
for the demo CNN and TransformerEncoder at batch 1 and 32, in process, median latency, 1 intra-op
thread, interleaved so drift hits every backend alike.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import replace
from pathlib import Path

from bench_predictor_servers import console


def median_ms(samples: list[float]) -> float:
    return statistics.median(samples) * 1e3


def bench_backends(repository_dir: Path, cache_dir: Path, seconds: float) -> dict:
    import torch

    from predictor.backends import BackendUnavailable, probe_platform
    from predictor.compile_cache import CompileCache
    from predictor.demo_models import DEMO_MODELS
    from predictor.loader import CompileFailed, VersionLoader
    from predictor.repository import Repository

    torch.set_num_threads(1)
    loader = VersionLoader(CompileCache(cache_dir), probe_platform())
    repository = Repository(repository_dir)
    results: dict = {}
    for name in ("cnn", "transformer"):
        source = repository.read_model(name)
        runners = {}
        for backend in ("eager", "inductor", "zentorch"):
            started = time.perf_counter()
            console.print(
                f"[dim]loading {name} on {backend} (a cold compile takes tens of seconds) ...[/dim]"
            )
            try:
                version, _ = loader.load(replace(source.config, backend=backend), source.versions[0])
            except (BackendUnavailable, CompileFailed) as exc:
                console.print(f"[yellow]{name} {backend}: {exc}[/yellow]")
                continue
            runners[backend] = version.runner
            results.setdefault(name, {}).setdefault("load_s", {})[backend] = round(
                time.perf_counter() - started, 2
            )
        for batch in (1, 32):
            tensors = [torch.from_numpy(DEMO_MODELS[name].inputs(batch, seed=1))]
            samples: dict[str, list[float]] = {backend: [] for backend in runners}
            for runner in runners.values():
                runner.run(tensors)  # warm
            deadline = time.perf_counter() + seconds * len(runners)
            while time.perf_counter() < deadline:  # interleaved, so drift hits every backend alike
                for backend, runner in runners.items():
                    began = time.perf_counter()
                    runner.run(tensors)
                    samples[backend].append(time.perf_counter() - began)
            results[name][f"batch{batch}_ms"] = {b: round(median_ms(s), 3) for b, s in samples.items()}
    return results
