"""RPC tools: a LiveKit RPC method registered by the human's own app (``room.registerRpcMethod``
in livekit-client), called on that human with the arguments as its JSON payload."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from livekit import rtc

from bridge.room.tools.outcome import ToolFailure

# LiveKit's RPC payload limit (v1), each way.
MAX_RPC_PAYLOAD = 15_360

_CODES = {
    1400: ("unsupported_method", "the person's app does not offer this tool"),
    1401: ("recipient_not_found", "the person is no longer in the call"),
    1402: ("too_large", "the request was too large for the person's app"),
    1500: ("app_error", "the person's app reported an error"),
    1501: ("timeout", "the person's app could not be reached in time"),
    1502: ("timeout", "the person's app did not answer in time"),
    1503: ("recipient_disconnected", "the person left before their app answered"),
    1504: ("too_large", "the person's app answered with too much data"),
}


async def call_rpc(
    participant: rtc.LocalParticipant,
    identity: str,
    method: str,
    arguments: dict[str, Any],
    timeout: float,
) -> str:
    payload = json.dumps(arguments, separators=(",", ":"))
    if len(payload.encode()) > MAX_RPC_PAYLOAD:
        raise ToolFailure("too_large", f"the arguments exceed {MAX_RPC_PAYLOAD} bytes")
    try:
        # The SDK has its own response timeout; ours also bounds the acknowledgement wait.
        return await asyncio.wait_for(
            participant.perform_rpc(
                destination_identity=identity,
                method=method,
                payload=payload,
                response_timeout=timeout,
            ),
            timeout + 1.0,
        )
    except rtc.RpcError as exc:
        outcome, message = _CODES.get(exc.code, ("rpc_error", "the person's app failed"))
        if exc.code == 1500 and exc.message and len(exc.message) <= 200:
            message = f"{message}: {exc.message}"  # the app's own words, meant for the caller
        raise ToolFailure(outcome, message) from None
    except TimeoutError:
        raise ToolFailure("timeout", "the person's app did not answer in time") from None
