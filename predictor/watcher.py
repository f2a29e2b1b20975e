"""Directory monitoring: keep the served models in step with the repository on disk.

Every batch of filesystem events (watchfiles: inotify where available, grouped until the tree has been
quiet for ``quiet_ms``) is mapped to the models it touches, and those models are re-read and synced by
the manager — which compares fingerprints, so an event that changed nothing costs a stat or two. A
change at the repository root itself triggers a full pass. Syncs run as tasks: a slow load or compile
of one model never delays noticing changes to another.
"""

from __future__ import annotations

import asyncio
import logging

import watchfiles

from predictor.manager import ModelManager
from predictor.repository import InvalidName, check_model_name

log = logging.getLogger("predictor")


async def watch_repository(manager: ModelManager, stop: asyncio.Event, quiet_ms: int = 200) -> None:
    root = manager.repository.root
    tasks: set[asyncio.Task] = set()
    log.info("watching %s for model changes", root)
    async for changes in watchfiles.awatch(
        root, stop_event=stop, step=quiet_ms, debounce=max(1600, quiet_ms), ignore_permission_denied=True
    ):
        names: set[str] = set()
        everything = False
        for _, path in changes:
            name = manager.repository.model_name_of(path)
            if name is None:
                everything = True
                continue
            try:
                names.add(check_model_name(name))
            except InvalidName:
                continue  # editor droppings, hidden files: never models
        work = manager.sync_all() if everything else manager.sync(names)
        task = asyncio.get_running_loop().create_task(work)
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    for task in tasks:
        task.cancel()
