"""SmartGet's exceptions, one tree for the whole package.

Catch ``SmartGetError`` to catch anything SmartGet raises on purpose. Errors split, as
in h11, into "the peer sent garbage" (``ProtocolError``: the object that raised is still
usable, the reply to send is in ``hint``) and "you asked for something impossible"
(everything else)::

    SmartGetError
    ├── ConfigError                 bad flag, bad TOML, unknown key
    ├── StoreError                  SQLite store could not be opened or written
    ├── StartupError                a service did not start (exited, or not ready in time)
    ├── ProtocolError               a peer sent bytes we cannot accept (has .hint)
    │   ├── TextProtocolError       hub: backtick datahub protocol
    │   ├── BencodeError            bencoded data (tracker, torrents)
    │   ├── KRPCError               dht: KRPC message (has .code, BEP 5 201-204)
    │   ├── XmlRpcError             hub: co2 relay XML-RPC message (has .code)
    │   └── DatapackError           mesh: MSW Datapack
    ├── RegistryError               hub: node registry refused an operation
    │   ├── NodeExistsError         that ip+port is already registered
    │   ├── NodeNotFoundError       no such node id / ip+port
    │   └── NotPermittedError       the caller may not touch that node
    ├── RelayError                  hub: co2 relay registry refused an operation
    │   ├── RelayFullError          max_satellites are registered
    │   ├── SatelliteNotFoundError  no satellite has that host_id
    │   ├── RelayNotPermittedError  the caller is not at the host_id it acts for
    │   ├── RelayBusyError          the relay's queue is full: try again later
    │   └── CallFailed              a call to a satellite returned no value (has .fault)
    ├── TrackerError                hub: tracker refused an announce or scrape
    ├── CollectorError              hub: a status report that cannot be accepted
    ├── NodeAgentError              node: a task failed
    │   ├── TaskError               a task body is malformed
    │   │   └── MagnetError         a magnet URI or info-hash is malformed or refused
    │   ├── HubError                the hub refused the node or could not be reached
    │   ├── FetchError              an HTTP fetch failed or was cut short
    │   │   └── FetchRefusedError   the fetch policy refused an address (--fetch-allow)
    │   ├── TorrentError            libtorrent refused a torrent
    │   └── UnsafePathError         a path from a request escapes its root
    ├── DHTError                    dht: a lookup or bootstrap failed
    ├── PushError                   push: could not start (no hub, no nodes, no seed)
    ├── JobError                    hub: a push job request that cannot be accepted
    │   └── JobNotFoundError        no job has that id
    ├── MeshError                   mesh: routing, TLS or authorization
    │   ├── AuthError               a peer failed authentication or authorization
    │   ├── RouteError              no route to the destination
    │   └── UpdateError             a code update was refused (signature, version, paths)
    └── TranscodeError              transcode: ffmpeg or a worker failed
"""

from __future__ import annotations

__all__ = [
    "AuthError",
    "BencodeError",
    "CallFailed",
    "CollectorError",
    "ConfigError",
    "DHTError",
    "DatapackError",
    "FetchError",
    "FetchRefusedError",
    "HubError",
    "HubUnreachableError",
    "JobError",
    "JobNotFoundError",
    "KRPCError",
    "MagnetError",
    "MeshError",
    "NodeAgentError",
    "NodeExistsError",
    "NodeNotFoundError",
    "NotPermittedError",
    "ProtocolError",
    "PushError",
    "RegistryError",
    "RelayBusyError",
    "RelayError",
    "RelayFullError",
    "RelayNotPermittedError",
    "RouteError",
    "SatelliteNotFoundError",
    "SmartGetError",
    "StartupError",
    "StoreError",
    "TaskError",
    "TextProtocolError",
    "TorrentError",
    "TrackerError",
    "TranscodeError",
    "UnsafePathError",
    "UpdateError",
    "XmlRpcError",
]


class SmartGetError(Exception):
    """Base class of every error SmartGet raises on purpose."""


class ConfigError(SmartGetError):
    """A setting is missing, malformed or unknown."""


class StoreError(SmartGetError):
    """The SQLite store could not be opened, read or written."""


class StartupError(SmartGetError):
    """A service (a process of the local demo fleet) exited or was not ready in time."""


