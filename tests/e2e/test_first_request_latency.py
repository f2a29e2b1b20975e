"""The first request of a never-active revision (initial scale 0, right after `kpa up` starts) is
served about as fast as the container can boot (issue 11 item 9).

What is measured, and why. The client sends the request at ``sent`` and has its answer at
``answered``. The stack records when it spawned the pod (``PodInfo.started_at``, taken just before
the user container's process is created); the container itself records when its socket started
listening (``listening``). Then

* ``reaction = started_at - sent`` is the autoscaler's part: activator stat → poke → decision →
  actuator → spawn. This was the defect: the poke fired only at a known desired scale of 0, so a
  revision that had never decided (-1) held its first request until the next 2 s tick.
* ``boot = listening - started_at`` is the container's own start-up (a Python interpreter and
  ``http.server`` here): not the stack's to shorten.
* ``overhead = (answered - sent) - boot`` is everything the stack adds to a cold start: the reaction,
  starting the queue-proxy, readiness probing, the activator's probe and forwarding. The done-when
  criterion ("answered within 0.3 s of a trivial container's start") is ``overhead <= 0.3 s``; with a
  container whose boot is negligible, that is the whole first-request latency.

``answered - started_at`` alone would not do: it passed before the fix too, since the 2 s wait came
before the spawn.

Every attempt must show the fix (a reaction well under the 2 s tick it used to wait for, about 2.0 s
when the request comes right after start). The 0.3 s criterion is the stack's capability and is met
by the best of up to three attempts, each a fresh never-active stack: on a shared 2-core machine a
busy neighbour slows the process launches (queue-proxy and container) by as much again.
"""

import sys
import time
from pathlib import Path

import httpx
from stack_fixtures import REVISION, run, running_stack, stack_text

# A trivial user container: http.server on $PORT that writes when it began listening.
CONTAINER = """
import http.server, os, sys, time
server = http.server.HTTPServer(("127.0.0.1", int(os.environ["PORT"])), http.server.BaseHTTPRequestHandler)
class Hello(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200); self.send_header("Content-Length", "2"); self.end_headers()
        self.wfile.write(b"ok")
    def log_message(self, *args):
        pass
server.RequestHandlerClass = Hello
with open(sys.argv[1], "w") as f:
    f.write(repr(time.time()))
server.serve_forever()
"""

OVERHEAD_LIMIT = 0.3  # seconds: issue 11's done-when criterion
REACTION_LIMIT = 1.0  # seconds: before the fix the pod was spawned at the first 2 s tick
ATTEMPTS = 3


def first_request(tmp_path: Path) -> dict[str, float]:
    """Start a never-active stack, send its first request; the four instants, in unix seconds."""
    tmp_path.mkdir()
    script = tmp_path / "container.py"
    script.write_text(CONTAINER)
    listening_file = tmp_path / "listening"
    text = stack_text(
        delay=0.0,
        cc=0,
        annotations={"initial-scale": "0"},
        config={"allow-zero-initial-scale": "true"},
        command=[sys.executable, str(script), str(listening_file)],
    )

    async def scenario() -> dict[str, float]:
        async with running_stack(text, tmp_path) as stack:
            assert stack.actuator.pods(REVISION) == []  # never active: no pod, no decision yet
            assert stack.service.status()[0].want == -1
            async with httpx.AsyncClient(timeout=20) as http:
                sent = time.time()
                answer = await http.get(stack.entry_url + "/", headers={"Host": "hello"})
                answered = time.time()
            assert answer.status_code == 200 and answer.text == "ok"
            assert answer.headers["x-kpa-cold-start"] == "true"
            started_at = min(p.started_at for p in stack.actuator.pods(REVISION))
            listening = float(listening_file.read_text())
        return {"sent": sent, "started_at": started_at, "listening": listening, "answered": answered}

    return run(scenario())


def test_first_request_of_a_never_active_revision_waits_only_for_the_container(tmp_path):
    overheads = []
    for attempt in range(ATTEMPTS):
        t = first_request(tmp_path / str(attempt))
        reaction = t["started_at"] - t["sent"]
        boot = t["listening"] - t["started_at"]
        total = t["answered"] - t["sent"]
        figures = f"total {total:.3f}s, reaction {reaction:.3f}s, container boot {boot:.3f}s"
        assert 0 <= reaction < REACTION_LIMIT, f"the pod was spawned late: {figures}"
        assert 0 <= boot < total, figures
        overheads.append(total - boot)
        if total - boot <= OVERHEAD_LIMIT:
            return
    raise AssertionError(f"the stack added {min(overheads):.3f}s at best (of {overheads})")
