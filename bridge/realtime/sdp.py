"""SDP answers as the service sends them, made acceptable to aiortc.

OpenAI's published answer (tests/fixtures/openai-answer-example.sdp) puts the ICE credentials
only in the first section of the BUNDLE group: the data channel section that shares its
transport carries none. RFC 8843 allows that for bundled sections, but aiortc 1.16 requires
``ice-ufrag``/``ice-pwd`` in every section it parses. Live answers may or may not repeat them, so
we copy the bundle's transport attributes into every bundled section that lacks them and leave
answers that already carry them unchanged.

The published answer also has no direction attribute. SDP's default is ``sendrecv`` (RFC 4566
section 6), but aiortc then leaves the transceiver's current direction unset and never starts
sending or receiving; so media sections without one get an explicit ``a=sendrecv``.
"""

from __future__ import annotations

from bridge.realtime.errors import RealtimeProtocolError

_DIRECTIONS = ("a=sendrecv", "a=sendonly", "a=recvonly", "a=inactive")

# Transport attributes shared by all sections of one BUNDLE group (RFC 8843 section 7).
_TRANSPORT_ATTRS = ("a=ice-ufrag:", "a=ice-pwd:", "a=fingerprint:", "a=setup:")


def _split(sdp: str) -> tuple[list[str], list[list[str]]]:
    lines = [line for line in sdp.replace("\r\n", "\n").split("\n") if line.strip()]
    session: list[str] = []
    sections: list[list[str]] = []
    for line in lines:
        if line.startswith("m="):
            sections.append([line])
        elif sections:
            sections[-1].append(line)
        else:
            session.append(line)
    return session, sections


def _mid(section: list[str]) -> str | None:
    for line in section:
        if line.startswith("a=mid:"):
            return line.removeprefix("a=mid:").strip()
    return None


def _share_transport(session: list[str], sections: list[list[str]]) -> None:
    bundle: list[str] = []
    for line in session:
        if line.startswith("a=group:BUNDLE"):
            bundle = line.split()[1:]
    bundled = [s for s in sections if _mid(s) in bundle]
    for attr in _TRANSPORT_ATTRS:
        # Attributes at session level apply to every section already; aiortc reads them there.
        if any(ln.startswith(attr) for ln in session):
            continue
        shared = next(
            ([ln for ln in s if ln.startswith(attr)] for s in bundled if _has(s, attr)), []
        )
        for section in bundled:
            if not _has(section, attr):
                section.extend(shared)


def _has(section: list[str], prefix: str | tuple[str, ...]) -> bool:
    return any(line.startswith(prefix) for line in section)


def _explicit_direction(session: list[str], sections: list[list[str]]) -> None:
    default = next((ln for ln in session if ln.startswith(_DIRECTIONS)), "a=sendrecv")
    for section in sections:
        if section[0].startswith(("m=audio", "m=video")) and not _has(section, _DIRECTIONS):
            section.append(default)


def normalize_answer(sdp: str) -> str:
    """Return ``sdp`` with every bundled section carrying the bundle's ICE/DTLS attributes and
    every media section an explicit direction.

    Raises RealtimeProtocolError when the answer is not usable at all.
    """
    if not sdp.lstrip().startswith("v=0"):
        raise RealtimeProtocolError("answer is not an SDP document")
    session, sections = _split(sdp)
    if not any(s[0].startswith("m=audio") for s in sections):
        raise RealtimeProtocolError("answer has no audio section")
    _share_transport(session, sections)
    _explicit_direction(session, sections)
    out = session + [line for section in sections for line in section]
    return "\r\n".join(out) + "\r\n"
