"""A local stand-in for the OpenAI Realtime API (HTTP + WebRTC + events + a fake model).

See docs/emulator.md for what it imitates and what it does not.
May import: ``bridge.realtime`` (wire helpers), ``bridge.settings``, ``bridge.billing`` and the
shared plumbing; never the room,
service or local sides, never ``livekit``.
"""
