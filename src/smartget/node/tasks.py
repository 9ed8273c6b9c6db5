"""Seed 003's task template and response_msg, as plain data (no I/O).

Theory of operation
-------------------
A controller POSTs a *task* (seed 003, "task template")::

    {"taskid": "", "event": "", "expire": "", "max_retries": "", "args": {...}}

:func:`parse_task` turns the raw body into a :class:`Task` or raises :class:`TaskError`
whose message says what is wrong; the API turns that into a ``failed`` response, never a
500. The original's misspellings are accepted on input (``dowload`` for ``download``,
``filenmae`` for ``filename``); :func:`response` always writes the correct spellings and
every field of seed 003's ``response_msg`` (``taskid``, ``nodeid``, ``nodezone``,
``nodeip``, ``event`` = ``<event>_response``, ``status``, ``result`` = ``success`` or
``failed``, ``retries``, ``traceback``, ``args``).

``expire`` (the seed says only "task expire time") is read as users write it: empty for
none; a number above 10^9 is an absolute UNIX time; a smaller number is seconds from the
moment the node received the task; an ISO 8601 date-time is absolute (UTC if no zone).
A task received after its expiry fails at once; a synchronous task still running at its
expiry is cancelled and fails. ``max_retries`` (empty: :data:`DEFAULT_RETRIES`) is how
many times a failed fetch is tried again; the response's ``retries`` says how many were used.

``download`` is asynchronous (it answers "Initial startup" at once), so its ``expire``
bounds the download that follows (issue 4, "expire means what users expect"):

* The deadline is kept with the torrent in the node's state, so a restart (``kill -9``
  too) still enforces it; a deadline that fell while the node was down is enforced at
  start, before the torrent is added back.
* At the deadline a torrent that is not complete (complete: seed 003's "download
  success", finished and flushed) is stopped like ``/shutdown`` stops one: out of the
  libtorrent session, its partial data and ``.torrent`` kept (a user may want to resume;
  ``/delete`` removes them). Its last status report then carries the status
  :data:`EXPIRED` (``"expired"``), the one status added to seed 003's four ('Initial
  startup', 'downloading', 'download success', 'seeding'), with the figures it had when
  stopped; a reply meaning success to that report ends reporting for it.
* A torrent complete before its deadline forgets the deadline and keeps seeding:
  ``expire`` bounds the task, not the seeding.
* ``download`` of a torrent that is running and not complete keeps the later of the
  two deadlines (no ``expire`` means no deadline): it runs while some task wants it. A
  ``download`` of an expired torrent starts it again (a new task, a new deadline or none);
  libtorrent rechecks the partial data and goes on from there.

:class:`Deadlines` is the sans-IO part of that: which deadline falls next, for the
agent's one timer task.
"""

from __future__ import annotations

import heapq
import json
import math
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from smartget.config import parse_size
from smartget.errors import ConfigError, TaskError
from smartget.node.prefetch import DIGEST_SIZE, MAX_PIECES

__all__ = [
    "DEFAULT_RETRIES",
    "EVENTS",
    "EVICTED",
    "EXPIRED",
    "MAX_DIGESTS_TASK_BYTES",
    "MAX_PIN",
    "MAX_RETRIES",
    "MAX_TASK_BYTES",
    "Deadlines",
    "NodeIdentity",
    "Task",
    "TaskError",
    "parse_task",
    "peek_taskid",
    "response",
]

MAX_TASK_BYTES = 1 << 20
# A maketorrent may carry every piece's SHA-1 in hex (args.pieces, a striped push:
# node/prefetch.py): room for MAX_PIECES of them. A 64 GiB file (16,384 pieces of 4 MiB)
# fits MAX_TASK_BYTES; 128 GiB (32,768 pieces) would not.
MAX_DIGESTS_TASK_BYTES = MAX_TASK_BYTES + 2 * DIGEST_SIZE * MAX_PIECES
DEFAULT_RETRIES = 3
MAX_RETRIES = 20
ABSOLUTE_EXPIRE = 1e9  # numbers above this are UNIX times, below it seconds from now

EVENTS = ("maketorrent", "download", "shutdown", "shutdownall", "delete", "prefetch")
# The original's typos, accepted on input only (DESIGN.md, "Node task API").
EVENT_ALIASES = {"dowload": "download"}
ARG_ALIASES = {"filenmae": "filename", "trackback": "traceback"}
# args whose values must be strings when present, and the one list.
STRING_ARGS = ("fileurl", "filename", "wwwroot", "sha1", "torrentfileurl", "magnet")
MAX_TRACKERS = 64
MAX_STRING = 4096
MAX_PIN = 10 * 365 * 86400.0  # args.pin: seconds the content is kept from cache eviction

# The status of a download stopped at its task's deadline: the one status SmartGet adds to
# seed 003's 'Initial startup', 'downloading', 'download success' and 'seeding'.
EXPIRED = "expired"
# The status of a completed torrent the node removed to keep its cache under --cache-max
# (node/cache.py): its last status report says so.
EVICTED = "evicted"


