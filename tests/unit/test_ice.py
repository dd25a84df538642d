"""aiortc peer connections offer only the configured host addresses and no STUN server."""

from __future__ import annotations

from aiortc import RTCPeerConnection
from pydantic import SecretStr

from bridge.realtime.ice import rtc_configuration, use_host_addresses
from bridge.settings.config import Settings


async def test_loopback_candidates_only() -> None:
    config = rtc_configuration(Settings(ice_host_addresses=["127.0.0.1"]))
    assert config.iceServers == []
    pc = RTCPeerConnection(config)
    try:
        pc.createDataChannel("probe")
        await pc.setLocalDescription(await pc.createOffer())
        candidates = [
            line for line in pc.localDescription.sdp.splitlines() if line.startswith("a=candidate")
        ]
    finally:
        await pc.close()
        use_host_addresses([])
    assert candidates
    assert all(" 127.0.0.1 " in line and "typ host" in line for line in candidates)


def test_turn_server_from_settings() -> None:
    config = rtc_configuration(
        Settings(
            ice_servers=["turns:turn.example.test:443?transport=tcp"],
            ice_username="u",
            ice_credential=SecretStr("c"),
        )
    )
    servers = config.iceServers or []
    assert [s.urls for s in servers] == ["turns:turn.example.test:443?transport=tcp"]
    assert servers[0].credential == "c"
