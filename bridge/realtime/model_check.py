"""Before the first call: does the model service answer, take our key, and serve our model?

``GET {openai_base_url}/models/{model}`` costs nothing and answers all three: a connection error
(unreachable), 401 (the key), ``model_not_found`` (the model). A service without that endpoint
(an OpenAI-compatible proxy, say: a 404 or 405 that is not OpenAI-shaped) cannot be asked, and
that is not an error; nor is Azure's 404 (its model list is not its deployments), so with
Azure's ``api-key`` header only the key is checked. Every problem is a ``RealtimeError`` whose
message is one line naming the service's URL and the setting to fix; never the key.
"""

from __future__ import annotations

import httpx
from pydantic import SecretStr

from bridge.logs import network_reason
from bridge.realtime.errors import (
    RealtimeAPIError,
    RealtimeConnectionError,
    RealtimeError,
    RealtimeTimeoutError,
    redact,
)
from bridge.realtime.http import api_key, auth_headers, error_from_response, make_client
from bridge.settings.config import Settings, env_name


async def check_model(settings: Settings, key: SecretStr | None = None) -> bool:
    """True when the service says it serves ``settings.model`` to our key; False when it cannot
    be asked; raises a ``RealtimeError`` (``retryable`` as usual) when it says no or fails."""
    base = settings.openai_base_url
    secret = api_key(settings, key)
    url = f"{base}/models/{settings.model}"
    async with make_client(settings) as client:
        try:
            response = await client.get(
                url, headers=auth_headers(settings, secret), timeout=settings.connect_timeout
            )
        except httpx.TimeoutException:
            raise RealtimeTimeoutError(
                f"the model service at {base} did not answer in {settings.connect_timeout:g} s"
            ) from None
        except httpx.HTTPError as exc:
            detail = _connection_detail(exc, secret.get_secret_value())
            raise RealtimeConnectionError(
                f"the model service at {base} is unreachable: {detail} (OPENAI_BASE_URL)"
            ) from None
    if response.is_success:
        return True
    error = error_from_response(response, secret)
    if error.status in (404, 405) and (not error.code or _azure(settings)):
        # No such endpoint here (OpenAI's unknown model comes with its code); Azure's models
        # are not its deployments, so its 404 says nothing about ours.
        return False
    raise _explained(settings, error)


def _azure(settings: Settings) -> bool:
    return settings.auth_header.lower() != "authorization"


def _explained(settings: Settings, error: RealtimeAPIError) -> RealtimeError:
    base = settings.openai_base_url
    code = f" {error.code}" if error.code else ""
    if error.code == "model_not_found" or error.status == 404:
        return RealtimeError(
            f"the model service at {base} does not serve model {settings.model!r} to this key "
            f"({env_name('model')}; HTTP {error.status}{code})",
            retryable=False,
        )
    if error.status in (401, 403):
        return RealtimeError(
            f"the model service at {base} refused the key in {env_name('openai_api_key')} "
            f"(HTTP {error.status}{code})",
            retryable=False,
        )
    return RealtimeError(
        f"the model service at {base} answered HTTP {error.status}{code}: {error.message}",
        retryable=error.retryable,
    )


def _connection_detail(exc: httpx.HTTPError, secret: str) -> str:
    return network_reason(exc) or redact(str(exc), secret) or type(exc).__name__


__all__ = ["check_model"]
