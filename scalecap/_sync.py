"""Blocking entry points over async code, safe where an event loop is already running.

``asyncio.run`` refuses to start inside a running loop (Jupyter, an async web app, a test
harness). Our blocking APIs then run the coroutine on a short-lived worker thread with a loop of
its own, and hand back its result or exception.

Resources bound to one loop (an aiohttp session) register a closer with ``at_loop_end``; the loops
that ``run_sync`` and ``run_finalized`` start run those closers before they end, so a blocking call
never leaves a session open on a dead loop ("Unclosed client session").
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import weakref
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")

_closers: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, list[Callable[[], Awaitable[None]]]]" = (
    weakref.WeakKeyDictionary())


def at_loop_end(closer: Callable[[], Awaitable[None]]) -> None:
    """Run ``closer`` before the running loop ends, if that loop was started by us."""
    _closers.setdefault(asyncio.get_running_loop(), []).append(closer)


async def _finalized(coro: Coroutine[Any, Any, T]) -> T:
    try:
        return await coro
    finally:
        for closer in _closers.pop(asyncio.get_running_loop(), []):
            await closer()


def run_finalized(coro: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run`` that runs the loop's registered closers before the loop ends."""
    return asyncio.run(_finalized(coro))


def run_sync(coro: Coroutine[Any, Any, T]) -> T:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return run_finalized(coro)
    with concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="scalecap-sync") as pool:
        return pool.submit(run_finalized, coro).result()
