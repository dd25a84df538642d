"""Logging setup: human-readable text or one JSON object per line (for Kubernetes).

Modules log with %-style messages and put ids in ``extra`` (``room``, ``participant``,
``call_id``, ...); both formats show them. Secrets never reach a log call: they are SecretStr
everywhere and only unwrapped at the HTTP boundary.
"""

from __future__ import annotations

import json
import logging
import os
import re
import socket
import sys
import time
from typing import Any

# Attributes every LogRecord has; anything else on a record came from ``extra``.
_STANDARD = frozenset(
    vars(logging.LogRecord("x", logging.INFO, "x", 0, "x", None, None)).keys()
) | {"message", "asctime", "taskName"}


def one_line(text: str, limit: int = 200) -> str:
    """Outside text (a metadata key, a model's field name) for a log line or an error message:
    printable, one line, bounded."""
    flat = "".join(c if c.isprintable() else " " for c in text)
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


def _extras(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in vars(record).items() if k not in _STANDARD and not k.startswith("_")}


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%H:%M:%S", time.localtime(record.created))
        line = f"{stamp}.{int(record.msecs):03d} {record.levelname:<7} {record.name}: "
        line += record.getMessage()
        extras = _extras(record)
        if extras:
            line += " " + " ".join(f"{k}={v}" for k, v in extras.items())
        if record.exc_info and record.levelno >= logging.ERROR:
            line += "\n" + self.formatException(record.exc_info)
        return line


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in _extras(record).items():
            doc[key] = (
                value if isinstance(value, (str, int, float, bool, type(None))) else str(value)
            )
        if record.exc_info and record.levelno >= logging.ERROR:
            doc["exc"] = self.formatException(record.exc_info)
        return json.dumps(doc, ensure_ascii=False)


# A JWT (LiveKit access tokens): the livekit SDK puts the whole token in a refused connect's
# message ("401 Unauthorized - invalid token: eyJ..."), and a token is a credential until it
# expires.
_JWT = re.compile(r"eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*")


def network_reason(exc: BaseException) -> str | None:
    """Why a connection failed, in a few words ("connection refused", "host name not resolved"),
    from ``exc`` or what caused it; None when no OS-level reason is found."""
    chain: list[BaseException] = []
    seen: BaseException | None = exc
    while seen is not None and len(chain) < 8:
        chain.append(seen)
        seen = seen.__cause__ or seen.__context__ or getattr(seen, "os_error", None)
    if any(isinstance(e, socket.gaierror) for e in chain):
        return "host name not resolved"
    for error in chain:
        if isinstance(error, OSError) and error.errno and error.errno > 0:
            return os.strerror(error.errno).lower()
    return None


def redact_tokens(text: str) -> str:
    """``text`` with any JWT replaced by ``<token>``."""
    return _JWT.sub("<token>", text)


class _Tokens(logging.Filter):
    """Keeps tokens out of every line, whoever logs it (the SDK's own log lines included)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if "eyJ" in message:
            record.msg, record.args = redact_tokens(message), None
        return True


class _SdkNoise(logging.Filter):
    """Drops a warning the livekit SDK prints on every clean disconnect (handles it already
    released); it says nothing about our state and would teach operators to ignore warnings."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "Attempted to drop unknown FFI handle" not in record.getMessage()


def setup_logging(level: str = "INFO", fmt: str = "text") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(_SdkNoise())
    handler.addFilter(_Tokens())
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # Third-party chatter that drowns our lines at INFO.
    for noisy in ("aioice", "aiortc", "httpx", "httpcore", "livekit", "aiohttp.access"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLevelName(level)))
