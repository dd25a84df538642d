"""When to dial a session's next model call after a failure: ``RetryPolicy``, pure.

    policy = RetryPolicy.from_settings(settings)
    policy.delay(attempt, failure)                  # seconds before the next try, None: give up
    policy.delay(attempt, dropped, at_once=True)    # the first drop after a working call: now
    policy.healthy(lasted_s=45.0, answered=False)   # a call that worked: retries start over

Backoff doubles from ``retry_backoff_initial`` up to ``retry_backoff_max``, spread by the
caller's jitter factor, and never shorter than a 429's ``Retry-After`` (up to the ceiling). A
failure that says retrying cannot help (401, a rejected session) gives up at once; anything else
gives up after ``retry_attempts`` tries in a row.
"""

from __future__ import annotations

from dataclasses import dataclass

from bridge.realtime import RealtimeAPIError, RealtimeError
from bridge.settings.config import Settings

# A call that lasted this long (or that answered) counts as a success: retries start over.
STABLE_CALL_SECONDS = 30.0


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int
    initial_s: float
    max_s: float
    stable_s: float = STABLE_CALL_SECONDS

    @classmethod
    def from_settings(cls, settings: Settings) -> RetryPolicy:
        return cls(
            attempts=settings.retry_attempts,
            initial_s=settings.retry_backoff_initial,
            max_s=settings.retry_backoff_max,
        )

    def backoff(self, attempt: int) -> float:
        """The plain backoff before retry ``attempt`` (1: the first retry)."""
        return float(min(self.max_s, self.initial_s * 2 ** (attempt - 1)))

    def delay(
        self, attempt: int, failure: RealtimeError, *, at_once: bool = False, jitter: float = 1.0
    ) -> float | None:
        """Seconds to wait before retry ``attempt`` after ``failure``; None: give up.
        ``at_once``: the call that just failed had been working (see ``healthy``)."""
        if not failure.retryable or attempt > self.attempts:
            return None
        if at_once:
            return 0.0
        delay = self.backoff(attempt) * jitter
        if isinstance(failure, RealtimeAPIError) and failure.retry_after:
            delay = max(delay, min(failure.retry_after, self.max_s))
        return delay

    def healthy(self, *, lasted_s: float, answered: bool) -> bool:
        """A call that lasted, or that carried the conversation (an answer came), was no
        flapping: its drop starts the retries over, and the next call goes at once."""
        return lasted_s >= self.stable_s or answered


__all__ = ["STABLE_CALL_SECONDS", "RetryPolicy"]
