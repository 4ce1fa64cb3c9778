"""A real local environment: Kubernetes control plane, kwok nodes and NATS on loopback."""
