"""Calls into the LiveKit SDK that may fail, and the one error they fail with.

The SDK raises plain ``Exception`` for whatever goes wrong on its native side (the FFI errors
carry only a message), and some calls never answer. ``sdk_call`` bounds a call by a timeout and
turns both into ``LiveKitError``, so the room side catches one named type instead of
``Exception`` at every call site:

    try:
        await sdk_call(room.disconnect(), 10.0, "disconnect")
    except LiveKitError as exc:
        logger.info("%s", exc)       # "disconnect: no answer within 10 s"
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

from bridge.logs import one_line

T = TypeVar("T")


class LiveKitError(Exception):
    """A LiveKit SDK call failed or did not answer in time."""


async def sdk_call(awaitable: Awaitable[T], timeout: float, what: str) -> T:
    # asyncio.timeout, not wait_for: on Python 3.11 wait_for swallows a cancellation that
    # arrives as the call completes, and a loop making these calls (the attribute writer) then
    # never ends: its owner's close waited for it forever.
    try:
        async with asyncio.timeout(timeout):
            return await awaitable
    except TimeoutError:
        raise LiveKitError(f"{what}: no answer within {timeout:g} s") from None
    except Exception as exc:  # the SDK raises plain Exception
        raise LiveKitError(f"{what}: {one_line(str(exc) or type(exc).__name__)}") from exc


__all__ = ["LiveKitError", "sdk_call"]
