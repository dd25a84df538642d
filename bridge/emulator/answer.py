"""Answer SDP in the service's shape.

aiortc writes ICE credentials, fingerprints and candidates into every section. OpenAI's published
answer (tests/fixtures/openai-answer-example.sdp) carries them only in the first section of the
BUNDLE group, and no direction attribute (sendrecv is the default), so by default we strip
those from the others and drop ``a=sendrecv``: the client's normalisation then runs
over a real connection in every test. ``full`` leaves aiortc's answer as it is.
"""

from __future__ import annotations

_PER_TRANSPORT = (
    "a=ice-ufrag:",
    "a=ice-pwd:",
    "a=fingerprint:",
    "a=setup:",
    "a=candidate:",
    "a=end-of-candidates",
)


def shape_answer(sdp: str, shape: str) -> str:
    lines = [line for line in sdp.replace("\r\n", "\n").split("\n") if line]
    if shape == "full":
        return "\r\n".join(lines) + "\r\n"
    out: list[str] = []
    section = -1
    for line in lines:
        if line.startswith("m="):
            section += 1
        if section >= 1 and line.startswith(_PER_TRANSPORT):
            continue
        if line == "a=sendrecv":  # the default; the published answer leaves it out
            continue
        out.append(line)
    return "\r\n".join(out) + "\r\n"