@dataclass(frozen=True)
class NodeIdentity:
    """Who answers: seed 003's NodeIP, NodeZone and NodeID = NodeZone + "_" + NodeIP."""

    ip: str
    zone: str

    @property
    def nodeid(self) -> str:
        return f"{self.zone}_{self.ip}"


@dataclass
class Task:
    """A parsed task; ``expire_at`` is a UNIX time or None."""

    taskid: str
    event: str
    args: dict[str, Any] = field(default_factory=dict)
    expire_at: float | None = None
    max_retries: int = DEFAULT_RETRIES

    def arg(self, name: str) -> str:
        """A string argument, '' when absent or null."""
        value = self.args.get(name)
        return value if isinstance(value, str) else ""


def _parse_expire(value: Any, now: float) -> float | None:
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise TaskError(f"expire must be a number of seconds, a UNIX time or ISO 8601, got {value}")
    if isinstance(value, str):
        text = value.strip()
        try:
            value = float(text)
        except ValueError:
            try:
                moment = datetime.fromisoformat(text)
            except ValueError:
                raise TaskError(
                    "expire must be seconds from now, a UNIX time or an ISO 8601 date-time, "
                    f"got {text[:64]!r}"
                ) from None
            if moment.tzinfo is None:
                moment = moment.replace(tzinfo=UTC)
            return moment.timestamp()
    if not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
        raise TaskError(f"expire must be a finite number >= 0, got {value!r}")
    return float(value) if value > ABSOLUTE_EXPIRE else now + float(value)


def _parse_retries(value: Any) -> int:
    if value is None or value == "":
        return DEFAULT_RETRIES
    if isinstance(value, bool):
        raise TaskError(f"max_retries must be a whole number, got {value}")
    if isinstance(value, str):
        if not (value.isascii() and value.strip().isdigit()):
            raise TaskError(f"max_retries must be a whole number, got {value[:32]!r}")
        value = int(value)
    if not isinstance(value, int) or value < 0:
        raise TaskError(f"max_retries must be a whole number >= 0, got {value!r}")
    if value > MAX_RETRIES:
        raise TaskError(f"max_retries is at most {MAX_RETRIES}, got {value}")
    return value


def _parse_args(raw: Any) -> dict[str, Any]:
    if raw is None or raw == "":
        return {}
    if not isinstance(raw, dict):
        raise TaskError(f"args must be a JSON object, got {type(raw).__name__}")
    args: dict[str, Any] = {}
    for key, value in raw.items():
        if isinstance(key, str):
            args[ARG_ALIASES.get(key, key)] = value
    for name in STRING_ARGS:
        value = args.get(name)
        if value is None:
            continue
        if not isinstance(value, str):
            raise TaskError(f"args.{name} must be a string, got {type(value).__name__}")
        if len(value) > MAX_STRING or "\x00" in value:
            raise TaskError(f"args.{name} is longer than {MAX_STRING} characters or holds NUL")
    trackers = args.get("trackers")
    if trackers is not None and trackers != "":
        if isinstance(trackers, str):
            trackers = [trackers]
        if not isinstance(trackers, list) or not all(isinstance(t, str) for t in trackers):
            raise TaskError("args.trackers must be a list of URLs (strings)")
        if len(trackers) > MAX_TRACKERS:
            raise TaskError(f"args.trackers holds more than {MAX_TRACKERS} URLs")
        args["trackers"] = trackers
    else:
        args.pop("trackers", None)
    pin = _parse_pin(args.get("pin"))
    if pin is None:
        args.pop("pin", None)
    else:
        args["pin"] = pin
    limit = _parse_rate(args.get("upload_limit"))
    if limit:
        args["upload_limit"] = limit
    else:
        args.pop("upload_limit", None)
    return args


MAX_RATE = 1 << 40  # bytes/s: beyond any link


def _parse_rate(value: Any) -> int:
    """``args.upload_limit``: this torrent's upload cap, bytes/s (a number or "20MiB")."""
    if value is None or value == "" or value == 0:
        return 0
    if isinstance(value, str):
        try:
            value = parse_size(value.strip().removesuffix("/s"))
        except ConfigError:
            raise TaskError(f"args.upload_limit must be bytes/s or a rate such as 20MiB/s, "
                            f"got {value[:32]!r}") from None  # fmt: skip
    if isinstance(value, bool) or not isinstance(value, int | float) or not value == value:
        raise TaskError(f"args.upload_limit must be bytes/s, got {type(value).__name__}")
    if not 0 <= value <= MAX_RATE:
        raise TaskError(f"args.upload_limit must be 0 to {MAX_RATE} bytes/s, got {value!r}")
    return int(value)


