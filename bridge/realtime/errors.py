"""One exception hierarchy for the model side. Foreign errors (httpx, aiortc) are translated at
the boundary, so callers catch only these::

    RealtimeError                 .retryable says whether trying again may help
    ├── RealtimeAPIError          non-2xx answer: .status, .code, .message (429/5xx retryable)
    ├── RealtimeTimeoutError      a network step took too long (retryable)
    ├── RealtimeConnectionError   HTTP connection, ICE or DTLS failed (retryable)
    ├── RealtimeProtocolError     the service answered something we cannot use (not retryable)
    └── RealtimeClosedError       the call is over (sending on it, or it ended)

Messages never contain the API key: anything that looks like one is masked.
"""

from __future__ import annotations

import re

_KEYLIKE = re.compile(r"\b(sk|ek|rk)[-_][A-Za-z0-9_\-]{6,}")


def redact(text: str, *secrets: str | None) -> str:
    """``text`` with the given secrets and anything shaped like an OpenAI key masked."""
    for secret in secrets:
        if secret:
            # Also as it appears escaped in a repr (a key with a stray newline, say).
            for form in (secret, repr(secret)[1:-1], repr(secret.encode())[2:-1]):
                text = text.replace(form, "***")
    return _KEYLIKE.sub(lambda m: f"{m.group(1)}-***", text)


class RealtimeError(Exception):
    retryable: bool = False

    def __init__(self, message: str, *, retryable: bool | None = None) -> None:
        super().__init__(message)
        if retryable is not None:
            self.retryable = retryable


class RealtimeAPIError(RealtimeError):
    """The service answered with a non-2xx status."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        code: str | None = None,
        error_type: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        retryable = status == 429 or status >= 500 or status == 408
        super().__init__(
            f"HTTP {status}{f' {code}' if code else ''}: {message}", retryable=retryable
        )
        self.status = status
        self.code = code
        self.error_type = error_type
        self.message = message
        self.retry_after = retry_after


class RealtimeTimeoutError(RealtimeError):
    retryable = True


class RealtimeConnectionError(RealtimeError):
    retryable = True


class RealtimeProtocolError(RealtimeError):
    retryable = False


class RealtimeClosedError(RealtimeError):
    """The call has ended; ``reason`` says why (e.g. ``hangup``, ``peer_closed``)."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"call closed: {reason}", retryable=False)
        self.reason = reason
