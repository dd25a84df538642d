"""The model's audio from RTP straight into our queue: reorder, decode, conceal, release.

aiortc's generic receiver holds every audio packet until four more have arrived (a fixed 80 ms
prefetch), hands each to a decoder thread and back, and stalls on a lost packet until sixteen
newer ones push it out (320 ms of silence, then a burst). For a voice leg that is the wrong
trade. ``AudioPlayout`` takes the packets aiortc has already validated (SRTP, payload type,
RTX), and:

- releases each packet the moment it is the next in sequence (no prefetch: on a clean path a
  frame is decoded and queued as soon as it arrives);
- when a packet is missing, holds the newer ones for at most ``wait`` (adapted to the measured
  arrival jitter, between ``MIN_WAIT`` and ``MAX_WAIT``) for it to turn up, then conceals the
  gap (the last frame repeated, fading) and moves on; a packet that arrives after its slot was
  concealed is dropped (counted as late);
- decodes Opus to 48 kHz mono in the event loop (one small call per 20 ms, cheaper than the
  thread hand-off it replaces); PCMU/PCMA are decoded and resampled to the same shape.

Smoothing the release into real time is left to the room side's ``rtc.AudioSource``, which
already is a real-time playout queue: a second fixed buffer in front of it would only add its
depth to every turn.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import av
import numpy as np

from bridge.audio import FRAME_SAMPLES, SAMPLE_RATE, Pcm
from bridge.realtime.tracks import to_mono

logger = logging.getLogger(__name__)

# Bounds of the wait for a missing packet; the adaptive value lies between them.
MIN_WAIT = 0.010
MAX_WAIT = 0.060
# Newer packets held while waiting; beyond this the gap is concealed at once.
MAX_HELD = 8
# A jump this large in sequence numbers is a new stream (or a restart), not loss.
MAX_GAP = 50
# Concealed frames fade by this factor each; after a few they are silence.
CONCEAL_FADE = 0.5

Sink = Callable[[Pcm, float], None]


@dataclass
class PlayoutStats:
    packets: int = 0
    concealed: int = 0
    late: int = 0
    duplicates: int = 0
    decode_errors: int = 0
    # Seconds packets were held waiting for a missing one (the only delay this stage adds).
    held_seconds: float = 0.0
    held_packets: int = 0


class _Decoder:
    """One codec context for the call's audio payload type (Opus, PCMU or PCMA)."""

    def __init__(self, codec_name: str, clock_rate: int) -> None:
        name = codec_name.lower()
        if name == "opus":
            ctx = av.CodecContext.create("libopus", "r")
            ctx.sample_rate = SAMPLE_RATE
            ctx.layout = "mono"  # libopus downmixes a stereo stream itself
        elif name in ("pcmu", "pcma"):
            ctx = av.CodecContext.create("pcm_mulaw" if name == "pcmu" else "pcm_alaw", "r")
            ctx.sample_rate = clock_rate
            ctx.layout = "mono"
        else:
            raise ValueError(f"unsupported audio codec {codec_name}")
        self._ctx: Any = ctx

    def decode(self, payload: bytes) -> Pcm | None:
        out: list[Pcm] = []
        for frame in self._ctx.decode(av.Packet(payload)):
            out.append(to_mono(frame))
        if not out:
            return None
        return out[0] if len(out) == 1 else np.concatenate(out)


def _seq_delta(a: int, b: int) -> int:
    """a - b on the 16-bit sequence circle, in [-32768, 32767]."""
    return (a - b + 32768) % 65536 - 32768


