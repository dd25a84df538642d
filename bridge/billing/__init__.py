"""Models and money: the model table (``models``: what each model takes, holds and costs, and
whether OpenAI is retiring it), the price table with each row's source and date (``prices``),
and what usage costs, added up per session, room and process (``cost``).

May import: the shared plumbing only; never ``livekit``.
"""
