"""Directory monitoring: keep the served models in step with the repository on disk.

Every batch of filesystem events (watchfiles: inotify where available, grouped until the tree has been
quiet for ``quiet_ms``) is mapped to the models it touches, and those models are re-read and synced by
the manager — which compares fingerprints, so an event that changed nothing costs a stat or two. A
change at the repository root itself triggers a full pass. Syncs run as tasks: a slow load or compile
of one model never delays noticing changes to another.

inotify cannot watch a directory before it exists, so files written straight into a freshly created
model or version directory can go unreported. Each touched model is therefore synced once more a
moment after its events, and the whole repository is re-read every ``rescan_s`` seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Awaitable, Callable

import watchfiles

from predictor.manager import ModelManager
from predictor.repository import InvalidName, check_model_name

log = logging.getLogger("predictor")


async def watch_repository(
    manager: ModelManager, stop: asyncio.Event, quiet_ms: int = 200, rescan_s: float = 10.0
) -> None:
    root = manager.repository.root
    loop = asyncio.get_running_loop()
    tasks: set[asyncio.Task] = set()

    def spawn(work: Callable[[], Awaitable[None]], delay: float = 0.0) -> None:
        async def run() -> None:
            if delay:
                await asyncio.sleep(delay)
            try:
                await work()
            except Exception:
                log.exception("syncing the model repository failed")

        task = loop.create_task(run())
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    async def rescan_periodically() -> None:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(rescan_s):
                    await stop.wait()
            if not stop.is_set():
                spawn(manager.sync_all)

    rescanner = loop.create_task(rescan_periodically())
    log.info("watching %s for model changes", root)
    settle_s = max(0.5, 3 * quiet_ms / 1000)
    try:
        async for changes in watchfiles.awatch(
            root, stop_event=stop, step=quiet_ms, debounce=max(1600, quiet_ms), ignore_permission_denied=True
        ):
            names = _touched_models(manager, (path for _, path in changes))
            if names is None:
                spawn(manager.sync_all)
                spawn(manager.sync_all, settle_s)
            else:
                spawn(functools.partial(manager.sync, names))
                spawn(functools.partial(manager.sync, names), settle_s)
    finally:
        rescanner.cancel()
        for task in list(tasks):
            task.cancel()


def _touched_models(manager: ModelManager, paths) -> set[str] | None:
    """Model names the changed paths belong to; None when the repository root itself changed."""
    names: set[str] = set()
    for path in paths:
        name = manager.repository.model_name_of(path)
        if name is None:
            return None
        try:
            names.add(check_model_name(name))
        except InvalidName:
            continue  # editor droppings, hidden files: never models
    return names
