"""Turn a model version on disk into a warmed-up ``ModelVersion`` on the backend its config asks for.

* ``eager`` — the model file as torch loads it.
* ``inductor`` / ``zentorch`` — an AOTInductor package from the compile cache; on a miss it is built by a
  ``predictor.compiler`` child process first (the version becomes ready when that is done).
* ``auto`` — the best backend this machine has (see ``backends.resolve_backend``). On a cache hit it is
  ready at once on the compiled package; on a miss it is ready at once on eager and the manager builds
  the package in the background and upgrades the version in place, so a cold cache never delays
  readiness. If that compile fails the version stays eager and says why.

All methods block (they load files and wait for children): callers run them on worker threads.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from predictor.backends import EAGER, BackendChoice, Platform, resolve_backend
from predictor.compile_cache import CompileCache, CompileJob, cache_key
from predictor.config import ModelConfig
from predictor.repository import VersionSource
from predictor.runners import (
    PackageRunner,
    Runner,
    check_outputs,
    example_inputs,
    load_eager,
    resident_bytes,
    run_model,
)
from predictor.serving import BackendInfo, ModelVersion

log = logging.getLogger("predictor")
COMPILE_TIMEOUT_S = 900.0


class CompileFailed(RuntimeError):
    pass


@dataclass(frozen=True)
class PendingCompile:
    """A compile the manager should run in the background for an ``auto`` version now serving eager."""

    config: ModelConfig
    source: VersionSource
    choice: BackendChoice


class VersionLoader:
    def __init__(self, cache: CompileCache, platform: Platform):
        self.cache = cache
        self.platform = platform
        self._children: set[subprocess.Popen] = set()
        self._children_lock = threading.Lock()
        self._closed = False

    def load(self, config: ModelConfig, source: VersionSource) -> tuple[ModelVersion, PendingCompile | None]:
        assert source.model_file is not None
        started = time.perf_counter()
        choice = resolve_backend(config.backend, self.platform)
        pending = None
        if choice.backend == EAGER:
            runner, cache_state = load_eager(source.model_file), "none"
        else:
            job = self._job(config, source, choice.backend)
            key = self._key(job)
            hit = self.cache.lookup(key)
            if hit is not None:
                runner = PackageRunner(hit[0], choice.backend, config.instance_count, hit[1])
                cache_state = "hit"
            elif config.backend == "auto":
                runner, cache_state = load_eager(source.model_file), "none"
                pending = PendingCompile(config, source, choice)
            else:
                runner, cache_state = self._compile(job, key, config.instance_count), "miss"
        warm_up(runner, config)
        info = BackendInfo(
            backend=runner.backend,
            reason=choice.reason
            if pending is None
            else f"{choice.reason}; serving eager while {choice.backend} compiles",
            load_seconds=time.perf_counter() - started,
            cache=cache_state,
            compiling=pending is not None,
            record=runner.record,
            resident_bytes=resident_bytes(runner, source.model_file),
        )
        log.info(
            "model %s version %s: backend %s (%s), ready in %.2f s",
            config.name,
            source.version,
            info.backend,
            info.reason,
            info.load_seconds,
        )
        return ModelVersion(config, source, runner, info), pending

    def compile_upgrade(self, pending: PendingCompile) -> tuple[Runner, BackendInfo]:
        """Background half of ``auto``: build (or wait for) the package and load it."""
        assert pending.source.model_file is not None
        started = time.perf_counter()
        job = self._job(pending.config, pending.source, pending.choice.backend)
        runner = self._compile(job, self._key(job), pending.config.instance_count)
        warm_up(runner, pending.config)
        info = BackendInfo(
            runner.backend,
            pending.choice.reason,
            time.perf_counter() - started,
            "miss",
            record=runner.record,
            resident_bytes=resident_bytes(runner, pending.source.model_file),
        )
        return runner, info

    def close(self) -> None:
        """Stop compiler children this loader started (shutdown)."""
        with self._children_lock:
            self._closed = True
            children = list(self._children)
        for child in children:
            child.terminate()
        for child in children:
            try:
                child.wait(timeout=5)
            except subprocess.TimeoutExpired:
                child.kill()

    def _job(self, config: ModelConfig, source: VersionSource, backend: str) -> CompileJob:
        export_file = str(source.export_file) if source.export_file else None
        return CompileJob(
            str(source.model_file), export_file, backend, config.max_batch_size, config.inputs, config.outputs
        )

    def _key(self, job: CompileJob) -> str:
        environment = {
            "torch": torch.__version__,
            "zentorch": self.platform.zentorch_version if job.backend == "zentorch" else None,
            "avx512": self.platform.avx512,
            "cxx": self.platform.cxx_compiler,
        }
        return cache_key(job, environment)

    def _compile(self, job: CompileJob, key: str, instances: int) -> PackageRunner:
        with self.cache.exclusive(key):
            hit = self.cache.lookup(key)  # another process may have built it while we waited
            if hit is None:
                self._run_compiler(job, key)
                hit = self.cache.lookup(key)
                if hit is None:
                    raise CompileFailed(
                        f"the compiler reported success but {self.cache.package_path(key)} is missing"
                    )
        return PackageRunner(hit[0], job.backend, instances, hit[1])

    def _run_compiler(self, job: CompileJob, key: str) -> None:
        log.info("compiling %s for %s (cache key %s); this takes a while", job.model_file, job.backend, key)
        started = time.perf_counter()
        env = dict(os.environ, TORCHINDUCTOR_CACHE_DIR=str(self.cache.inductor_cache()))
        package_root = str(Path(__file__).resolve().parent.parent)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [package_root, env.get("PYTHONPATH")]))
        command = [
            sys.executable,
            "-m",
            "predictor.compiler",
            job.to_json(),
            str(self.cache.package_path(key)),
            str(self.cache.info_path(key)),
        ]
        with open(self.cache.log_path(key), "w") as log_file:
            with self._children_lock:
                if self._closed:
                    raise CompileFailed("the server is shutting down")
                child = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=log_file, env=env, text=True)
                self._children.add(child)
            try:
                stdout, _ = child.communicate(timeout=COMPILE_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                child.kill()
                child.communicate()
                raise CompileFailed(f"compiling took longer than {COMPILE_TIMEOUT_S:.0f} s") from None
            finally:
                with self._children_lock:
                    self._children.discard(child)
        report = _last_json_line(stdout)
        if not report.get("ok"):
            error = report.get("error") or f"compiler exited with code {child.returncode}"
            raise CompileFailed(f"{job.backend} compile failed: {error} (log: {self.cache.log_path(key)})")
        log.info("compiled %s for %s in %.1f s", job.model_file, job.backend, time.perf_counter() - started)


def _last_json_line(stdout: str) -> dict:
    for line in reversed(stdout.strip().splitlines()):
        try:
            return json.loads(line)
        except ValueError:
            continue
    return {}


def warm_up(runner: Runner, config: ModelConfig) -> None:
    """One call with config-shaped inputs: the first real request is not slow, and a config that does not
    describe the model fails the load with the reason instead of failing every request."""
    batch = 1 if config.batched else None
    if any(d == -1 for spec in config.inputs for d in (spec.reshape or spec.dims)):
        return  # no safe example shape to try
    outputs = run_model(runner, config, example_inputs(config.inputs, batch))
    check_outputs(config, outputs, 1)
