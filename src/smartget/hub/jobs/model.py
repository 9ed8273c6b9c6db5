"""What a job is: its request, its records per file and per node, and their JSON.

Pure data, no I/O. A job's whole state is a :class:`Job`, saved as one JSON document
(:meth:`Job.to_dict` / :meth:`Job.from_dict`), so the store needs one row per job.
Times are wall-clock seconds (UNIX time), given by the caller as ``now``: a job
outlives the hub process, and a monotonic clock does not.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

from smartget.errors import JobError

__all__ = [
    "SOURCES",
    "CopyRecord",
    "CopyState",
    "FileRecord",
    "FileSpec",
    "FileState",
    "Job",
    "JobEvent",
    "JobSpec",
    "JobState",
    "NodeInfo",
    "NodeRecord",
    "parse_spec",
]

SOURCES = ("origin", "peer_same_zone", "peer_other_zone")
MAX_URLS = 1000
MAX_URL = 2048
MAX_NODES = 100_000
DEFAULT_DEADLINE = 3600.0
DEFAULT_ATTEMPTS = 2


class JobState(enum.Enum):
    QUEUED = "queued"  # waits for a running slot (--max-running-jobs) or free nodes
    RUNNING = "running"  # torrents being made, copies downloading or being checked
    DONE = "done"  # every copy on every node verified
    PARTIAL = "partial"  # some copies verified, some given up (each with its reason)
    FAILED = "failed"  # no copy verified
    CANCELLED = "cancelled"  # an operator cancelled it; downloads were stopped

    @property
    def final(self) -> bool:
        return self not in (JobState.QUEUED, JobState.RUNNING)


class FileState(enum.Enum):
    PENDING = "pending"  # the seed has not been asked to make its torrent yet
    STRIPING = "striping"  # every node fetches its stripe from the origin (prefetch out)
    MAKING = "making"  # a maketorrent command is out
    MADE = "made"  # the seed seeds it: sha1, size and torrent URL are known
    FAILED = "failed"  # maketorrent failed (every attempt): no copy of it can be made


class CopyState(enum.Enum):
    """One file on one node."""

    PENDING = "pending"  # waits for its torrent, or for its retry time
    STARTING = "starting"  # a download command is out
    DOWNLOADING = "downloading"  # the node runs it; its reports reach the collector
    COMPLETE = "complete"  # complete on the node; its check waits for a slot or reference
    VERIFYING = "verifying"  # a SHA-256 check (and a read of its byte sources) is out
    DONE = "done"  # complete and verified
    FAILED = "failed"  # given up (attempts spent, deadline); ``reason`` says why
    CANCELLED = "cancelled"  # the job was cancelled before it was done

    @property
    def final(self) -> bool:
        return self in (CopyState.DONE, CopyState.FAILED, CopyState.CANCELLED)


@dataclass(frozen=True)
class FileSpec:
    url: str
    sha256: str = ""  # expected digest (a manifest's); empty: the seed's copy is the reference


@dataclass(frozen=True)
class JobSpec:
    """What ``POST /api/jobs`` asks for."""

    files: tuple[FileSpec, ...]
    zones: tuple[str, ...] = ()
    nodes: int | None = None  # how many nodes, the seed included (None: all that match)
    node_ids: tuple[int, ...] = ()  # these nodes instead of a count
    priority: int = 0  # higher runs first
    deadline: float = DEFAULT_DEADLINE  # seconds from the job's start
    upload_limit: int = 0  # bytes/s per node for this job's torrents (0: the node's own)
    seed: str = ""  # a nodeid or IP to be the seed (default: most free capacity)
    attempts: int = DEFAULT_ATTEMPTS  # per copy, before it is given up
    pin: float = 0.0  # seconds the nodes keep the files from cache eviction after the job
    # Each node fetches its own stripe from the origin at once, the torrent made from the
    # origin's torrent (pipelined) or from their digests; False: the seed fetches the
    # whole file, then the others start.
    striped: bool = True

    def to_dict(self) -> dict[str, Any]:
        return {
            "files": [{"url": f.url, "sha256": f.sha256} for f in self.files],
            "zones": list(self.zones),
            "nodes": self.nodes,
            "node_ids": list(self.node_ids),
            "priority": self.priority,
            "deadline": self.deadline,
            "upload_limit": self.upload_limit,
            "seed": self.seed,
            "attempts": self.attempts,
            "pin": self.pin,
            "striped": self.striped,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> JobSpec:
        return cls(
            files=tuple(FileSpec(f["url"], f.get("sha256", "")) for f in data["files"]),
            zones=tuple(data.get("zones", ())),
            nodes=data.get("nodes"),
            node_ids=tuple(data.get("node_ids", ())),
            priority=int(data.get("priority", 0)),
            deadline=float(data.get("deadline", DEFAULT_DEADLINE)),
            upload_limit=int(data.get("upload_limit", 0)),
            seed=str(data.get("seed", "")),
            attempts=int(data.get("attempts", DEFAULT_ATTEMPTS)),
            pin=float(data.get("pin", 0.0)),
            striped=bool(data.get("striped", False)),  # jobs saved before stripes: whole
        )


def _is_hex(text: str, length: int) -> bool:
    return len(text) == length and all(c in "0123456789abcdef" for c in text)


def parse_spec(
    *,
    urls: list[str] | None = None,
    files: list[dict[str, str]] | None = None,
    zones: list[str] | None = None,
    nodes: int | None = None,
    node_ids: list[int] | None = None,
    priority: int = 0,
    deadline: float | None = None,
    upload_limit: int = 0,
    seed: str = "",
    attempts: int = DEFAULT_ATTEMPTS,
    pin: float = 0.0,
    striped: bool = True,
) -> JobSpec:
    """A checked :class:`JobSpec`; :class:`JobError` says what is wrong with the request."""
    wanted: list[FileSpec] = [FileSpec(u) for u in urls or ()]
    for entry in files or ():
        wanted.append(FileSpec(str(entry.get("url", "")), str(entry.get("sha256", "")).lower()))
    if not wanted:
        raise JobError("a job needs at least one URL (urls, or files with url and sha256)")
    if len(wanted) > MAX_URLS:
        raise JobError(f"a job takes at most {MAX_URLS} files, got {len(wanted)}")
    seen: set[str] = set()
    for f in wanted:
        if not f.url.startswith(("http://", "https://")) or len(f.url) > MAX_URL:
            raise JobError(f"not an http(s) URL of at most {MAX_URL} characters: {f.url[:80]!r}")
        if f.url in seen:
            raise JobError(f"{f.url} is listed twice")
        seen.add(f.url)
        if f.sha256 and not _is_hex(f.sha256, 64):
            raise JobError(f"sha256 of {f.url} must be 64 hex digits, got {f.sha256[:80]!r}")
    if nodes is not None and node_ids:
        raise JobError("give nodes (a count) or node_ids, not both")
    if nodes is not None and not 1 <= nodes <= MAX_NODES:
        raise JobError(f"nodes must be 1 to {MAX_NODES}, got {nodes}")
    if deadline is not None and not 1 <= deadline <= 30 * 86400:
        raise JobError(f"deadline must be 1 s to 30 days, got {deadline}")
    if not 1 <= attempts <= 10:
        raise JobError(f"attempts must be 1 to 10, got {attempts}")
    if upload_limit < 0 or pin < 0:
        raise JobError("upload_limit and pin must be >= 0")
    return JobSpec(
        files=tuple(wanted),
        zones=tuple(zones or ()),
        nodes=nodes,
        node_ids=tuple(node_ids or ()),
        priority=priority,
        deadline=DEFAULT_DEADLINE if deadline is None else float(deadline),
        upload_limit=upload_limit,
        seed=seed,
        attempts=attempts,
        pin=pin,
        striped=striped,
    )


@dataclass(frozen=True)
class NodeInfo:
    """A node of the fleet as the registry lists it (the input to choosing nodes)."""

    node_id: int
    ip: str
    zone: str
    status: int  # free capacity; -1 is a zombie
    api_url: str
    files_url: str

    @property
    def nodeid(self) -> str:
        """Seed 003's NodeID: ZONE_IP (what the node puts in its reports)."""
        return f"{self.zone}_{self.ip}"


