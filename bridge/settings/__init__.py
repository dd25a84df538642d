"""Configuration: ``Settings`` read from the environment and a TOML file, the tools an operator
declares (``tools``), and the settings reference generated from the fields (``doc``).

May import: ``bridge.billing`` (the price table is a setting) and the shared plumbing; never
``livekit``. Every other side imports it.
"""
