"""The emulator's HTTP surface: strict like the service, and it keeps serving after bad input."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from bridge.emulator.app import EmulatorServer
from tests.support.env import EMULATOR_KEY

AUTH = {"Authorization": f"Bearer {EMULATOR_KEY}"}
GOOD_SESSION = {"type": "realtime", "model": "gpt-realtime"}


def multipart(sdp: str | None, session: Any) -> dict[str, Any]:
    files: dict[str, Any] = {}
    if sdp is not None:
        files["sdp"] = (None, sdp.encode(), "application/sdp")
    if session is not None:
        body = session if isinstance(session, str) else json.dumps(session)
        files["session"] = (None, body.encode(), "application/json")
    return files


async def post_call(emulator: EmulatorServer, **kwargs: Any) -> httpx.Response:
    async with httpx.AsyncClient(timeout=5) as client:
        return await client.post(f"{emulator.base_url}/realtime/calls", **kwargs)


def error_of(response: httpx.Response) -> dict[str, Any]:
    body = response.json()
    assert set(body["error"]) == {"message", "type", "param", "code"}
    error: dict[str, Any] = body["error"]
    return error


@pytest.mark.parametrize(
    ("headers", "code"),
    [
        ({}, "missing_api_key"),
        ({"Authorization": "Bearer sk-not-the-key-000000"}, "invalid_api_key"),
        ({"Authorization": "Bearer ek_unknown"}, "invalid_api_key"),
    ],
)
async def test_auth(emulator: EmulatorServer, headers: dict[str, str], code: str) -> None:
    response = await post_call(emulator, headers=headers, files=multipart("v=0", GOOD_SESSION))
    assert response.status_code == 401
    error = error_of(response)
    assert error["code"] == code
    assert "sk-not-the-key-000000" not in error["message"]


@pytest.mark.parametrize(
    ("files", "message"),
    [
        (multipart(None, GOOD_SESSION), "Missing required parameter: 'sdp'"),
        (multipart("v=0\r\n", None), "Missing required parameter: 'session'"),
        (multipart("v=0\r\n", "{not json"), "not JSON"),
        (multipart("not an sdp", GOOD_SESSION), "Invalid SDP offer"),
        (multipart("v=0\r\n", {"model": "gpt-realtime"}), "'session.type'"),
        (
            multipart("v=0\r\n", {**GOOD_SESSION, "voice": "alloy"}),
            "Unknown parameter: 'session.voice'",
        ),
        (
            multipart("v=0\r\n", {**GOOD_SESSION, "audio": {"output": {"voice": 3}}}),
            "session.audio.output.voice",
        ),
        (
            multipart("v=0\r\n", {**GOOD_SESSION, "input_audio_transcription": {}}),
            "Unknown parameter: 'session.input_audio_transcription'",
        ),
    ],
)
async def test_bad_requests_are_400(
    emulator: EmulatorServer, files: dict[str, Any], message: str
) -> None:
    response = await post_call(emulator, headers=AUTH, files=files)
    assert response.status_code == 400, response.text
    assert message in error_of(response)["message"]


async def test_malformed_multipart_and_content_type(emulator: EmulatorServer) -> None:
    broken = await post_call(
        emulator,
        headers={**AUTH, "Content-Type": "multipart/form-data; boundary=zzz"},
        content=b"--zzz\r\nnonsense",
    )
    assert broken.status_code == 400
    wrong = await post_call(emulator, headers=AUTH, json={"sdp": "v=0"})
    assert wrong.status_code == 400
    assert "Unsupported content type" in error_of(wrong)["message"]


async def test_beta_header_is_refused(emulator: EmulatorServer) -> None:
    response = await post_call(
        emulator,
        headers={**AUTH, "OpenAI-Beta": "realtime=v1"},
        files=multipart("v=0", GOOD_SESSION),
    )
    assert response.status_code == 400
    assert error_of(response)["code"] == "beta_api_shape_disabled"


async def test_injected_failures_count_down(emulator: EmulatorServer) -> None:
    emulator.emulator.options.fail_calls_status = 429
    emulator.emulator.options.fail_calls_count = 2
    for _ in range(2):
        response = await post_call(emulator, headers=AUTH, files=multipart("v=0", GOOD_SESSION))
        assert response.status_code == 429
        assert error_of(response)["code"] == "rate_limit_exceeded"
    response = await post_call(emulator, headers=AUTH, files=multipart("v=0", GOOD_SESSION))
    assert response.status_code == 400  # past the faults: now the bad SDP is what is wrong


async def test_client_secrets(emulator: EmulatorServer) -> None:
    url = f"{emulator.base_url}/realtime/client_secrets"
    async with httpx.AsyncClient(timeout=5) as client:
        ok = await client.post(
            url,
            headers=AUTH,
            json={
                "expires_after": {"anchor": "created_at", "seconds": 30},
                "session": GOOD_SESSION,
            },
        )
        assert ok.status_code == 200
        body = ok.json()
        assert body["value"].startswith("ek_") and body["session"]["id"].startswith("sess_")
        # An ephemeral key cannot mint more keys.
        nested = await client.post(
            url, headers={"Authorization": f"Bearer {body['value']}"}, json={}
        )
        assert nested.status_code == 401
        too_long = await client.post(
            url, headers=AUTH, json={"expires_after": {"anchor": "created_at", "seconds": 9999}}
        )
        assert too_long.status_code == 400
        beta = await client.post(
            url, headers=AUTH, json={"session": {"type": "realtime", "modalities": []}}
        )
        assert beta.status_code == 400
        assert "session.modalities" in error_of(beta)["message"]


async def test_hangup_unknown_call_is_404(emulator: EmulatorServer) -> None:
    async with httpx.AsyncClient(timeout=5) as client:
        response = await client.post(
            f"{emulator.base_url}/realtime/calls/rtc_nope/hangup", headers=AUTH
        )
    assert response.status_code == 404


async def test_options_patch_validates(emulator: EmulatorServer) -> None:
    url = f"{emulator.base_url}/_emulator/options"
    async with httpx.AsyncClient(timeout=5) as client:
        ok = await client.patch(url, json={"voice_mode": "echo"})
        assert ok.status_code == 200 and ok.json()["voice_mode"] == "echo"
        assert "api_key" not in ok.json()
        bad = await client.patch(url, json={"voice_mode": "sing"})
        assert bad.status_code == 400
        assert (await client.get(url)).json()["voice_mode"] == "echo"


async def test_fault_routes_need_a_live_call(emulator: EmulatorServer) -> None:
    async with httpx.AsyncClient(timeout=5) as client:
        for fault in ("expire", "drop"):
            response = await client.post(f"{emulator.base_url}/_emulator/calls/rtc_nope/{fault}")
            assert response.status_code == 404


async def test_models_are_listed_and_an_unknown_one_is_not_found(emulator: EmulatorServer) -> None:
    """``GET /v1/models[/{model}]`` as openai's own client reads it; a call for a model the
    emulator does not serve is refused the way the service refuses one (403 model_not_found)."""
    import openai

    async with openai.AsyncOpenAI(api_key=EMULATOR_KEY, base_url=emulator.base_url) as client:
        model = await client.models.retrieve("gpt-realtime-2.1")
        assert (model.id, model.object) == ("gpt-realtime-2.1", "model")
        listed = [m.id async for m in client.models.list()]
        assert "gpt-realtime-2.1" in listed and "gpt-4o-mini-transcribe" in listed
        with pytest.raises(openai.NotFoundError) as missing:
            await client.models.retrieve("gpt-realtime-9")
        assert missing.value.code == "model_not_found"
    wrong = openai.AsyncOpenAI(api_key="sk-not-the-key-000000", base_url=emulator.base_url)
    async with wrong:
        with pytest.raises(openai.AuthenticationError):
            await wrong.models.retrieve("gpt-realtime-2.1")
    session = {"type": "realtime", "model": "gpt-realtime-9"}
    response = await post_call(emulator, headers=AUTH, files=multipart("v=0\r\n", session))
    assert response.status_code == 403
    assert error_of(response)["code"] == "model_not_found"
