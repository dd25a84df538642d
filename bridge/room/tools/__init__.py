"""Tools the model may call: operators declare them in the settings (``bridge.settings.tools``),
one ``ToolRunner`` per session runs them.

``registry`` (the declared tools, argument validation), ``outcome`` (what the model is told),
``signing`` (Standard Webhooks), ``http`` (HTTP tools), ``rpc`` (LiveKit RPC on the human's own
app), ``builtins`` (``end_call``, ``leave_room``) and ``runner`` (when calls run and when their
outputs go back to the model).
"""
