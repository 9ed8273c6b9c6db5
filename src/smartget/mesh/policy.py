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

Replays (issue 12, item 1): a signature covers the packet's final destination
(``dest``, :func:`final_destination`), its app, method, flag and signed time; every
relayed signed packet is checked, whatever its app, and refused when the signature
fails, is older than ``replay_window`` or names another node (:func:`check_destination`).
That it runs only once is replay.py's (signer, flag) cache.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from smartget.errors import AuthError
from smartget.mesh.datapack import Datapack

__all__ = [
    "CLOSED_APPS",
    "Policy",
    "Verify",
    "check_destination",
    "final_destination",
    "relayed_signature",
    "safe_relpath",
]

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


def final_destination(to: str) -> str:
    """What a signature names as the destination of a packet sent with ``to``.

    The last hop (``a&b&c`` -> ``c``); for a broadcast, the node whose direct peers it
    is for (``a&b&*`` -> ``b&*``; ``*`` alone: the signer's own peers).
    """
    hops = [hop for hop in to.split("&") if hop]
    if not hops:
        return ""
    if hops[-1] == "*":
        return f"{hops[-2]}&*" if len(hops) > 1 else "*"
    return hops[-1]


def relayed_signature(dp: Datapack, sender: str | None) -> bool:
    """True when ``dp`` came through a proxy and carries a signature to check."""
    return sender is not None and dp.head.get("id") != sender and "sig" in dp.head


def check_destination(dp: Datapack, node_id: str, sender: str, signer: str) -> None:
    """:class:`AuthError` unless the signed ``dest`` of a relayed ``dp`` is this node.

    ``*`` is for the signer's direct peers (so never relayed); ``X&*`` for X's direct
    peers, so it must come in on the link from X.
    """
    dest = dp.head.get("dest", "")
    if dest == node_id or (dest.endswith("&*") and dest[:-2] == sender):
        return
    raise AuthError(
        f"packet {dp.flag!r} signed by {signer!r} names destination {dest[:70]!r}, "
        f"not {node_id!r} (via {sender!r}): refused as a replay"
    )


@dataclass(frozen=True)
class Policy:
    """The authorization rules of one node.

    ``replay_window``: a signature whose time is further than that from now is
    refused (the replay cache keeps each signed flag that long).
    """

    node_id: str
    allow: Mapping[str, Sequence[str]] = field(default_factory=dict)
    replay_window: float = 600.0

    def must_sign(self, dp: Datapack, direct_peers: Collection[str]) -> bool:
        """True when a packet this node originates must carry its signature."""
        to = dp.head.get("to", "")
        if not to or final_destination(to) == self.node_id:
            return False  # stays on this node
        last = to.rsplit("&", 1)[-1]
        return "&" in to or (last != "*" and last not in direct_peers) or dp.app in CLOSED_APPS

    def authorize(
        self, dp: Datapack, sender: str | None, *, app_verifies: bool, verify: Verify
    ) -> str | None:
        """The proven origin of ``dp`` (or None), or :class:`AuthError` if the app refuses it.

        ``sender`` is the peer whose link it came in on (None: a local app);
        ``app_verifies`` is the app's wish to know the origin of relayed packets (a
        signed relayed packet is now always checked; unsigned ones stay unproven).
        """
        if sender is None:
            return self.node_id
        claimed = dp.head.get("id")
        origin: str | None = sender if claimed == sender else None
        problem = f"{claimed!r} via {sender!r} is not signed"
        rule = self.allow.get(dp.app)
        closed = dp.app in CLOSED_APPS
        if relayed_signature(dp, sender):
            # Whatever the app: a signature that fails, is old or is for another node
            # is a forgery or a replay (issue 12, item 1).
            origin = verify(dp, self.replay_window)
            check_destination(dp, self.node_id, sender, origin)
        if rule is None:
            if not closed:
                return origin
            rule = []
        if origin is None:
            raise AuthError(f"app {dp.app!r} needs a proven sender: {problem}")
        if origin not in rule and "*" not in rule:
            raise AuthError(f"node {origin!r} may not use app {dp.app!r} on {self.node_id!r}")
        return origin