@dataclass
class FileRecord:
    url: str
    sha256: str = ""  # the reference digest: expected, or the seed's verified copy's
    state: FileState = FileState.PENDING
    sha1: str = ""
    filesize: int = 0
    torrent_url: str = ""
    reason: str = ""
    attempts: int = 0
    retry_at: float = 0.0
    command_deadline: float = 0.0
    origin_bytes: int | None = None  # a smartget origin's own count, when it has one
    striped: bool = False  # its torrent is made from the nodes' stripes (JobSpec.striped)
    piece_length: int = 0  # striped: the pieces' length, and their SHA-1 digests (hex),
    pieces: str = ""  # all stripes joined; kept only until the torrent is made
    # Pipelined (striped, tried first): the seed makes the torrent from the one the origin
    # publishes (<url>.torrent) and each node fetches its stripe while trading.
    pipelined: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "url": self.url,
            "sha256": self.sha256,
            "state": self.state.value,
            "sha1": self.sha1,
            "filesize": self.filesize,
            "torrent_url": self.torrent_url,
            "reason": self.reason,
            "attempts": self.attempts,
            "retry_at": self.retry_at,
            "command_deadline": self.command_deadline,
            "origin_bytes": self.origin_bytes,
            "striped": self.striped,
            "piece_length": self.piece_length,
            "pieces": self.pieces,
            "pipelined": self.pipelined,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> FileRecord:
        return cls(**{**d, "state": FileState(d["state"])})


