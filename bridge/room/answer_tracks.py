"""Answer tracks: the audio tracks the agent speaks on, one per session, reused between sessions.

When a session ends its track is not unpublished: it is muted, its queue dropped, and kept for
the next session of the room, which unmutes it. The LiveKit SDK's native side keeps an audio
encoder thread (and its memory) alive for every audio track a process ever published, unpublished
or not (livekit/python-sdks#465, livekit/rust-sdks#612; LiveKit's own mobile SDKs advise "mute,
don't unpublish" for the same reason), so a room that sees hundreds of people come and go would
otherwise grow by a thread per person. With reuse, a room never holds more answer tracks than it
had sessions at once.

Tracks are therefore named after their slot (``answer-1``, ``answer-2``, ...), not after a
person: which human a track answers is the attribute ``bridge.track.<identity>`` (its sid). A
human who comes back gets the track they had if it is free, so a reconnecting front end keeps its
subscription.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from livekit import rtc

from bridge.room.sdk import LiveKitError, sdk_call

logger = logging.getLogger(__name__)

PUBLISH_TIMEOUT = 15.0
UNPUBLISH_TIMEOUT = 10.0


@dataclass(eq=False)
class AnswerTrack:
    """One published answer track and the source that feeds it."""

    name: str
    source: rtc.AudioSource
    track: rtc.LocalAudioTrack
    publication: rtc.LocalTrackPublication
    last_owner: str = ""

    @property
    def sid(self) -> str:
        return self.publication.sid


class AnswerTracks:
    """The answer tracks of one room: published on demand, parked between sessions, unpublished
    when the room closes. Owned by the room worker; sessions acquire and release."""

    def __init__(self, room: rtc.Room, *, queue_size_ms: int) -> None:
        self._room = room
        self._queue_size_ms = queue_size_ms
        self._free: list[AnswerTrack] = []
        self._busy: set[AnswerTrack] = set()
        self._published = 0
        self._closed = False

    @property
    def published(self) -> int:
        """Answer tracks this room has published so far (parked ones included)."""
        return self._published

    @property
    def parked(self) -> int:
        return len(self._free)

    async def acquire(self, identity: str, name: str | None = None) -> AnswerTrack:
        """A track for ``identity``'s session: the one they had if it is free, else any parked
        one, else a new one, named ``name`` or after its slot. Raises ``LiveKitError`` when it
        cannot be published (the session fails to start)."""
        if self._closed:
            raise RuntimeError("answer tracks closed")
        answer = next((a for a in self._free if a.last_owner == identity), None)
        if answer is None and self._free:
            answer = self._free[0]
        if answer is not None:
            self._free.remove(answer)
            answer.last_owner = identity
            answer.track.unmute()
            self._busy.add(answer)
            return answer
        self._published += 1
        name = name or f"answer-{self._published}"
        source = rtc.AudioSource(48_000, 1, queue_size_ms=self._queue_size_ms)
        track = rtc.LocalAudioTrack.create_audio_track(name, source)
        options = rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_MICROPHONE)
        publish = self._room.local_participant.publish_track(track, options)
        try:
            publication = await sdk_call(publish, PUBLISH_TIMEOUT, "publish the answer track")
        except BaseException:
            await source.aclose()
            raise
        answer = AnswerTrack(name, source, track, publication, last_owner=identity)
        self._busy.add(answer)
        return answer

    def release(self, answer: AnswerTrack) -> None:
        """The session using ``answer`` ended: silence it and keep it for the next session."""
        if answer not in self._busy:
            return
        self._busy.discard(answer)
        answer.source.clear_queue()
        if self._closed or not self._room.isconnected():
            # The room is going away: nothing to park it for; aclose() will not see it.
            self._busy.add(answer)
            return
        answer.track.mute()
        self._free.append(answer)

    async def aclose(self) -> None:
        """Unpublish every track (while the room is connected) and close the sources."""
        self._closed = True
        tracks = [*self._free, *self._busy]
        self._free.clear()
        self._busy.clear()
        await asyncio.gather(*(self._unpublish(answer) for answer in tracks))

    async def _unpublish(self, answer: AnswerTrack) -> None:
        if self._room.isconnected():
            unpublish = self._room.local_participant.unpublish_track(answer.sid)
            try:
                await sdk_call(unpublish, UNPUBLISH_TIMEOUT, "unpublish")
            except LiveKitError as exc:
                logger.info("%s", exc, extra={"room": self._room.name})
        await answer.source.aclose()


__all__ = ["AnswerTrack", "AnswerTracks"]
