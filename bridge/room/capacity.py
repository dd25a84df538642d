"""A process's session budget: never more live sessions than it was sized for.

A session takes a slot before its model call starts and gives it back when it ends. A human who
finds the budget full waits (their room worker retries when a slot frees) rather than being
bridged on an overloaded process where every session's audio would suffer.
"""

from __future__ import annotations

import asyncio


class SessionBudget:
    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0
        self._freed = asyncio.Event()

    @property
    def full(self) -> bool:
        return self.used >= self.limit

    def try_acquire(self) -> bool:
        if self.full:
            return False
        self.used += 1
        return True

    def release(self) -> None:
        self.used = max(0, self.used - 1)
        # Wake everyone holding the current event; later callers get a fresh one.
        self._freed.set()
        self._freed = asyncio.Event()

    def freed(self) -> asyncio.Event:
        """An event set when a slot is next given back. Take it *before* trying to acquire,
        so a release in between is not missed."""
        return self._freed
