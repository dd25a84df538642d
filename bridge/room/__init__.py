"""The room side: joins one LiveKit room as the agent and bridges its humans to model calls.

``worker`` (RoomWorker) follows the room's humans and tracks, and ``admission`` decides which
microphones get a session; ``session`` (ParticipantSession) is one human and their model calls,
kept up by its ``supervisor`` (with ``retry``), with a ``turns`` tracker of where the
conversation stands and its ``session_media``; ``media`` and ``uplink`` move frames between
LiveKit and aiortc; ``transcripts`` and ``agent_state`` publish what the agent hears, says and
does; ``tools`` runs the functions the model calls.

May import: ``bridge.realtime``, ``bridge.settings``, ``bridge.billing`` and the shared plumbing
at ``bridge``'s top level.
Never imports ``bridge.service``, ``bridge.local`` or ``bridge.emulator``.
"""
