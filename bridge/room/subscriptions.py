"""What the agent receives from its room: ``Subscriptions``.

The agent joins auto-subscribed, so the tracks already in the room come with its join. Asking
for them after the join cost a first human ~200 ms more before ``listening`` (LiveKit batches
its subscription offers; measured on loopback: first microphone frame 70 ms after the connect
began, against 270 ms). What the worker does not bridge (other agents' tracks, and a human's
camera or screen share when it is not relayed: ``identity.bridged``) is dropped again as soon
as LiveKit announces or sends it.

Track events can come before the worker has finished joining (LiveKit sends the room's tracks
with the join); ``arrived`` holds them until ``joined`` hands them back.

    subscriptions = Subscriptions(settings)
    subscriptions.published(publication, participant)   # track_published
    if subscriptions.arrived(track, publication, participant):
        ...                                              # track_subscribed: one to bridge
    for track, publication, participant in subscriptions.joined():
        ...                                              # what arrived during the join
"""

from __future__ import annotations

from livekit import rtc

from bridge.room.identity import bridged, is_human
from bridge.settings.config import Settings

Arrival = tuple[rtc.Track, rtc.RemoteTrackPublication, rtc.RemoteParticipant]


class Subscriptions:
    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._waiting: list[Arrival] | None = []  # None once joined

    def wanted(
        self, publication: rtc.RemoteTrackPublication, participant: rtc.RemoteParticipant
    ) -> bool:
        return is_human(self._settings, participant) and bridged(self._settings, publication)

    def published(
        self, publication: rtc.RemoteTrackPublication, participant: rtc.RemoteParticipant
    ) -> None:
        """A track was published: one not to bridge is dropped before it arrives (one to
        bridge comes by itself)."""
        if not self.wanted(publication, participant):
            publication.set_subscribed(False)

    def arrived(
        self,
        track: rtc.Track,
        publication: rtc.RemoteTrackPublication,
        participant: rtc.RemoteParticipant,
    ) -> bool:
        """A track arrived: True when it is one to bridge now."""
        if not self.wanted(publication, participant):
            publication.set_subscribed(False)
            return False
        if self._waiting is not None:
            self._waiting.append((track, publication, participant))
            return False
        return True

    def joined(self) -> list[Arrival]:
        """The join is done: the tracks to bridge that arrived meanwhile (and are still
        there), in order."""
        waiting, self._waiting = self._waiting or [], None
        return [arrival for arrival in waiting if arrival[1].subscribed]


__all__ = ["Subscriptions"]
