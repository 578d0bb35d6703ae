"""The worker runtime (engine-agnostic: it talks to the Broker and ResultBackend protocols)."""

from .worker import Worker

__all__ = ["Worker"]
