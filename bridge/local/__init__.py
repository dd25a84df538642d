"""The local stack: a livekit-server harness (find, build once, start on loopback) and
``room-bridge dev`` (livekit-server + emulator + serve + a simulated human).

May import every other side: it is the one place that wires them all together for a laptop.
Nothing outside the CLI (and tests) imports it.
"""
