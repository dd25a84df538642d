"""ICE configuration for every aiortc peer connection (the bridge's model calls and the emulator).

Two knobs, both from Settings:

* ``ice_servers``: an explicit list, empty by default. aiortc falls back to a public STUN server
  when given no list at all, so we always pass one.
* ``ice_host_addresses``: the local addresses aioice may offer as host candidates. aioice gathers
  every interface address except 127.0.0.1 and has no option for it, so this module swaps its
  address lookup for one that returns the configured list. It is process-wide (aioice reads a
  module-level function); ``[]`` restores aioice's own behaviour. Tests set ``["127.0.0.1"]`` so
  that no packet leaves the machine.
"""

from __future__ import annotations

from collections.abc import Sequence

import aioice.ice
from aiortc import RTCConfiguration, RTCIceServer

from bridge.settings.config import Settings

_aioice_lookup = aioice.ice.get_host_addresses
_host_addresses: tuple[str, ...] = ()


def _configured_host_addresses(use_ipv4: bool, use_ipv6: bool) -> list[str]:
    if not _host_addresses:
        return _aioice_lookup(use_ipv4, use_ipv6)
    return [a for a in _host_addresses if (":" in a and use_ipv6) or (":" not in a and use_ipv4)]


def use_host_addresses(addresses: Sequence[str]) -> None:
    """Offer exactly ``addresses`` as host candidates from now on (process-wide)."""
    global _host_addresses  # noqa: PLW0603 - aioice reads a module-level function
    _host_addresses = tuple(addresses)
    aioice.ice.get_host_addresses = _configured_host_addresses


def rtc_configuration(settings: Settings) -> RTCConfiguration:
    """The peer connection configuration for ``settings``; applies ``ice_host_addresses``."""
    use_host_addresses(settings.ice_host_addresses)
    credential = settings.ice_credential.get_secret_value() if settings.ice_credential else None
    servers = [
        RTCIceServer(urls=url, username=settings.ice_username, credential=credential)
        for url in settings.ice_servers
    ]
    return RTCConfiguration(iceServers=servers)
