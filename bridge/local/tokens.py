"""Participant tokens for the local stack: the one place ``room-bridge dev`` mints them.

Used for the simulated human, the page's visitors and the "other LiveKit clients" line, so a
change to what a dev token carries (a grant, an agent to dispatch) is made here once.
"""

from __future__ import annotations

from datetime import timedelta

from livekit import api

# Long enough to join; LiveKit keeps a connected participant whose token then expires.
TOKEN_TTL = timedelta(minutes=15)


def participant_token(
    api_key: str, api_secret: str, *, room: str, identity: str, name: str = "", agent: str = ""
) -> str:
    """A short-lived token for a person (or the simulated human) to join ``room``; with
    ``agent``, joining asks for that agent by name (LiveKit agent dispatch through
    ``RoomConfiguration.agents``, effective when this join creates the room)."""
    token = (
        api.AccessToken(api_key, api_secret)
        .with_identity(identity)
        .with_ttl(TOKEN_TTL)
        .with_grants(
            api.VideoGrants(
                room_join=True,
                room=room,
                can_publish=True,
                can_subscribe=True,
                can_publish_data=True,
            )
        )
    )
    if name:
        token = token.with_name(name)
    if agent:
        token = token.with_room_config(
            api.RoomConfiguration(agents=[api.RoomAgentDispatch(agent_name=agent)])
        )
    return token.to_jwt()