def _no_bytes() -> dict[str, int]:
    return dict.fromkeys(SOURCES, 0)


@dataclass
class CopyRecord:
    """One file on one node."""

    state: CopyState = CopyState.PENDING
    attempts: int = 0  # download attempts started
    reason: str = ""  # why it failed, or why it fell back to the origin
    history: list[str] = field(default_factory=list)  # the reason of each failed attempt
    percent: float = 0.0
    started_at: float = 0.0  # wall clock of the current attempt's download command
    done_at: float | None = None  # seconds from the job's start to complete on the node
    progress_at: float = 0.0  # when percent last moved
    retry_at: float = 0.0
    command_deadline: float = 0.0
    verified: bool | None = None
    bytes: dict[str, int] = field(default_factory=_no_bytes)
    # Striped: the pieces [first, end) this node fetched from the origin, their bytes and
    # digests (hex, kept until the file's torrent is made), and what the origin said of
    # the file (size, piece length, ETag, Last-Modified): every stripe must agree.
    stripe: tuple[int, int] | None = None
    stripe_bytes: int = 0
    stripe_pieces: str = ""
    stripe_of: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "state": self.state.value,
            "attempts": self.attempts,
            "reason": self.reason,
            "history": list(self.history),
            "percent": self.percent,
            "started_at": self.started_at,
            "done_at": self.done_at,
            "progress_at": self.progress_at,
            "retry_at": self.retry_at,
            "command_deadline": self.command_deadline,
            "verified": self.verified,
            "bytes": dict(self.bytes),
            "stripe": None if self.stripe is None else list(self.stripe),
            "stripe_bytes": self.stripe_bytes,
            "stripe_pieces": self.stripe_pieces,
            "stripe_of": self.stripe_of,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> CopyRecord:
        stripe = d.get("stripe")
        return cls(
            **{
                **d,
                "state": CopyState(d["state"]),
                "stripe": None if stripe is None else (int(stripe[0]), int(stripe[1])),
            }
        )


@dataclass
class NodeRecord:
    info: NodeInfo
    role: str  # "seed" or "peer"
    copies: list[CopyRecord]
    ping_failures: int = 0
    ping_due: float = 0.0
    pinging: bool = False

    @property
    def nodeid(self) -> str:
        return self.info.nodeid

    @property
    def state(self) -> str:
        """The node's state in the job: one of the job states' names."""
        states = {c.state for c in self.copies}
        if states <= {CopyState.PENDING} and not any(c.attempts for c in self.copies):
            return JobState.QUEUED.value
        if not all(s.final for s in states):
            return JobState.RUNNING.value
        if states == {CopyState.DONE}:
            return JobState.DONE.value
        if CopyState.DONE in states:
            return JobState.PARTIAL.value
        if CopyState.CANCELLED in states:
            return JobState.CANCELLED.value
        return JobState.FAILED.value

    @property
    def reason(self) -> str:
        return "; ".join(dict.fromkeys(c.reason for c in self.copies if c.reason))

    def bytes(self) -> dict[str, int]:
        return {s: sum(c.bytes[s] for c in self.copies) for s in SOURCES}

    def to_dict(self) -> dict[str, Any]:
        i = self.info
        return {
            "node": [i.node_id, i.ip, i.zone, i.status, i.api_url, i.files_url],
            "role": self.role,
            "copies": [c.to_dict() for c in self.copies],
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> NodeRecord:
        info = NodeInfo(*d["node"])
        return cls(info, d["role"], [CopyRecord.from_dict(c) for c in d["copies"]])


@dataclass(frozen=True)
class JobEvent:
    """Something that happened to a job; ``seq`` counts from 1 within the job."""

    job_id: str
    seq: int
    at: float
    kind: str  # "queued", "started", "made", "downloading", "complete", "verified", ...
    text: str
    nodeid: str = ""
    file: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "at": self.at,
            "kind": self.kind,
            "text": self.text,
            "nodeid": self.nodeid,
            "file": self.file,
        }

    @classmethod
    def from_dict(cls, job_id: str, d: dict[str, Any]) -> JobEvent:
        return cls(job_id, d["seq"], d["at"], d["kind"], d["text"], d["nodeid"], d["file"])


