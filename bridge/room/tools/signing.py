"""Standard Webhooks (v1) signatures on outgoing HTTP tool calls.

Headers ``webhook-id``, ``webhook-timestamp`` (Unix seconds) and ``webhook-signature``
(``v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">``), keyed with the ``whsec_`` secret, so a
receiver verifies with any Standard Webhooks library.
"""

from __future__ import annotations

from datetime import UTC, datetime

from pydantic import SecretStr
from standardwebhooks import Webhook


class Signer:
    def __init__(self, secret: SecretStr) -> None:
        self._webhook = Webhook(secret.get_secret_value())

    def headers(self, message_id: str, body: bytes, now: datetime | None = None) -> dict[str, str]:
        at = (now or datetime.now(tz=UTC)).replace(microsecond=0)
        signature = self._webhook.sign(message_id, at, body.decode("utf-8"))
        return {
            "webhook-id": message_id,
            "webhook-timestamp": str(int(at.timestamp())),
            "webhook-signature": signature,
        }
