"""The model repository on disk: ``<root>/<model>/config.pbtxt`` and ``<root>/<model>/<version>/model.pt[2]``.

Reading the repository never loads a model; it describes what is there (``ModelSource``) with enough
fingerprints for the watcher to tell an edit from an unrelated event. Names come from users and URLs,
so every name is checked against a strict pattern and every path is resolved and must stay inside the
repository root — a symlink or a ``..`` cannot make the server read a file elsewhere.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

from predictor.config import (
    EXPORT_FILE_NAME,
    MODEL_FILE_NAMES,
    ModelConfig,
    PredictorConfigError,
    parse_model_config,
)

CONFIG_FILE = "config.pbtxt"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}")
_VERSION = re.compile(r"[1-9][0-9]{0,17}")


class InvalidName(ValueError):
    """A model name or version that could never be a directory of the repository (HTTP 400)."""


def check_model_name(name: str) -> str:
    if not _NAME.fullmatch(name) or ".." in name:
        raise InvalidName(
            f"model name {name!r} is not allowed: use up to 128 letters, digits, '_', '-' or '.', "
            "starting with a letter or digit and without '..'"
        )
    return name


def parse_version(text: str) -> int:
    """A version as it appears in a URL or directory name."""
    if not _VERSION.fullmatch(text):
        raise InvalidName(f"version {text!r} is not a positive integer")
    return int(text)


@dataclass(frozen=True)
class VersionSource:
    version: int
    model_file: Path | None  # None when the version directory holds no usable model file
    stamp: tuple | None  # (size, mtime_ns, inode) of the model file and of the export file
    problem: str | None = None
    export_file: Path | None = None  # a torch.export twin of a TorchScript model, used for compiling


@dataclass(frozen=True)
class ModelSource:
    name: str
    directory: Path
    config: ModelConfig | None
    config_digest: str  # sha256 of config.pbtxt: a touched-but-unchanged file is not an edit
    versions: tuple[VersionSource, ...]  # those the version policy selects, ascending
    problem: str | None = None  # why the model cannot be served at all

    def fingerprint(self) -> tuple:
        return (
            self.config_digest,
            tuple((v.version, v.stamp, v.problem) for v in self.versions),
            self.problem,
        )


class Repository:
    def __init__(self, root: str | Path):
        path = Path(root)
        if not path.is_dir():
            raise FileNotFoundError(f"model repository {str(root)!r} is not a directory")
        self.root = path.resolve()

    def model_names(self) -> list[str]:
        """Directories of the root that hold a config.pbtxt and have a valid model name."""
        names = []
        for entry in sorted(self.root.iterdir()):
            try:
                check_model_name(entry.name)
            except InvalidName:
                continue
            if (entry / CONFIG_FILE).is_file():
                names.append(entry.name)
        return names

    def model_name_of(self, path: str | Path) -> str | None:
        """The model a changed path belongs to: the first path component below the root."""
        try:
            relative = Path(path).relative_to(self.root)
        except ValueError:
            return None
        return relative.parts[0] if relative.parts else None

    def read_model(self, name: str) -> ModelSource | None:
        """Describe model ``name``; None when the repository has no such model (no directory or config)."""
        check_model_name(name)
        directory = self.root / name
        config_path = directory / CONFIG_FILE
        if not config_path.is_file():
            return None
        problem = self._outside(directory) or self._outside(config_path)
        if problem:
            return ModelSource(name, directory, None, "", (), problem)
        text = config_path.read_bytes()
        digest = hashlib.sha256(text).hexdigest()
        try:
            config = parse_model_config(text.decode(errors="replace"), name, origin=f"{name}/{CONFIG_FILE}")
        except PredictorConfigError as exc:
            return ModelSource(name, directory, None, digest, (), str(exc))
        present = [int(p.name) for p in directory.iterdir() if _VERSION.fullmatch(p.name) and p.is_dir()]
        selected = config.version_policy.select(present)
        versions = tuple(self._version(directory, v, config) for v in selected)
        problem = None
        if not versions:
            problem = (
                f"no version directory to serve in {name}/ (found {sorted(present) or 'none'}; "
                f"version policy {config.version_policy.kind})"
            )
        return ModelSource(name, directory, config, digest, versions, problem)

    def _version(self, directory: Path, version: int, config: ModelConfig) -> VersionSource:
        folder = directory / str(version)
        candidates = [config.model_filename] if config.model_filename else list(MODEL_FILE_NAMES)
        for file_name in candidates:
            path = folder / file_name
            if path.is_file():
                problem = self._outside(path)
                if problem:
                    return VersionSource(version, None, None, problem)
                export_file = folder / EXPORT_FILE_NAME
                if file_name == EXPORT_FILE_NAME or not export_file.is_file() or self._outside(export_file):
                    return VersionSource(version, path.resolve(), (_stamp(path),))
                return VersionSource(
                    version,
                    path.resolve(),
                    (_stamp(path), _stamp(export_file)),
                    export_file=export_file.resolve(),
                )
        return VersionSource(
            version, None, None, f"{directory.name}/{version}/ holds no {' or '.join(candidates)}"
        )

    def _outside(self, path: Path) -> str | None:
        if path.resolve().is_relative_to(self.root):
            return None
        return f"{path.relative_to(self.root)} resolves outside the model repository; refusing to read it"


def _stamp(path: Path) -> tuple[int, int, int]:
    stat = path.stat()
    return stat.st_size, stat.st_mtime_ns, stat.st_ino