@dataclass
class Job:
    id: str
    order: int  # submission order: FIFO among equal priorities
    spec: JobSpec
    created_at: float
    state: JobState = JobState.QUEUED
    reason: str = ""
    started_at: float | None = None
    ended_at: float | None = None
    files: list[FileRecord] = field(default_factory=list)
    nodes: list[NodeRecord] = field(default_factory=list)
    stops: list[tuple[str, str]] = field(default_factory=list)  # (nodeid, sha1) to shut down
    last_seq: int = 0  # the last event's seq

    @property
    def makespan(self) -> float:
        """Start to the last copy complete on its node (seconds)."""
        times = [c.done_at for n in self.nodes for c in n.copies if c.done_at is not None]
        return max(times, default=0.0)

    def node(self, nodeid: str) -> NodeRecord | None:
        return next((n for n in self.nodes if n.nodeid == nodeid), None)

    def to_dict(self) -> dict[str, Any]:
        """The stored document (every field, internal ones included)."""
        return {
            "id": self.id,
            "order": self.order,
            "spec": self.spec.to_dict(),
            "created_at": self.created_at,
            "state": self.state.value,
            "reason": self.reason,
            "started_at": self.started_at,
            "ended_at": self.ended_at,
            "files": [f.to_dict() for f in self.files],
            "nodes": [n.to_dict() for n in self.nodes],
            "stops": [list(s) for s in self.stops],
            "last_seq": self.last_seq,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Job:
        return cls(
            id=d["id"],
            order=d["order"],
            spec=JobSpec.from_dict(d["spec"]),
            created_at=d["created_at"],
            state=JobState(d["state"]),
            reason=d["reason"],
            started_at=d["started_at"],
            ended_at=d["ended_at"],
            files=[FileRecord.from_dict(f) for f in d["files"]],
            nodes=[NodeRecord.from_dict(n) for n in d["nodes"]],
            stops=[(a, b) for a, b in d["stops"]],
            last_seq=d["last_seq"],
        )

    def view(self) -> dict[str, Any]:
        """What ``GET /api/jobs/{id}`` answers."""
        spec = self.spec
        return {
            "id": self.id,
            "state": self.state.value,
            "reason": self.reason,
            "priority": spec.priority,
            "created_at": self.created_at,
            "started_at": self.started_at,
            "ended_at": self.ended_at,
            "deadline": spec.deadline,
            "zones": list(spec.zones),
            "makespan": self.makespan,
            "last_seq": self.last_seq,
            "files": [
                {
                    "url": f.url,
                    "state": f.state.value,
                    "sha1": f.sha1,
                    "filesize": f.filesize,
                    "sha256": f.sha256,
                    "reason": f.reason,
                    "origin_bytes": f.origin_bytes,
                    "striped": f.striped,
                    "pipelined": f.pipelined,
                }
                for f in self.files
            ],
            "nodes": [
                {
                    "nodeid": n.nodeid,
                    "node_id": n.info.node_id,
                    "ip": n.info.ip,
                    "zone": n.info.zone,
                    "role": n.role,
                    "state": n.state,
                    "reason": n.reason,
                    "bytes": n.bytes(),
                    "files": [
                        {
                            "state": c.state.value,
                            "percent": c.percent,
                            "attempts": c.attempts,
                            "done_at": c.done_at,
                            "verified": c.verified,
                            "reason": c.reason,
                            "history": list(c.history),
                            "bytes": dict(c.bytes),
                            "stripe_bytes": c.stripe_bytes,
                        }
                        for c in n.copies
                    ],
                }
                for n in self.nodes
            ],
        }

    def summary(self) -> dict[str, Any]:
        """One line of ``GET /api/jobs``."""
        copies = [c for n in self.nodes for c in n.copies]
        return {
            "id": self.id,
            "state": self.state.value,
            "priority": self.spec.priority,
            "created_at": self.created_at,
            "files": len(self.spec.files),
            "nodes": len(self.nodes),
            "copies_done": sum(c.state is CopyState.DONE for c in copies),
            "copies": len(copies),
            "reason": self.reason,
        }
