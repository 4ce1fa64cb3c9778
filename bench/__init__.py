"""Benchmarks: Celeriac side by side with Celery + Redis and the raw nats-py ceiling.

Run ``python -m bench`` from the repository root (see docs/benchmarks.md). Every
contender runs in the same invocation on the same machine, so the ratios between
them are what the report stands on; absolute numbers move from machine to machine.
"""
