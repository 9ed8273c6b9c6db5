"""btdht.exceptions, under SmartGet's error tree (each is a :class:`DHTError`)."""

from __future__ import annotations

from smartget.errors import DHTError

__all__ = [
    "BcodeError",
    "BucketFull",
    "BucketNotFull",
    "DecodeError",
    "FailToStop",
    "MissingT",
    "NoTokenError",
    "NotFound",
    "TransactionIdUnknown",
]


class BucketFull(DHTError):
    """A node was added to a bucket that holds ``max_size`` nodes already."""


class BucketNotFull(DHTError):
    """A bucket with room left was asked to split."""


class NoTokenError(DHTError):
    """``Node.announce_peer`` without a token from that node: ``get_peers`` it first."""


class FailToStop(DHTError):
    """Threads still alive after ``stop`` gave them 30 seconds; they are the args."""


class TransactionIdUnknown(DHTError):
    """A response whose ``t`` matches none of our queries."""


class MissingT(DHTError, ValueError):
    """A message without ``t``."""


class DecodeError(DHTError, ValueError):
    """A message that is not a KRPC message."""


class BcodeError(DHTError):
    """:func:`utils.bdecode` or :func:`utils.bencode` failed."""


class NotFound(DHTError):
    """No such node in the bucket or table."""
