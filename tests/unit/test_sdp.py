"""Answer normalisation, including the exact answer in OpenAI's published API specification."""

from __future__ import annotations

from pathlib import Path

import pytest
from aiortc import (
    RTCConfiguration,
    RTCIceTransportPolicy,
    RTCPeerConnection,
    RTCSessionDescription,
)

from bridge.emulator.answer import shape_answer
from bridge.realtime.errors import RealtimeProtocolError
from bridge.realtime.sdp import normalize_answer

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "openai-answer-example.sdp"


def _no_network_pc() -> RTCPeerConnection:
    # Relay-only policy without a TURN server gathers no local candidates, so applying an answer
    # that names public addresses cannot send a single packet: negotiation stops where ICE starts.
    return RTCPeerConnection(
        RTCConfiguration(iceServers=[], iceTransportPolicy=RTCIceTransportPolicy.RELAY)
    )


async def _offer(pc: RTCPeerConnection) -> None:
    pc.createDataChannel("oai-events")
    pc.addTransceiver("audio", direction="sendrecv")
    await pc.setLocalDescription(await pc.createOffer())


@pytest.fixture
def published_answer() -> str:
    if not FIXTURE.exists():
        pytest.fail(f"fixture missing: {FIXTURE}")
    return FIXTURE.read_text()


async def test_aiortc_rejects_published_answer_as_is(published_answer: str) -> None:
    pc = _no_network_pc()
    try:
        await _offer(pc)
        with pytest.raises(ValueError, match="ICE username fragment or password is missing"):
            await pc.setRemoteDescription(RTCSessionDescription(published_answer, "answer"))
    finally:
        await pc.close()


async def test_published_answer_negotiates_after_normalisation(published_answer: str) -> None:
    pc = _no_network_pc()
    try:
        await _offer(pc)
        await pc.setRemoteDescription(
            RTCSessionDescription(normalize_answer(published_answer), "answer")
        )
        (audio,) = pc.getTransceivers()
        codec = audio._codecs[0]
        assert (codec.mimeType, codec.payloadType, codec.clockRate) == ("audio/opus", 111, 48000)
        assert audio.currentDirection == "sendrecv"
        # The data channel rides the audio section's transport: one BUNDLE, one DTLS session.
        assert pc.sctp is not None
        assert pc.sctp.transport is audio.sender.transport
    finally:
        await pc.close()


def test_normalisation_copies_bundle_credentials(published_answer: str) -> None:
    out = normalize_answer(published_answer)
    data = out.split("m=application")[1]
    assert "a=ice-ufrag:kZ2qkHXX/u11" in data
    assert "a=ice-pwd:uoD16Di5OGx3VbqgA3ymjEQV2kwiOjw6" in data
    assert "a=setup:active" in data
    assert out.endswith("\r\n")


def test_full_answers_pass_unchanged_in_substance() -> None:
    answer = (
        "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0 1\r\n"
        "m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\na=ice-ufrag:aa\r\na=ice-pwd:bb\r\n"
        "m=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\na=mid:1\r\na=ice-ufrag:aa\r\n"
        "a=ice-pwd:bb\r\n"
    )
    assert normalize_answer(answer).count("a=ice-ufrag:aa") == 2


@pytest.mark.parametrize(
    ("sdp", "message"),
    [
        ("", "not an SDP"),
        ('{"error": "nope"}', "not an SDP"),
        ("v=0\r\ns=-\r\nm=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\n", "no audio"),
    ],
)
def test_unusable_answers(sdp: str, message: str) -> None:
    with pytest.raises(RealtimeProtocolError, match=message):
        normalize_answer(sdp)


def test_emulator_published_shape_strips_bundled_credentials() -> None:
    full = (
        "v=0\r\ns=-\r\na=group:BUNDLE 0 1\r\nm=audio 1 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\n"
        "a=ice-ufrag:x\r\na=ice-pwd:y\r\na=setup:active\r\n"
        "a=candidate:1 1 udp 1 127.0.0.1 1 typ host\r\n"
        "m=application 1 UDP/DTLS/SCTP webrtc-datachannel\r\na=mid:1\r\na=ice-ufrag:x\r\n"
        "a=ice-pwd:y\r\na=setup:active\r\na=candidate:1 1 udp 1 127.0.0.1 1 typ host\r\n"
    )
    shaped = shape_answer(full, "published")
    data = shaped.split("m=application")[1]
    assert "ice-ufrag" not in data and "candidate" not in data and "setup" not in data
    assert shaped.split("m=application")[0].count("a=ice-ufrag:x") == 1
    assert normalize_answer(shaped).split("m=application")[1].count("a=ice-ufrag:x") == 1
