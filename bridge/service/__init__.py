"""The service side (``room-bridge serve``): decides which rooms get the agent and runs them.

``server`` is the HTTP face (webhooks, dispatch API, probes, metrics), ``http_guard`` what it
refuses; ``dispatch``, ``reconcile`` and ``eligibility`` decide which rooms qualify;
``livekit_api`` is the one client of LiveKit's server API; ``agent_worker`` (``agent_socket`` +
``agent_jobs`` + ``orphan_jobs``) is LiveKit agent dispatch; ``start_checks`` asks LiveKit and the
model service at start; ``workers`` runs rooms in child processes; ``local_rooms`` runs them in
this one.

May import: ``bridge.room``, ``bridge.realtime``, ``bridge.settings``, ``bridge.billing`` and the
shared plumbing.
Never imports ``bridge.local`` or ``bridge.emulator``.
"""
