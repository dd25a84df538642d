"""Which models the emulator serves, as the API says it: ``GET /v1/models[/{model}]``, and the
refusal of a call for a model it does not serve.

The served models are the model table's rows (``bridge.billing.models``) not marked as already
shut down; a dated snapshot of a served family is served too. Shapes, from openai-python 3.57
(``types/model.py``: ``Model{id, created, object: "model", owned_by}``) and OpenAI's own answers
as clients report them: an unknown model is ``404 model_not_found`` on ``/v1/models/{model}``
("The model `x` does not exist or you do not have access to it.") and ``403 model_not_found`` on
``POST /v1/realtime/calls`` (reported 2026-08 for a model the project may not use). Minting a
client secret does not check the model (reported 2026-09): neither does the emulator.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from bridge.billing.models import MODELS, model_info

# When the emulator says its models were created (fixed: answers are reproducible).
CREATED = 1_750_000_000

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Authorize = Callable[[web.Request], "web.Response | None"]


def served(model: str) -> bool:
    info = model_info(model)
    return info is not None and not info.shut_down


def realtime_served(model: str) -> bool:
    info = model_info(model)
    return info is not None and info.kind == "realtime" and not info.shut_down


def not_found(model: str, status: int = 404) -> web.Response:
    message = f"The model `{model}` does not exist or you do not have access to it."
    body = {
        "error": {
            "message": message,
            "type": "invalid_request_error",
            "param": None,
            "code": "model_not_found",
        }
    }
    return web.json_response(body, status=status)


def refuse_unserved(session: dict[str, Any]) -> web.Response | None:
    """The answer to a call whose session names a model the emulator does not serve."""
    model = session.get("model")
    if isinstance(model, str) and not realtime_served(model):
        return not_found(model, status=403)
    return None


def _model(name: str) -> dict[str, Any]:
    return {"id": name, "object": "model", "created": CREATED, "owned_by": "system"}


def routes(authorize: Authorize) -> list[web.RouteDef]:
    """``GET /v1/models`` and ``GET /v1/models/{model}``, behind the API key."""

    async def list_models(request: web.Request) -> web.Response:
        denied = authorize(request)
        if denied is not None:
            return denied
        names = sorted(name for name in MODELS if served(name))
        return web.json_response({"object": "list", "data": [_model(n) for n in names]})

    async def get_model(request: web.Request) -> web.Response:
        denied = authorize(request)
        if denied is not None:
            return denied
        name = request.match_info["model"]
        if not served(name):
            return not_found(name[:200])
        return web.json_response(_model(name))

    return [web.get("/v1/models", list_models), web.get("/v1/models/{model}", get_model)]


__all__ = ["CREATED", "not_found", "refuse_unserved", "routes", "served"]