def _parse_pin(value: Any) -> float | None:
    """``args.pin``: seconds (from now) to keep the task's content from cache eviction."""
    if value is None or value == "":
        return None
    if isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            raise TaskError(f"args.pin must be a number of seconds, got {value[:32]!r}") from None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TaskError(f"args.pin must be a number of seconds, got {type(value).__name__}")
    if not math.isfinite(value) or not 0 <= value <= MAX_PIN:
        raise TaskError(f"args.pin must be 0 to {MAX_PIN:.0f} seconds, got {value!r}")
    return float(value)


def parse_task(
    body: bytes | str | dict[str, Any],
    now: float,
    *,
    event: str | None = None,
    max_bytes: int = MAX_TASK_BYTES,
) -> Task:
    """Parse a task body; ``event`` is the route's event when the route names one.

    Raises :class:`TaskError` for anything malformed: not JSON, not an object, a missing
    or unknown event, an event that does not match the route, bad expire/max_retries/args.
    """
    if isinstance(body, bytes | str):
        if len(body) > max_bytes:
            raise TaskError(f"task larger than {max_bytes} bytes")
        if not body.strip():
            raise TaskError("empty body: expected a JSON task {taskid, event, args, ...}")
        try:
            data = json.loads(body)
        except (ValueError, RecursionError) as exc:
            raise TaskError(f"body is not valid JSON: {exc}") from None
    else:
        data = body
    if not isinstance(data, dict):
        raise TaskError(f"task must be a JSON object, got {type(data).__name__}")
    taskid = data.get("taskid", "")
    if taskid is None:
        taskid = ""
    if isinstance(taskid, int | float) and not isinstance(taskid, bool):
        taskid = str(taskid)
    if not isinstance(taskid, str) or len(taskid) > 256:
        raise TaskError("taskid must be a string of at most 256 characters")
    raw_event = data.get("event")
    if raw_event is None or raw_event == "":
        if event is None:
            raise TaskError(f"missing event: expected one of {', '.join(EVENTS)}")
        raw_event = event
    if not isinstance(raw_event, str):
        raise TaskError(f"event must be a string, got {type(raw_event).__name__}")
    name = EVENT_ALIASES.get(raw_event.strip().lower(), raw_event.strip().lower())
    if name not in EVENTS:
        raise TaskError(f"unknown event {raw_event[:64]!r}: expected one of {', '.join(EVENTS)}")
    if event is not None and name != event:
        raise TaskError(f"event {name!r} sent to the /{event} route")
    return Task(
        taskid=taskid,
        event=name,
        args=_parse_args(data.get("args")),
        expire_at=_parse_expire(data.get("expire"), now),
        max_retries=_parse_retries(data.get("max_retries")),
    )


def peek_taskid(body: bytes) -> str:
    """The taskid of a body that failed to parse, or '' (to echo it back)."""
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):
        return ""
    taskid = data.get("taskid") if isinstance(data, dict) else None
    return taskid[:256] if isinstance(taskid, str) else ""


def response(
    node: NodeIdentity,
    event: str,
    *,
    taskid: str = "",
    result: str = "success",
    status: str = "",
    retries: int = 0,
    traceback: str = "",
    args: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Seed 003's response_msg, with the correct spellings (``success``, ``traceback``)."""
    return {
        "taskid": taskid,
        "nodeid": node.nodeid,
        "nodezone": node.zone,
        "nodeip": node.ip,
        "event": f"{event}_response",
        "status": status,
        "result": result,
        "retries": str(retries),
        "traceback": traceback,
        "args": args or {},
    }


class Deadlines:
    """Which key's deadline falls next: a heap with lazy deletion. No I/O, no clock.

    Setting a key again replaces its deadline; the old heap entry is left behind and
    skipped when it surfaces. The heap is rebuilt when such stale entries outnumber the
    live ones, so it never holds more than about twice as many entries as keys.
    """

    def __init__(self) -> None:
        self._at: dict[str, float] = {}
        self._heap: list[tuple[float, str]] = []

    def __len__(self) -> int:
        return len(self._at)

    def __contains__(self, key: object) -> bool:
        return key in self._at

    def get(self, key: str) -> float | None:
        return self._at.get(key)

    def set(self, key: str, at: float) -> None:
        if self._at.get(key) == at:
            return
        self._at[key] = at
        heapq.heappush(self._heap, (at, key))
        self._compact()

    def cancel(self, key: str) -> None:
        if self._at.pop(key, None) is not None:
            self._compact()

    def due(self, now: float) -> list[str]:
        """Pop every key whose deadline is at or before ``now``, earliest first."""
        fired = []
        while self._heap and self._heap[0][0] <= now:
            at, key = heapq.heappop(self._heap)
            if self._at.get(key) == at:
                del self._at[key]
                fired.append(key)
        return fired

    def next_deadline(self) -> float | None:
        while self._heap:
            at, key = self._heap[0]
            if self._at.get(key) == at:
                return at
            heapq.heappop(self._heap)  # stale: cancelled or replaced
        return None

    def _compact(self) -> None:
        if len(self._heap) > 2 * len(self._at) + 16:
            self._heap = [(at, key) for key, at in self._at.items()]
            heapq.heapify(self._heap)
