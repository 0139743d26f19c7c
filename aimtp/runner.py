"""The skeleton every long-running AIMTP process shares (relay, trigger, watcher).

A stop event set by SIGTERM/SIGINT; a main coroutine that drains when it is set;
named side tasks (metrics server, gauges, purges) watched so that one dying stops
the process loudly instead of leaving it half-alive; a grace period after which
whatever still runs is cancelled.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
from collections.abc import Callable, Coroutine, Mapping
from typing import Any

log = logging.getLogger(__name__)

MainLoop = Callable[[asyncio.Event], Coroutine[Any, Any, None]]
SideTask = Callable[[asyncio.Event], Coroutine[Any, Any, None]]


def freeze_startup_heap() -> None:
    """Take every object alive after start-up (modules, settings, the app) out of the
    garbage collector's full passes.

    A full collection otherwise walks those hundreds of thousands of long-lived objects
    each time it runs: a pause of 100 ms and more in the middle of requests and batches
    (measured on the server). Objects created afterwards are collected as usual.
    """
    gc.collect()
    gc.freeze()


async def run_process(
    name: str,
    main: MainLoop,
    side_tasks: Mapping[str, SideTask] | None = None,
    *,
    grace_seconds: float = 20.0,
    stop: asyncio.Event | None = None,
) -> int:
    """Run ``main`` until it returns or a signal asks to stop; exit code 0 on a clean stop."""
    stop = stop or asyncio.Event()
    freeze_startup_heap()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    side: dict[asyncio.Task[object], str] = {
        asyncio.create_task(task(stop), name=task_name): task_name
        for task_name, task in (side_tasks or {}).items()
    }
    main_task = asyncio.create_task(main(stop), name=f"{name}.main")
    stop_requested = asyncio.create_task(stop.wait(), name=f"{name}.stop")
    exit_code = 0
    try:
        pending: set[asyncio.Task[object]] = {main_task, stop_requested, *side}
        while not (main_task.done() or stop_requested.done()):
            done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            for task in done & side.keys():
                if stop.is_set():
                    continue
                # Side tasks run until stop; one that ends on its own is a failure.
                log.error(
                    "side task %s stopped; stopping the process",
                    side[task],
                    exc_info=None if task.cancelled() else task.exception(),
                )
                exit_code = 1
                stop.set()
        if not main_task.done():
            log.info("draining", extra={"grace_seconds": grace_seconds})
            try:
                await asyncio.wait_for(asyncio.shield(main_task), timeout=grace_seconds)
            except TimeoutError:
                log.error("drain exceeded the grace period; cancelling")
                exit_code = 1
            except Exception:  # noqa: S110 - the main task's error is reported below
                pass
        if main_task.done() and not main_task.cancelled() and main_task.exception():
            log.error("main loop failed", exc_info=main_task.exception())
            exit_code = 1
    finally:
        for task in [main_task, stop_requested, *side]:
            task.cancel()
        await asyncio.gather(main_task, stop_requested, *side, return_exceptions=True)
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
    return exit_code
