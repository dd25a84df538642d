"""Who the agent is in a room, who counts as a human, and which of their tracks it bridges.

The agent identity is deterministic per room (prefix + room name), so two bridge processes racing
for one room end with one agent: LiveKit disconnects the older with ``DUPLICATE_IDENTITY``.
"""

from __future__ import annotations

from datetime import timedelta

from livekit import api, rtc

from bridge.settings.config import Settings

STATE_ATTRIBUTE = "lk.agent.state"
NAME_ATTRIBUTE = "lk.agent.name"
# Per-human attributes of our own (LiveKit reserves the lk. prefix for its conventions).
HUMAN_STATE_ATTRIBUTE = "bridge.state."
HUMAN_TRACK_ATTRIBUTE = "bridge.track."
# Something the room should know about the agent, in plain words (e.g. its budget is spent).
NOTICE_ATTRIBUTE = "bridge.notice"
# The tools running right now, by name ("get_order, get_location"); absent when none.
TOOL_ATTRIBUTE = "bridge.tool"

TOKEN_TTL = timedelta(minutes=15)

_HUMAN_KINDS = frozenset(
    {
        rtc.ParticipantKind.PARTICIPANT_KIND_STANDARD,
        rtc.ParticipantKind.PARTICIPANT_KIND_SIP,
        rtc.ParticipantKind.PARTICIPANT_KIND_CONNECTOR,
    }
)


def agent_identity(settings: Settings, room: str) -> str:
    return f"{settings.agent_identity_prefix}{room}"


def agent_token(settings: Settings, room: str) -> str:
    settings.require("livekit_api_key", "livekit_api_secret")
    assert settings.livekit_api_key is not None and settings.livekit_api_secret is not None
    grants = api.VideoGrants(
        room_join=True,
        room=room,
        agent=True,
        can_publish=True,
        can_subscribe=True,
        can_publish_data=True,
        can_update_own_metadata=True,
    )
    return (
        api.AccessToken(settings.livekit_api_key, settings.livekit_api_secret.get_secret_value())
        .with_identity(agent_identity(settings, room))
        .with_name(settings.agent_name)
        .with_kind("agent")
        .with_grants(grants)
        .with_attributes({NAME_ATTRIBUTE: settings.agent_name, STATE_ATTRIBUTE: "initializing"})
        .with_ttl(TOKEN_TTL)
        .to_jwt()
    )


def is_human(settings: Settings, participant: rtc.Participant) -> bool:
    """Humans are bridged; agents (ours or anyone's), recorders and ingress streams are not."""
    return is_human_kind(settings, participant.identity, participant.kind)


def is_human_kind(settings: Settings, identity: str, kind: int) -> bool:
    """``is_human`` for server-API ParticipantInfo (webhooks, list_participants)."""
    if identity.startswith(settings.agent_identity_prefix):
        return False
    return kind in _HUMAN_KINDS


def bridged(settings: Settings, publication: rtc.TrackPublication) -> bool:
    """A human's track the agent subscribes to: their microphone, and their camera or screen
    share when video is on (``video_source``)."""
    if publication.source == rtc.TrackSource.SOURCE_MICROPHONE:
        return True
    if not settings.video_enabled:
        return False
    wanted = (
        rtc.TrackSource.SOURCE_CAMERA
        if settings.video_source == "camera"
        else rtc.TrackSource.SOURCE_SCREENSHARE
    )
    return bool(publication.source == wanted)