class AudioPlayout:
    """Packets in (``add``), PCM frames out (``sink(pcm, perf_counter_when_released)``)."""

    def __init__(self, sink: Sink, *, clock: Callable[[], float] = time.perf_counter) -> None:
        self._sink = sink
        self._clock = clock
        self._decoders: dict[int, _Decoder] = {}
        self._codecs: dict[int, tuple[str, int]] = {}
        self._next: int | None = None
        # seq -> (payload type, payload, arrival, RTP timestamp)
        self._held: dict[int, tuple[int, bytes, float, int]] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._last: Pcm | None = None
        self._conceal_gain = 1.0
        # RFC 3550 interarrival jitter, in seconds, per stream.
        self._jitter = 0.0
        self._transit: float | None = None
        # The fastest transit seen (arrival - media time), rising slowly so clock drift between
        # the two ends cannot pin it: when a packet is missing, its due time is this plus its
        # media time, and it is waited for until due + wait.
        self._base: float | None = None
        self._base_at = 0.0
        self._rate = SAMPLE_RATE
        self._samples_per_packet = FRAME_SAMPLES
        self._last_seq_ts: tuple[int, int] | None = None
        self.stats = PlayoutStats()
        self.closed = False

    # ---- configuration -------------------------------------------------------------------------

    @property
    def wait(self) -> float:
        """How long past its due time a missing packet is waited for: about three times the
        measured jitter, so reordering within the jitter is repaired and loss costs little."""
        return min(MAX_WAIT, max(MIN_WAIT, 3 * self._jitter + 0.005))

    @property
    def jitter(self) -> float:
        return self._jitter

    # ---- input -----------------------------------------------------------------------------------

    def add(self, packet: TappedPacket) -> None:
        if self.closed:
            return
        seq, timestamp, payload_type = packet.seq, packet.timestamp, packet.payload_type
        payload = packet.payload
        self._codecs[payload_type] = (packet.codec, packet.clock_rate)
        now = self._clock()
        self.stats.packets += 1
        self._update_jitter(now, timestamp, payload_type)
        if self._last_seq_ts is not None:
            step = _seq_delta(seq, self._last_seq_ts[0])
            span = (timestamp - self._last_seq_ts[1]) % (1 << 32)
            if step == 1 and 0 < span <= self._rate // 10:
                self._samples_per_packet = span
        self._last_seq_ts = (seq, timestamp)
        if self._next is None:
            self._next = seq
        delta = _seq_delta(seq, self._next)
        if delta < 0:
            if -delta > MAX_GAP:
                self._restart(seq)
            else:
                self.stats.late += 1
                return
        elif delta > MAX_GAP:
            self._restart(seq)
        if seq in self._held:
            self.stats.duplicates += 1
            return
        self._held[seq] = (payload_type, payload, now, timestamp)
        self._drain(now)

    def close(self) -> None:
        self.closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._held.clear()

    # ---- internals -------------------------------------------------------------------------------

    def _update_jitter(self, now: float, timestamp: int, payload_type: int) -> None:
        rate = self._codecs.get(payload_type, ("", SAMPLE_RATE))[1] or SAMPLE_RATE
        self._rate = rate
        transit = now - timestamp / rate
        if self._transit is not None:
            d = abs(transit - self._transit)
            if d < 1.0:  # ignore timestamp jumps (a new stream)
                self._jitter += (d - self._jitter) / 16
            else:
                self._base = None
        self._transit = transit
        if self._base is None or transit < self._base:
            self._base, self._base_at = transit, now
        elif now - self._base_at > 1.0:
            # 1 ms per second at most: tracks a sender clock running slow, ignores jitter.
            self._base = min(transit, self._base + 0.001 * (now - self._base_at))
            self._base_at = now

    def _restart(self, seq: int) -> None:
        self._held.clear()
        self._next = seq
        self._last = None
        self._transit = None
        self._base = None

    def _drain(self, now: float) -> None:
        """Release everything in sequence; arm (or keep) the gap timer if something is held."""
        assert self._next is not None
        while self._next in self._held:
            self._release(self._held.pop(self._next), now)
            self._next = (self._next + 1) & 0xFFFF
        if not self._held:
            self._cancel_timer()
            return
        if len(self._held) >= MAX_HELD:
            self._skip_gap()
            return
        if self._timer is None:
            delay = max(0.0, self._deadline() - now)
            self._timer = asyncio.get_running_loop().call_later(delay, self._on_timer)

    def _deadline(self) -> float:
        """When to give up on the missing packet ``self._next``: its due time (from the
        fastest transit and its media time) plus ``wait``, and never later than ``MAX_WAIT``
        after the oldest held packet arrived."""
        assert self._next is not None
        nxt = self._next
        first = min(self._held, key=lambda s: _seq_delta(s, nxt))
        _, _, _, ts = self._held[first]
        oldest = min(item[2] for item in self._held.values())
        latest = oldest + MAX_WAIT
        if self._base is None:
            return oldest + self.wait
        missing_ts = ts - _seq_delta(first, nxt) * self._samples_per_packet
        due = self._base + missing_ts / self._rate
        return min(latest, due + self.wait)

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _on_timer(self) -> None:
        self._timer = None
        if not self.closed and self._held:
            self._skip_gap()

    def _skip_gap(self) -> None:
        """Conceal the missing packets up to the oldest held one, then release what follows."""
        assert self._next is not None
        self._cancel_timer()
        first = min(self._held, key=lambda s: _seq_delta(s, self._next or 0))
        missing = _seq_delta(first, self._next)
        for _ in range(missing):
            self._conceal()
        self._next = first
        self._drain(self._clock())

    def _release(self, item: tuple[int, bytes, float, int], now: float) -> None:
        payload_type, payload, arrived, _ = item
        if now > arrived:
            self.stats.held_seconds += now - arrived
            self.stats.held_packets += 1
        pcm = self._decode(payload_type, payload)
        if pcm is None:
            return
        self._last = pcm
        self._conceal_gain = 1.0
        self._sink(pcm, now)

    def _decode(self, payload_type: int, payload: bytes) -> Pcm | None:
        decoder = self._decoders.get(payload_type)
        if decoder is None:
            name, rate = self._codecs.get(payload_type, ("opus", SAMPLE_RATE))
            try:
                decoder = self._decoders[payload_type] = _Decoder(name, rate)
            except ValueError as exc:
                self.stats.decode_errors += 1
                logger.warning("model audio: %s", exc)
                return None
        try:
            return decoder.decode(payload)
        except av.FFmpegError as exc:
            self.stats.decode_errors += 1
            logger.debug("model audio packet did not decode: %s", exc)
            return None

    def _conceal(self) -> None:
        self.stats.concealed += 1
        last = self._last
        if last is None or self._conceal_gain < 0.05:
            pcm = np.zeros(FRAME_SAMPLES, dtype=np.int16)
        else:
            pcm = (last * self._conceal_gain).astype(np.int16)
            self._conceal_gain *= CONCEAL_FADE
        self._sink(pcm, self._clock())


