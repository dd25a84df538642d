"""Loopback ports for local starts (``dev``, tests, benchmarks), without losing a port race.

A port that is picked, released and bound later by another process can be taken in between.
Two ways out, used where each fits:

- Our own servers never need a port number in advance: a *listener* (a socket bound to port 0
  and listening) is made by the parent and handed to the child (``serve --fd``), or the child
  binds port 0 and reports what it got (``emulator --port 0``).
- livekit-server needs its ports in its config file. ``free_port`` picks them *below* the
  kernel's ephemeral range (so no outgoing connection and no ``bind(("", 0))`` of anyone on the
  machine is handed the same port meanwhile), at random (so parallel test runs rarely meet), never
  twice in one process; the rare collision left is caught (``is_address_in_use``) and the whole
  start is retried with fresh ports (``bridge.local.livekit_server``).
"""

from __future__ import annotations

import collections
import random
import socket
import threading
from pathlib import Path

# Picked ports stay this far above the well-known and registered-but-common ranges.
LOWEST = 20000
_EPHEMERAL_RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")
_recent: collections.deque[int] = collections.deque(maxlen=512)
_lock = threading.Lock()
_random = random.SystemRandom()

# What a server says when its port was taken first (Go's net package, Python's OSError, aiohttp).
_IN_USE = ("address already in use", "errno 98", "eaddrinuse")


def ephemeral_range() -> tuple[int, int]:
    """The kernel's range for outgoing connections and port-0 binds (Linux; else IANA's)."""
    try:
        low, high = (int(x) for x in _EPHEMERAL_RANGE.read_text().split())
    except (OSError, ValueError):
        return 49152, 65535
    return low, high


def _candidates() -> range:
    low, high = ephemeral_range()
    if low - LOWEST >= 1000:
        return range(LOWEST, low)
    return range(max(high + 1, LOWEST), 65536) if 65535 - high >= 1000 else range(0)


def _bindable(port: int, kind: int) -> bool:
    with socket.socket(socket.AF_INET, kind) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    """A port on 127.0.0.1 that nothing is bound to right now, outside the ephemeral range,
    not handed out before by this process (until 512 others were)."""
    candidates = _candidates()
    with _lock:
        for _ in range(200 if candidates else 0):
            port = _random.choice(candidates)
            if port not in _recent and _bindable(port, kind):
                _recent.append(port)
                return port
        # No usable range (an odd kernel setting), or all 200 taken: let the kernel pick.
        for _ in range(200):
            with socket.socket(socket.AF_INET, kind) as sock:
                sock.bind(("127.0.0.1", 0))
                port = int(sock.getsockname()[1])
            if port not in _recent:
                _recent.append(port)
                return port
    raise OSError("no free loopback port found")


def loopback_listener() -> socket.socket:
    """A TCP socket listening on 127.0.0.1 on a port the kernel picked, inheritable, to hand to a
    child process (``pass_fds``): the port is ours from now on, no race. Close it after the
    child started."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.bind(("127.0.0.1", 0))
        sock.listen(128)
        sock.set_inheritable(True)
    except BaseException:
        sock.close()
        raise
    return sock


def is_address_in_use(text: str) -> bool:
    """Whether a server's output says it could not bind because the address was taken."""
    lowered = text.lower()
    return any(marker in lowered for marker in _IN_USE)
