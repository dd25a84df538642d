"""LiveKit agent dispatch: ``serve`` registers with LiveKit as an agent worker.

LiveKit's own way to bring an agent into a room is to name it and dispatch it: in a participant's
token (``RoomConfiguration.agents``) or with ``AgentDispatchService.CreateDispatch``. LiveKit's
dispatcher then offers the job to one registered worker of that name, chosen by load. This module
is that worker, speaking the protocol directly (protobuf ``WorkerMessage`` / ``ServerMessage``
over a WebSocket at ``<LIVEKIT_URL>/agent``; see shared docs "Agent dispatch"):

    worker -> server   register(JT_ROOM, agent_name)       server -> worker   register(worker_id)
                       availability(job_id, available,                        availability(job)
                         participant_identity, ...)                           assignment(job, token)
                       update_worker(status, load, jobs)                      termination(job_id)
                       update_job(job_id, status, error)

* An offer is answered at once, from memory: available unless draining or at ``max_sessions``
  (then LiveKit offers it to another worker). The identity is the bridge's deterministic agent
  identity for the room, so webhooks, reconcile and any number of dispatches give one agent per
  room; an offer for a room this process serves is acknowledged, not joined twice. The job's
  metadata is a JSON object of session overrides (like a room's ``"ai": {...}``); bad metadata is
  logged and ignored. Dispatched rooms are joined whatever the ``rooms`` policy says.
* The assignment starts the same join as a webhook or ``POST /dispatch`` (with our own agent
  token: same identity as the one LiveKit minted). ``update_job`` follows the room's life:
  running when joined, failed (with the error) when the join fails or the agent is disconnected
  by an error, success when the agent leaves normally.
* ``update_worker`` (load = sessions / ``max_sessions``; ``WS_FULL`` at capacity or while
  draining) is sent whenever it changes.
* A termination (after ``DeleteDispatch``) makes the agent leave that room. LiveKit also sends
  one when an agent participant of ours left the room; if our agent is in the room again (a
  worker process restarted) and the job's dispatch still exists, the agent stays.
* If the socket drops (livekit-server restarted, network), the worker registers again with
  exponential backoff and jitter; rooms already joined keep going. LiveKit cannot terminate the
  jobs of the old registration any more: their dispatches are looked up instead
  (bridge/service/orphan_jobs.py), and a job whose dispatch was deleted leaves its room.

LiveKit never re-dispatches a job whose worker died or that found every worker full: the
reconcile loop (bridge/service/reconcile.py) joins rooms with humans, no agent and a dispatch to
our agent name.

``AgentWorker`` is two objects: the connection and its registration
(bridge/service/agent_socket.py) and the job book (bridge/service/agent_jobs.py).
"""

from __future__ import annotations

from typing import Any

from bridge.service.agent_jobs import JobBook, job_outcome
from bridge.service.agent_socket import AgentSocket, agent_socket_url
from bridge.service.dispatch import Dispatcher
from bridge.service.livekit_api import LiveKitServerAPI
from bridge.settings.config import Settings


class AgentWorker:
    """This ``serve`` instance as one LiveKit agent worker: its socket and its job book."""

    def __init__(self, settings: Settings, dispatcher: Dispatcher, lkapi: LiveKitServerAPI) -> None:
        self.settings = settings
        self.socket = AgentSocket(settings)
        self.jobs = JobBook(settings, dispatcher, lkapi, self.socket)
        dispatcher.listeners.append(self.jobs)

    def start(self) -> None:
        self.socket.start(self.jobs)

    async def aclose(self) -> None:
        await self.jobs.aclose()
        await self.socket.aclose()

    def describe(self) -> dict[str, Any]:
        """For /status (no secrets)."""
        return {
            **self.socket.describe(),
            "agent_name": self.settings.agent_name,
            "jobs": self.jobs.describe(),
        }


__all__ = ["AgentWorker", "agent_socket_url", "job_outcome"]
