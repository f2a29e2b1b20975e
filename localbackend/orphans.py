"""No orphans: the local backend's pods die with `kpa up`, even when it is SIGKILLed.

A clean stop drains and kills every pod; these two mechanisms cover the deaths that run no code.

* ``die_with_parent()`` is a ``preexec_fn`` that sets Linux's parent-death signal
  (``prctl(PR_SET_PDEATHSIG, SIGKILL)``) in each child between fork and exec: the kernel kills the
  queue-proxy and the user container the moment `kpa up` dies. The signal is not inherited across
  fork, so it cannot reach what those children start themselves — a user container given as
  ``sh -c 'python app.py'`` runs ``python`` as a grandchild — and every pod runs in its own process
  group (its own session) anyway, out of reach of a terminal's Ctrl-C.
* ``OrphanGuard`` therefore starts one small watchdog process (this module's ``main``) that `kpa up`
  tells, over a pipe, which process groups its pods lead. When the pipe reaches end of file —
  `kpa up` exited, however it died — the watchdog SIGKILLs every group still registered, then exits.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
from collections.abc import Callable

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
GUARD_EXIT_TIMEOUT = 5.0


def die_with_parent() -> Callable[[], None] | None:
    """A ``preexec_fn`` giving the child SIGKILL when this process dies; None where prctl is missing.

    Everything it needs is looked up here, in the parent, so the child only makes one libc call. If
    the parent died before the call (the signal would never come), the child exits at once.
    """
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    parent = os.getpid()
    kill = int(signal.SIGKILL)

    def set_parent_death_signal() -> None:
        prctl(PR_SET_PDEATHSIG, kill, 0, 0, 0)
        if os.getppid() != parent:
            os._exit(1)

    return set_parent_death_signal


class OrphanGuard:
    """The watchdog's client: ``watch(pgid)`` when a pod process starts, ``forget(pgid)`` once its
    group is dead, ``close()`` at a clean stop (the watchdog then exits on its own)."""

    def __init__(self) -> None:
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "localbackend.orphans"],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            start_new_session=True,  # a Ctrl-C at the terminal must not take the guard down first
        )

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def watch(self, pgid: int) -> None:
        self._send(f"+{pgid}\n")

    def forget(self, pgid: int) -> None:
        self._send(f"-{pgid}\n")

    def _send(self, line: str) -> None:
        if self._proc is None or self._proc.stdin is None or self._proc.stdin.closed:
            return
        with contextlib.suppress(OSError, ValueError):  # a dead guard must not break the stack
            self._proc.stdin.write(line.encode())
            self._proc.stdin.flush()

    def close(self) -> None:
        """End the pipe; the watchdog kills what is still registered (nothing, after a clean stop)."""
        if self._proc is None:
            return
        if self._proc.stdin is not None:
            with contextlib.suppress(OSError):
                self._proc.stdin.close()
        try:
            self._proc.wait(GUARD_EXIT_TIMEOUT)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()


def main() -> None:
    """The watchdog: read ``+PGID``/``-PGID`` lines until end of file, then SIGKILL what is left."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    groups: set[int] = set()
    for line in sys.stdin.buffer:
        with contextlib.suppress(ValueError):
            pgid = int(line[1:])
            if pgid <= 1:  # never our own group (0) or init's
                continue
            if line.startswith(b"+"):
                groups.add(pgid)
            elif line.startswith(b"-"):
                groups.discard(pgid)
    for pgid in groups:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGKILL)


if __name__ == "__main__":
    main()
