"""Celeriac: a Kubernetes-native distributed task queue on NATS JetStream."""

__version__ = "0.1.0"
