"""A user container for the fake kubelet's tests: a tiny HTTP server that shows what it was given.

    python fake_pod_app.py HOST PORT MARKS

* ``GET /`` answers JSON: the environment the kubelet gave it (``KPA_POD_IP``, ``POD_NAME``, …),
  its argv and the address the request reached;
* ``GET /ready`` answers 200 only with the header ``X-Probe: kubelet`` and once ``MARKS/ready``
  exists (503 before, 400 without the header), so a test decides when the readiness probe passes;
* ``GET /prestop`` (the preStop hook) writes ``MARKS/prestop-<pod>`` and answers 200;
* SIGTERM writes ``MARKS/sigterm-<pod>`` and exits 0, unless ``IGNORE_SIGTERM=1``.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

HOST, PORT, MARKS = sys.argv[1], int(sys.argv[2]), Path(sys.argv[3])
POD = os.environ.get("POD_NAME", "pod")


class Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        if self.path == "/ready":
            if self.headers.get("X-Probe") != "kubelet":
                self._answer(400, b"no X-Probe header")
            elif (MARKS / "ready").exists():
                self._answer(200, b"ready")
            else:
                self._answer(503, b"not yet")
        elif self.path == "/prestop":
            (MARKS / f"prestop-{POD}").write_text("prestop")
            self._answer(200, b"bye")
        else:
            env = {
                key: value
                for key, value in os.environ.items()
                if key.startswith(("KPA_", "POD_", "GREETING"))
            }
            body = {"env": env, "argv": sys.argv, "local": list(self.connection.getsockname())[:2]}
            self._answer(200, json.dumps(body).encode())

    def _answer(self, code: int, body: bytes) -> None:
        self.send_response(code)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def on_sigterm(*_: object) -> None:
    (MARKS / f"sigterm-{POD}").write_text("sigterm")
    os._exit(0)


if os.environ.get("IGNORE_SIGTERM") == "1":
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
else:
    signal.signal(signal.SIGTERM, on_sigterm)
ThreadingHTTPServer((HOST, PORT), Handler).serve_forever()
