"""The hub: the fleet's node registry, its text protocol and JSON API (seed 000)."""

from smartget.hub.registry import Node, Registry

__all__ = ["Node", "Registry"]
