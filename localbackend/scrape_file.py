"""Keeps `kpa up`'s Prometheus file_sd target file equal to what is running.

Written atomically (a temporary file in the same directory, then ``os.replace``): Prometheus
watches the file and must never read half of it. Rewritten only when the text changes, and emptied
(``[]``) when the stack stops, so a Prometheus that outlives the stack drops its targets instead of
reporting dead pods forever.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path

from localbackend.scrape_targets import MetricsEndpoint, file_sd_text

log = logging.getLogger(__name__)


class ScrapeTargetFile:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._written: str | None = None
        self.writes = 0

    def write(self, endpoints: Iterable[MetricsEndpoint]) -> None:
        self._replace(file_sd_text(endpoints))

    def clear(self) -> None:
        self._replace("[]\n")

    def _replace(self, text: str) -> None:
        if text == self._written:
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", dir=self.path.parent)
            try:
                with os.fdopen(fd, "w") as out:
                    out.write(text)
                os.chmod(tmp, 0o644)
                os.replace(tmp, self.path)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
        except OSError as exc:
            # Monitoring must never take the stack down: say so once per failure and go on serving.
            log.warning("cannot write the Prometheus target file %s: %s", self.path, exc)
            return
        self._written = text
        self.writes += 1
