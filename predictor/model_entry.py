"""One model of the repository as the manager tracks it, and a request's hold on a served version.

The errors the manager raises live here too, so the modules serving requests (REST, gRPC) and the
manager's on-demand loading share them without importing each other.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field

from predictor.config import ModelConfig
from predictor.model_cache import Resident
from predictor.model_status import Failure, Phase
from predictor.serving import ModelVersion

READY, LOADING, UNAVAILABLE = "READY", "LOADING", "UNAVAILABLE"
STANDBY_REASON = "standby: not loaded; its first request (or POST /v2/repository/models/{m}/load) loads it"
SIZE_PARAMETER = "size_bytes"  # config.pbtxt parameter declaring a resident size (wins over measuring)


class ModelNotFound(LookupError):
    """No such model or version (HTTP 404)."""


class ModelNotReady(RuntimeError):
    """The model exists but cannot answer now (HTTP 503)."""


class NoRoom(ModelNotReady):
    """A load waited its bound for busy models to free room in the budget (HTTP 503; the next request
    tries again, unlike a model that failed to load, which waits for its files to change)."""


@dataclass
class ModelEntry:
    name: str
    state: str = LOADING
    reason: str = ""
    config: ModelConfig | None = None
    versions: dict[int, ModelVersion] = field(default_factory=dict)
    failures: dict[int, str] = field(default_factory=dict)  # version -> why it did not load
    fingerprint: tuple | None = None
    # The budget's bookkeeping (and the KServe status): all of it changes on the event loop thread.
    size_bytes: int = 0  # resident size: measured (or declared) once loaded, the estimate while loading
    reserved: bool = False  # room for it is taken: a load runs
    last_used: float = 0.0  # time.monotonic() of the latest request
    in_flight: int = 0  # requests holding it or waiting for its load: never unloaded meanwhile
    busy: int = 0  # loads and reloads of it running now
    loading: asyncio.Task | None = None  # the on-demand load that first requests share
    waiting_for_room: bool = False
    failed: bool = False  # the latest load or reload failed
    last_failure: Failure | None = None
    measured: tuple[tuple | None, int] | None = None  # (fingerprint, bytes) of its latest load

    def phase(self) -> Phase:
        return Phase(bool(self.versions), self.busy > 0, self.waiting_for_room, self.failed)

    def resident(self) -> Resident:
        return Resident(self.size_bytes, self.last_used, self.in_flight + self.busy)


class Held:
    """A served version held for one request: its model is not unloaded until ``release()``.

    ``load_wait_s`` is how long the request waited for the model to load (None: it was loaded, a hit).
    """

    __slots__ = ("_release", "load_wait_s", "version")

    def __init__(self, version: ModelVersion, load_wait_s: float | None, release: Callable[[], None]):
        self.version, self.load_wait_s, self._release = version, load_wait_s, release

    def release(self) -> None:
        release, self._release = self._release, _nothing
        release()


def _nothing() -> None:
    pass
