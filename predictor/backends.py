"""Which execution backend a model gets: eager torch, inductor or zentorch.

``resolve_backend`` is a pure decision over a ``Platform`` (what this machine and install can do), so
the rule is testable without the hardware: ``auto`` takes zentorch where its library is installed and
the CPU has AVX-512 (zentorch's only requirement), else inductor where a C++ compiler exists (inductor
generates and compiles C++), else eager. An explicitly requested backend that cannot run is an error,
not a silent downgrade.

Probing never imports zentorch's Python package (≈4 s, it pulls in torch._inductor): its native library
is located on disk and, for serving a compiled package, loaded with ctypes alone.
"""

from __future__ import annotations

import ctypes
import functools
import importlib.metadata
import importlib.util
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

EAGER, INDUCTOR, ZENTORCH = "eager", "inductor", "zentorch"


class BackendUnavailable(RuntimeError):
    """The config asks for a backend this machine cannot run."""


@dataclass(frozen=True)
class Platform:
    avx512: bool
    zentorch_library: Path | None
    zentorch_version: str | None
    cxx_compiler: str | None


@dataclass(frozen=True)
class BackendChoice:
    backend: str
    reason: str


def resolve_backend(requested: str, platform: Platform) -> BackendChoice:
    zentorch_problem = _zentorch_problem(platform)
    compiler_problem = None if platform.cxx_compiler else "no C++ compiler (g++/c++) on PATH for inductor"
    if requested == EAGER:
        return BackendChoice(EAGER, "requested in config.pbtxt")
    if requested == ZENTORCH:
        if zentorch_problem:
            raise BackendUnavailable(f"backend zentorch requested but {zentorch_problem}")
        return BackendChoice(ZENTORCH, "requested in config.pbtxt")
    if requested == INDUCTOR:
        if compiler_problem:
            raise BackendUnavailable(f"backend inductor requested but {compiler_problem}")
        return BackendChoice(INDUCTOR, "requested in config.pbtxt")
    if not zentorch_problem:
        return BackendChoice(ZENTORCH, "auto: zentorch is installed and the CPU has AVX-512")
    if not compiler_problem:
        return BackendChoice(INDUCTOR, f"auto: {zentorch_problem}")
    return BackendChoice(EAGER, f"auto: {zentorch_problem}; {compiler_problem}")


def _zentorch_problem(platform: Platform) -> str | None:
    if platform.zentorch_library is None:
        return "zentorch is not installed"
    if not platform.avx512:
        return "the CPU lacks AVX-512, which zentorch needs"
    if not platform.cxx_compiler:
        return "no C++ compiler (g++/c++) on PATH to build the zentorch package"
    return None


@functools.cache
def probe_platform() -> Platform:
    library, version = _find_zentorch()
    return Platform(
        avx512=_cpu_has_avx512(),
        zentorch_library=library,
        zentorch_version=version,
        cxx_compiler=os.environ.get("CXX") or shutil.which("g++") or shutil.which("c++"),
    )


def _cpu_has_avx512() -> bool:
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("flags"):
                    return "avx512f" in line.split()
    except OSError:
        pass
    return False


def _find_zentorch() -> tuple[Path | None, str | None]:
    spec = importlib.util.find_spec("zentorch")
    if spec is None or spec.origin is None:
        return None, None
    library = Path(spec.origin).parent / "libzentorch.so"
    if not library.is_file():
        return None, None
    return library, importlib.metadata.version("zentorch")


@functools.cache
def load_zentorch_kernels() -> None:
    """Make zentorch's kernels visible to compiled packages, without importing its Python package."""
    library = probe_platform().zentorch_library
    if library is None:
        raise BackendUnavailable("zentorch is not installed; cannot run a zentorch package")
    ctypes.CDLL(str(library), mode=os.RTLD_GLOBAL | os.RTLD_NOW)
