"""Blocking entry points over async code, safe where an event loop is already running.

``asyncio.run`` refuses to start inside a running loop (Jupyter, an async web app, a test
harness). Our blocking APIs then run the coroutine on a short-lived worker thread with a loop of
its own, and hand back its result or exception.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def run_sync(coro: Coroutine[Any, Any, T]) -> T:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    with concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="scalecap-sync") as pool:
        return pool.submit(asyncio.run, coro).result()
