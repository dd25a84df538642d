"""realtime-room-bridge: OpenAI Realtime speech-to-speech in LiveKit rooms.

The folders follow the data path, from the room to the model:

    room/      joins one LiveKit room as the agent and bridges each human (or the whole room)
    realtime/  the model side: a Realtime API client over WebRTC; knows nothing of LiveKit
    service/   decides which rooms get the agent: webhooks, dispatch, worker processes, HTTP
    local/     the local stack: livekit-server harness and ``room-bridge dev``
    emulator/  a local stand-in for the Realtime API, for dev and tests
    settings/  configuration: Settings (environment + TOML), tools, the settings reference
    billing/   prices (with sources and dates) and what usage costs

Modules at this level are the plumbing every side shares (the audio format, logging, metrics,
task helpers, child processes, voice activity detection) and the entry points
(``cli``, ``commands``, ``__main__``), the only modules that may import every side and that no
other module may import. The import rules are checked by ``tests/unit/test_layout.py``.
"""

__version__ = "0.1.0"
