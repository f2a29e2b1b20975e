"""The on-disk cache of compiled model packages, shared by every predictor process on the machine.

Compiling a small CNN takes tens of seconds here, and scale-from-zero users wait for every cold start,
so each AOTInductor package is kept under a key that changes whenever the result could: the model
file's bytes, the backend, the declared input signature and batch limit, torch's and zentorch's
versions, the CPU's instruction set and the compile recipe itself. A per-key lock file makes
concurrent cold starts of the same model compile once; the others wait and load the result.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from predictor.config import TensorSpec

RECIPE = 1  # bump when predictor.compiler changes what it produces


@dataclass(frozen=True)
class CompileJob:
    model_file: str  # the model as served eagerly: the reference the package is checked against
    export_file: str | None  # a torch.export twin to compile from; None: convert model_file
    backend: str  # inductor | zentorch
    max_batch_size: int
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> CompileJob:
        doc = json.loads(text)

        def specs(items: list[dict]) -> tuple[TensorSpec, ...]:
            return tuple(
                TensorSpec(
                    i["name"],
                    i["datatype"],
                    tuple(i["dims"]),
                    None if i["reshape"] is None else tuple(i["reshape"]),
                )
                for i in items
            )

        return cls(
            doc["model_file"],
            doc["export_file"],
            doc["backend"],
            doc["max_batch_size"],
            specs(doc["inputs"]),
            specs(doc["outputs"]),
        )


def model_digest(path: str | Path) -> str:
    """A digest of what a model file holds, stable across saves of the same model.

    Both torch formats are zip archives, and ``torch.jit.save`` writes a random ``serialization_id``
    into each one and names the top folder after the file: hashing raw bytes would make every re-save
    of an unchanged model (every fresh demo repository) a cache miss. So entries are hashed by name,
    below the top folder, and content, without the serialization id. Other files are hashed whole.
    """
    digest = hashlib.sha256()
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            for name in sorted(archive.namelist(), key=_below_top_folder):
                if name.endswith("/.data/serialization_id"):
                    continue
                digest.update(_below_top_folder(name).encode() + b"\0")
                with archive.open(name) as member:
                    while chunk := member.read(1 << 20):
                        digest.update(chunk)
        return digest.hexdigest()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _below_top_folder(name: str) -> str:
    return name.split("/", 1)[1] if "/" in name else name


def cache_key(job: CompileJob, environment: dict[str, Any]) -> str:
    """Everything the compiled package depends on, except the path the model happens to live at."""
    material = {
        "recipe": RECIPE,
        "model": model_digest(job.model_file),
        "export": model_digest(job.export_file) if job.export_file else None,
        "backend": job.backend,
        "max_batch_size": job.max_batch_size,
        "inputs": [asdict(spec) for spec in job.inputs],
        "environment": environment,
    }
    return hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()[:32]


class CompileCache:
    def __init__(self, directory: str | Path):
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)

    def package_path(self, key: str) -> Path:
        return self.directory / f"{key}.pt2"

    def info_path(self, key: str) -> Path:
        return self.directory / f"{key}.json"

    def log_path(self, key: str) -> Path:
        return self.directory / f"{key}.log"

    def lookup(self, key: str) -> tuple[Path, dict[str, Any]] | None:
        """The package and its compile record, when both were written completely."""
        package, info = self.package_path(key), self.info_path(key)
        if not package.is_file() or not info.is_file():
            return None
        try:
            return package, json.loads(info.read_text())
        except (OSError, ValueError):
            return None

    @contextmanager
    def exclusive(self, key: str) -> Iterator[None]:
        """Hold the compile lock of ``key``; blocks while another process compiles the same package."""
        with open(self.directory / f"{key}.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def inductor_cache(self) -> Path:
        """Where the compiler child keeps torch inductor's own kernel cache (reused across recompiles)."""
        return self.directory / "inductor"


def default_cache_dir() -> Path:
    explicit = os.environ.get("KPA_PREDICTOR_CACHE")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "kpa-emulator" / "predictor"
