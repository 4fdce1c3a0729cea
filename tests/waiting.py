"""Waiting in tests for something a running server or gateway does on its own time."""

from __future__ import annotations

import asyncio
import inspect
import time


async def eventually(check, within: float = 10.0, what: str = "the condition"):
    """Poll `check` (plain or async) until it returns something true; return that value.
    Fails the test with `what` when `within` seconds pass first."""
    deadline = time.monotonic() + within
    while True:
        value = check()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)
