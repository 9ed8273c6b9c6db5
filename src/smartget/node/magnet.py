"""Magnet URIs (BEP 9) and bare info-hashes of download tasks, parsed strictly. No I/O.

Theory of operation
-------------------
A ``download`` task may name its torrent by ``args.magnet`` or by ``args.sha1`` alone
instead of a ``.torrent`` URL (issue 14): the node adds the info-hash to libtorrent,
which gets the info dict from peers (BEP 9) found through the trackers given and the
fleet's DHT. A magnet comes from whoever may post tasks, so it is read strictly:

* at most :data:`MAX_MAGNET` characters of printable ASCII, ``magnet:?`` then
  ``key=value`` pairs joined by ``&``;
* exactly one ``xt``, ``urn:btih:`` and 40 hex digits or 32 base32 characters (BEP 9;
  the v2 ``urn:btmh:`` is refused: the fleet's torrents are v1);
* ``tr``: at most :data:`MAX_TRACKERS`, each an ``http://``, ``https://`` or ``udp://``
  URL with a host (and a port in 1-65535 if given), at most :data:`MAX_TRACKER`
  characters; duplicates dropped, order kept;
* ``dn`` (display name): at most once, at most :data:`MAX_NAME` characters, no control
  characters; ``xl`` (exact length): at most once, a whole number;
* any other key is refused, by name: ``ws`` (web seeds), ``as``/``xs`` (sources),
  ``x.pe`` (peer addresses) and ``so`` would make the node dial or fetch what the task
  names, which only the fetch policy (``--fetch-allow``) may allow.

Anything else raises :class:`~smartget.errors.MagnetError` (a ``TaskError``), whose
message says what was expected, what came and the limit; never another exception.
"""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass
from urllib.parse import quote, unquote, urlsplit

from smartget.errors import MagnetError

__all__ = [
    "MAX_MAGNET",
    "MAX_NAME",
    "MAX_TRACKER",
    "MAX_TRACKERS",
    "TRACKER_SCHEMES",
    "Magnet",
    "check_tracker",
    "parse_info_hash",
    "parse_magnet",
]

MAX_MAGNET = 4096
MAX_TRACKERS = 16
MAX_TRACKER = 512
MAX_NAME = 255
TRACKER_SCHEMES = ("http", "https", "udp")
PREFIX = "magnet:?"

_HEX = re.compile(r"[0-9a-fA-F]{40}")
_BASE32 = re.compile(r"[A-Za-z2-7]{32}")
_PRINTABLE = re.compile(r"[\x21-\x7e]*")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
KEYS = ("xt", "dn", "tr", "xl")


@dataclass(frozen=True)
class Magnet:
    """A checked magnet: the v1 info-hash in lower-case hex, its trackers, its name."""

    sha1: str
    trackers: tuple[str, ...] = ()
    name: str = ""

    def uri(self) -> str:
        """The magnet written back (hex info-hash; what the node keeps to restart it)."""
        parts = [f"xt=urn:btih:{self.sha1}"]
        if self.name:
            parts.append(f"dn={quote(self.name, safe='')}")
        parts.extend(f"tr={quote(t, safe='')}" for t in self.trackers)
        return PREFIX + "&".join(parts)


def _short(text: str) -> str:
    return repr(text[:64]) + ("..." if len(text) > 64 else "")


def parse_info_hash(text: str) -> str:
    """A v1 info-hash: 40 hex digits or 32 base32 characters -> lower-case hex."""
    if _HEX.fullmatch(text):
        return text.lower()
    if _BASE32.fullmatch(text):
        return base64.b32decode(text.upper()).hex()
    raise MagnetError(
        f"an info-hash is 40 hex digits or 32 base32 characters, got {len(text)} "
        f"characters: {_short(text)}"
    )


def check_tracker(url: str) -> str:
    """A tracker URL a magnet or task may name (http, https or udp, with a host)."""
    if len(url) > MAX_TRACKER:
        raise MagnetError(f"tracker URL longer than {MAX_TRACKER} characters: {_short(url)}")
    if not _PRINTABLE.fullmatch(url):
        raise MagnetError(f"tracker URL holds spaces or non-ASCII characters: {_short(url)}")
    try:
        parts = urlsplit(url)
        port = parts.port  # raises ValueError when out of range or not a number
    except ValueError as exc:
        raise MagnetError(f"tracker URL {_short(url)} is malformed: {exc}") from None
    if parts.scheme.lower() not in TRACKER_SCHEMES:
        raise MagnetError(f"tracker URL must be {', '.join(TRACKER_SCHEMES)}, got {_short(url)}")
    if not parts.hostname:
        raise MagnetError(f"tracker URL has no host: {_short(url)}")
    if port == 0:
        raise MagnetError(f"tracker URL has port 0: {_short(url)}")
    return url


def parse_magnet(text: str) -> Magnet:
    """Parse a magnet URI; :class:`MagnetError` for anything this module refuses."""
    if len(text) > MAX_MAGNET:
        raise MagnetError(f"magnet longer than {MAX_MAGNET} characters ({len(text)})")
    if not _PRINTABLE.fullmatch(text):
        raise MagnetError(f"magnet holds spaces, control or non-ASCII characters: {_short(text)}")
    if not text[: len(PREFIX)].lower() == PREFIX:
        raise MagnetError(f"a magnet starts with {PREFIX!r}, got {_short(text)}")
    hashes: list[str] = []
    trackers: list[str] = []
    names: list[str] = []
    lengths = 0
    for pair in text[len(PREFIX) :].split("&"):
        if not pair:
            continue
        key, eq, raw = pair.partition("=")
        key = key.lower()
        if not eq:
            raise MagnetError(f"magnet parameter without '=': {_short(pair)}")
        if key not in KEYS:
            raise MagnetError(
                f"magnet parameter {_short(key)} is not taken (only {', '.join(KEYS)}): "
                "web seeds, sources and peer addresses are not followed"
            )
        try:
            value = unquote(raw, errors="strict")
        except UnicodeDecodeError:
            raise MagnetError(f"magnet parameter {key} is not UTF-8: {_short(raw)}") from None
        if key == "xt":
            if not value.lower().startswith("urn:btih:"):
                raise MagnetError(f"xt must be urn:btih:<info-hash> (v1), got {_short(value)}")
            hashes.append(parse_info_hash(value[len("urn:btih:") :]))
        elif key == "tr":
            url = check_tracker(value)
            if url not in trackers:
                trackers.append(url)
            if len(trackers) > MAX_TRACKERS:
                raise MagnetError(f"magnet names more than {MAX_TRACKERS} trackers")
        elif key == "dn":
            if len(value) > MAX_NAME or _CONTROL.search(value):
                raise MagnetError(
                    f"dn longer than {MAX_NAME} characters or with control characters: "
                    f"{_short(value)}"
                )
            names.append(value)
        else:  # xl
            lengths += 1
            if not value.isdigit() or not value.isascii() or len(value) > 20:
                raise MagnetError(f"xl must be a whole number of bytes, got {_short(value)}")
    if len(hashes) != 1:
        raise MagnetError(f"a magnet needs exactly one xt=urn:btih:..., got {len(hashes)}")
    if len(names) > 1 or lengths > 1:
        raise MagnetError("dn and xl may each be given once")
    return Magnet(sha1=hashes[0], trackers=tuple(trackers), name=names[0] if names else "")
