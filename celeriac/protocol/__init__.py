"""The wire contract shared by the SDK, the worker runtime and the operator.

Only the standard library and pydantic are imported here, so every layer can
depend on it. ``docs/protocol.md`` describes the same contract for other languages.
"""
