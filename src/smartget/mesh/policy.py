"""Who may send what to which app on this node (issue 7, "Security"); pure rules, no I/O.

A packet's sender is proven by TLS when it comes straight from its origin (``id``
equals the link's certificate id), or by the origin's signature (``sig``/``cert``,
checked by the ``verify`` function the node passes in: ca.py) when it came through
proxies. ``allow`` maps an app to the node ids that may send to it (``*``: any proven
node). Apps not named are open to every member of the CA; ``shell`` and ``update`` are
closed unless named.

On the sending side the same rules say which packets to sign: whatever may pass a
proxy (a direct link proves the sender by TLS), and everything for the closed apps, so
a proxy cannot forge who sent it.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from smartget.errors import AuthError
from smartget.mesh.datapack import Datapack

__all__ = ["CLOSED_APPS", "Policy", "Verify", "safe_relpath"]

CLOSED_APPS = frozenset({"shell", "update"})

# verify(dp, max_age) -> the node id that signed dp, or AuthError; max_age in seconds
# (None: any age) refuses old signatures, which a proxy could replay.
Verify = Callable[[Datapack, float | None], str]


def safe_relpath(name: str) -> Path | None:
    """``name`` as a relative path that stays inside its root, or None (issue 7, "Files")."""
    if not name or "\x00" in name or name.startswith(("/", "\\")) or len(name) > 1024:
        return None
    parts = [p for p in re.split(r"[/\\]+", name) if p not in ("", ".")]
    if not parts or any(p == ".." or ":" in p for p in parts):
        return None
    return Path(*parts)


@dataclass(frozen=True)
class Policy:
    """The authorization rules of one node.

    ``replay_window`` is how long the router remembers flags: a signature older than
    that, on a closed or ruled app, could be a replay and is refused.
    """

    node_id: str
    allow: Mapping[str, Sequence[str]] = field(default_factory=dict)
    replay_window: float = 600.0

    def must_sign(self, dp: Datapack, direct_peers: Collection[str]) -> bool:
        """True when a packet this node originates must carry its signature."""
        to = dp.head.get("to", "")
        if not to:
            return False
        last = to.rsplit("&", 1)[-1]
        return "&" in to or (last != "*" and last not in direct_peers) or dp.app in CLOSED_APPS

    def authorize(
        self, dp: Datapack, sender: str | None, *, app_verifies: bool, verify: Verify
    ) -> str | None:
        """The proven origin of ``dp`` (or None), or :class:`AuthError` if the app refuses it.

        ``sender`` is the peer whose link it came in on (None: a local app);
        ``app_verifies`` is the app's wish to know the origin of relayed packets.
        """
        if sender is None:
            return self.node_id
        claimed = dp.head.get("id")
        origin: str | None = sender if claimed == sender else None
        problem = f"{claimed!r} via {sender!r} is not signed"
        rule = self.allow.get(dp.app)
        closed = dp.app in CLOSED_APPS
        if origin is None and (rule is not None or closed or app_verifies) and "sig" in dp.head:
            try:
                # Closed and ruled apps also refuse old signatures (replays by a proxy).
                max_age = self.replay_window if rule is not None or closed else None
                origin = verify(dp, max_age)
            except AuthError as exc:
                problem = str(exc)
        if rule is None:
            if not closed:
                return origin
            rule = []
        if origin is None:
            raise AuthError(f"app {dp.app!r} needs a proven sender: {problem}")
        if origin not in rule and "*" not in rule:
            raise AuthError(f"node {origin!r} may not use app {dp.app!r} on {self.node_id!r}")
        return origin
