"""The one error type of the local environment, with a message a person can act on."""


class DevenvError(RuntimeError):
    """Something the local environment needs is missing or failed to start."""
