"""Money: the price table with each row's source and date (``prices``), and what usage costs,
added up per session, room and process (``cost``).

May import: the shared plumbing only; never ``livekit``.
"""
