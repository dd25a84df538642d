"""Cameras: the humans' cameras (or screen shares) the room worker subscribed to, and which
session sees which.

Each human's session sees their own camera; in shared mode the room's one call sees the active
speaker's (the loudest with a camera), and keeps the last one when nobody with a camera speaks.
A camera may arrive before or after its human's session: ``started`` catches up.
"""

from __future__ import annotations

from collections.abc import Mapping

from livekit import rtc

from bridge.room.session import ParticipantSession
from bridge.room.shared import SHARED, SharedSession


class Cameras:
    def __init__(self, sessions: Mapping[str, ParticipantSession]) -> None:
        self.sessions = sessions  # the room's, by identity or SHARED
        self._tracks: dict[str, rtc.Track] = {}  # identity -> their camera
        self.shown: str | None = None  # shared mode: whose camera the call sees

    def __contains__(self, identity: str) -> bool:
        """Whether ``identity``'s camera is subscribed."""
        return identity in self._tracks

    def added(self, identity: str, track: rtc.Track) -> None:
        self._tracks[identity] = track
        session = self.sessions.get(identity)
        if session is not None:
            session.attach_video(track)
        elif self.shown is None:
            self._show(identity)

    def removed(self, identity: str) -> None:
        self._tracks.pop(identity, None)
        session = self.sessions.get(identity)
        if session is not None:
            session.detach_video()
        elif self.shown == identity:
            self._show(next(iter(self._tracks), None))

    def left(self, identity: str) -> None:
        """The human left the room (their session, if any, ends with them)."""
        self._tracks.pop(identity, None)

    def speaking(self, identities: list[str]) -> None:
        """LiveKit's active speakers, the loudest first: the shared call sees the first with a
        camera."""
        for identity in identities:
            if identity in self._tracks:
                if identity != self.shown:
                    self._show(identity)
                return

    def started(self, session: ParticipantSession) -> None:
        """A session started: it sees its camera (shared: the one shown, or any)."""
        if isinstance(session, SharedSession):
            self._show(self.shown or next(iter(self._tracks), None))
            return
        track = self._tracks.get(session.identity)
        if track is not None:
            session.attach_video(track)

    def _show(self, identity: str | None) -> None:
        self.shown = identity
        shared = self.sessions.get(SHARED)
        if not isinstance(shared, SharedSession):
            return
        track = self._tracks.get(identity) if identity is not None else None
        if track is None:
            shared.detach_video()
        else:
            shared.attach_video(track)


__all__ = ["Cameras"]