class ProtocolError(SmartGetError):
    """A peer sent bytes we cannot accept.

    ``hint`` is the short reason to send back to the peer. The parser that raised stays
    usable unless its own documentation says it closed.
    """

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.hint = hint if hint is not None else message


class TextProtocolError(ProtocolError):
    """The hub's backtick protocol: a malformed, oversized or unknown command."""


class BencodeError(ProtocolError):
    """Bencoded data that is malformed, too large or of the wrong shape."""


class KRPCError(ProtocolError):
    """A KRPC message we cannot accept; ``code`` is the BEP 5 error code to answer with."""

    def __init__(self, message: str, code: int = 203, hint: str | None = None) -> None:
        super().__init__(message, hint)
        self.code = code


class XmlRpcError(ProtocolError):
    """Bytes that are not an acceptable XML-RPC message; ``code`` is the fault code
    (default -32700, "parse error", of the XML-RPC fault code conventions)."""

    def __init__(self, message: str, code: int = -32700) -> None:
        super().__init__(message)
        self.code = code


class DatapackError(ProtocolError):
    """An MSW Datapack that is malformed or over a limit."""


class RegistryError(SmartGetError):
    """The node registry refused an operation."""


class NodeExistsError(RegistryError):
    """A node with that ip and port is already registered."""


class NodeNotFoundError(RegistryError):
    """No node has that id, or that ip and port."""


class NotPermittedError(RegistryError):
    """The caller may not change that node (only the node's own IP may)."""


class RelayError(SmartGetError):
    """The co2 relay registry refused an operation."""


class RelayFullError(RelayError):
    """The relay already holds ``max_satellites`` satellites."""


class SatelliteNotFoundError(RelayError):
    """No satellite with that host_id is registered (seed: ``_verify_registration``)."""


class RelayNotPermittedError(RelayError):
    """The caller's address is not the one in the host_id it acts for."""


class RelayBusyError(RelayError):
    """The limiter's queue is full: try again later (nothing queued was dropped)."""


class CallFailed(RelayError):
    """A call to a satellite did not return a value; ``fault`` is set (an
    ``xmlrpc.client.Fault``) if it answered with an XML-RPC fault: alive, but refused."""

    def __init__(self, message: str, fault: Exception | None = None) -> None:
        super().__init__(message)
        self.fault = fault


class TrackerError(SmartGetError):
    """The tracker refused an announce or scrape."""


class CollectorError(SmartGetError):
    """A status report (``/report_peerstatus``) is malformed or over a limit."""


class NodeAgentError(SmartGetError):
    """A task on the edge node failed."""


class TaskError(NodeAgentError):
    """The task body is malformed; the message says what was expected and what came."""


class MagnetError(TaskError):
    """A download task's magnet URI or info-hash is malformed, too long or refused."""


class HubError(NodeAgentError):
    """The hub refused the node's registration or heartbeat, or could not be reached."""


class FetchError(NodeAgentError):
    """An HTTP fetch failed, or delivered fewer or more bytes than announced."""


class FetchRefusedError(FetchError):
    """A fetch (or a redirect) leads to an address the node's fetch policy refuses."""


class TorrentError(NodeAgentError):
    """libtorrent refused a torrent or a file."""


class UnsafePathError(NodeAgentError):
    """A path taken from a request escapes the root it must stay inside."""


class DHTError(SmartGetError):
    """A DHT operation (bootstrap, lookup, announce) failed."""


class PushError(SmartGetError):
    """The push could not start (no hub, no nodes, maketorrent failed)."""


class HubUnreachableError(PushError):
    """No hub named answered (connection refused, reset, timed out)."""


class JobError(SmartGetError):
    """A push job request that cannot be accepted (the message says what is wrong)."""


class JobNotFoundError(JobError):
    """No job has that id (never submitted, or forgotten past the hub's --max-jobs)."""


class MeshError(SmartGetError):
    """The mesh could not deliver, connect or authorize."""


class AuthError(MeshError):
    """A peer failed authentication (certificate) or authorization (per-app rules)."""


class RouteError(MeshError):
    """No route to the destination node."""


class UpdateError(MeshError):
    """An update package was refused: unsigned, tampered, not newer, or unsafe."""


class TranscodeError(SmartGetError):
    """ffmpeg or a transcoding worker failed."""
