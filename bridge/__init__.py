"""realtime-room-bridge: OpenAI Realtime speech-to-speech in LiveKit rooms."""

__version__ = "0.1.0"
