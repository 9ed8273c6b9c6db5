"""The hub: the fleet's node registry, its text protocol and JSON API (seed 000)."""

from smartget import native

native.enable(__path__)  # the tracker compiled with mypyc, if built for these sources

from smartget.hub.registry import Node, Registry  # noqa: E402

__all__ = ["Node", "Registry"]
