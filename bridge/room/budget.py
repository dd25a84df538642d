"""A room's spend and budget: sessions report their usage here, the room adds it up and acts
when its budget (``max_room_cost_usd``, lowered by room metadata if it asks) is passed.

At 80 % a warning is logged and counted; when the budget is passed the room is told once (a chat
message and the agent's ``bridge.notice`` attribute, in plain words) and then either stops
answering (``budget_action = listen``: sessions keep transcribing when that is priced) or leaves
(``leave``). Other rooms have budgets of their own and are unaffected.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from enum import Enum
from typing import Any

from bridge.billing.cost import Charge, Pricer, Spend, post
from bridge.metrics import BUDGET_EVENTS
from bridge.settings.config import Settings

logger = logging.getLogger(__name__)

WARN_AT = 0.8
# The room worker's end reason when it leaves over budget (the dispatcher does not rejoin).
BUDGET_SPENT = "budget exceeded"


class BudgetState(Enum):
    OK = "ok"
    WARNED = "warned"
    EXCEEDED = "exceeded"


def notice(settings: Settings, limit: float, spent: float) -> str:
    """What the room is told when its budget is passed."""
    what = (
        f"{settings.agent_name} is leaving the room"
        if settings.budget_action == "leave"
        else f"{settings.agent_name} will stop answering and only listen"
    )
    return (
        f"This room has used its AI budget (${spent:.2f} of ${limit:.2f}), "
        f"so {what} for the rest of this meeting."
    )


class SessionCost:
    """One session's share: prices its usage and books it (bridge/billing/cost.py ``post``) into
    the session's and the room's spend, and the process metrics."""

    def __init__(self, room: RoomCost, pricer: Pricer) -> None:
        self._room = room
        self._pricer = pricer
        self.spend = Spend()

    def response(self, usage: Mapping[str, Any]) -> Charge:
        """Book a response's usage; returns what it cost (for its span)."""
        charge = self._pricer.charge_response(usage)
        post(charge, self.spend, self._room.spend)
        self._room.check()
        return charge

    def transcription(self, usage: Mapping[str, Any] | None) -> None:
        if usage:
            post(self._pricer.charge_transcription(usage), self.spend, self._room.spend)
            self._room.check()

    @property
    def transcription_priced(self) -> bool:
        return self._pricer.transcription_priced

    def end(self) -> None:
        if self.spend.ended is None:
            self.spend.ended = time.monotonic()


class RoomCost:
    def __init__(
        self,
        settings: Settings,
        room_name: str,
        *,
        on_exceeded: Callable[[str], None],
    ) -> None:
        self.settings = settings
        self.limit = settings.max_room_cost_usd
        self.spend = Spend()
        self.state = BudgetState.OK
        self._on_exceeded = on_exceeded
        self._extra = {"room": room_name}

    def session(self) -> SessionCost:
        s = self.settings
        return SessionCost(self, Pricer(s.prices, s.model, s.transcription_model))

    @property
    def transcribes_when_exceeded(self) -> bool:
        """Listening on past the budget costs only transcription: kept when its price is known
        (it is counted and shown), dropped when it would be spent blind."""
        return self.session().transcription_priced

    @property
    def exceeded(self) -> bool:
        return self.state is BudgetState.EXCEEDED

    def check(self) -> None:
        """Called after every charge: warn at 80 %, act once when passed."""
        limit, spent = self.limit, self.spend.cost_usd
        if limit is None or spent is None or self.exceeded:
            return
        if spent > limit:
            self.state = BudgetState.EXCEEDED
            BUDGET_EVENTS.labels("exceeded").inc()
            logger.warning(
                "room budget passed: $%.6f of $%.6f; action %s",
                spent,
                limit,
                self.settings.budget_action,
                extra=self._extra,
            )
            self._on_exceeded(notice(self.settings, limit, spent))
        elif spent >= WARN_AT * limit and self.state is BudgetState.OK:
            self.state = BudgetState.WARNED
            BUDGET_EVENTS.labels("warning").inc()
            logger.warning(
                "room has spent %.0f %% of its budget ($%.6f of $%.6f)",
                100 * spent / limit,
                spent,
                limit,
                extra=self._extra,
            )

    def status(self) -> dict[str, Any]:
        return {
            **self.spend.summary(),
            "budget_usd": self.limit,
            "budget": self.state.value,
        }