class Impairment:
    """Loss and jitter applied to the model's packets before the playout (tests and the latency
    benchmark's impaired mode): each packet is dropped with probability ``loss``, the others
    delayed by a uniform 0..2x``jitter`` seconds (``jitter`` either side of its mean)."""

    def __init__(self, loss: float, jitter: float, seed: int = 0) -> None:
        import random

        if not 0.0 <= loss < 1.0 or not 0.0 <= jitter <= 1.0:
            raise ValueError("impairment: loss must be in [0, 1) and jitter in [0, 1] s")
        self.loss = loss
        self.jitter = jitter
        self._random = random.Random(seed)  # reproducible impairment, not crypto
        self.dropped = 0

    def apply(self, deliver: Callable[[], None]) -> asyncio.TimerHandle | None:
        if self._random.random() < self.loss:
            self.dropped += 1
            return None
        delay = self._random.uniform(0.0, 2 * self.jitter)
        return asyncio.get_running_loop().call_later(delay, deliver)


@dataclass(frozen=True)
class TappedPacket:
    seq: int
    timestamp: int
    payload_type: int
    payload: bytes
    codec: str  # "opus", "PCMU", ...
    clock_rate: int


class RtpTap:
    """Replaces the jitter buffer of an aiortc ``RTCRtpReceiver`` (audio) with ``on_packet``.

    aiortc still does everything before its jitter buffer (SRTP, routing, payload type check,
    RTX, receiver statistics and RTCP reports); from there on the packets are ours. aiortc's
    decoder thread stays idle and its track only reports the end of the stream.
    """

    _ATTR = "_RTCRtpReceiver__jitter_buffer"
    _CODECS = "_RTCRtpReceiver__codecs"

    def __init__(
        self,
        receiver: Any,
        on_packet: Callable[[TappedPacket], None],
        impairment: Impairment | None = None,
    ) -> None:
        if not hasattr(receiver, self._ATTR):
            raise RuntimeError("this aiortc version's receiver cannot be tapped")
        self._receiver = receiver
        self._on_packet = on_packet
        self._impairment = impairment
        self._pending: set[asyncio.TimerHandle] = set()
        self._closed = False
        setattr(receiver, self._ATTR, self)
        self.capacity = 16

    def add(self, packet: Any) -> tuple[bool, None]:
        """aiortc's jitter buffer interface: called with each depayloaded packet."""
        if self._closed:
            return False, None
        codecs: dict[int, Any] = getattr(self._receiver, self._CODECS, {})
        codec = codecs.get(packet.payload_type)
        tapped = TappedPacket(
            seq=packet.sequence_number,
            timestamp=packet.timestamp,
            payload_type=packet.payload_type,
            payload=bytes(packet.payload),
            codec=codec.name if codec is not None else "opus",
            clock_rate=codec.clockRate if codec is not None else SAMPLE_RATE,
        )
        if self._impairment is None:
            self._on_packet(tapped)
            return False, None
        handles: list[asyncio.TimerHandle] = []

        def deliver() -> None:
            for h in handles:
                self._pending.discard(h)
            if not self._closed:
                self._on_packet(tapped)

        handle = self._impairment.apply(deliver)
        if handle is not None:
            handles.append(handle)
            self._pending.add(handle)
        return False, None

    def remove(self, count: int) -> None:  # part of the interface aiortc may call
        return

    def close(self) -> None:
        self._closed = True
        for handle in self._pending:
            handle.cancel()
        self._pending.clear()


__all__ = ["AudioPlayout", "Impairment", "PlayoutStats", "RtpTap", "TappedPacket"]
