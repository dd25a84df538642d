"""The service side (``room-bridge serve``): decides which rooms get the agent and runs them.

``server`` is the HTTP face (webhooks, dispatch API, probes, metrics); ``dispatch`` and
``eligibility`` decide which rooms qualify; ``workers`` runs rooms in child processes;
``local_rooms`` runs them in this one.

May import: ``bridge.room``, ``bridge.realtime``, ``bridge.settings``, ``bridge.billing`` and the
shared plumbing.
Never imports ``bridge.local`` or ``bridge.emulator``.
"""
