"""HTTP fetches for tasks: a file streamed to disk, or a small body (a .torrent) in memory.

A file is streamed into a temporary file beside its destination, its size checked
against Content-Length, flushed, and only then renamed into place (seed 003,
maketorrent: "if the file is not here, download it"), so a crash never leaves a short
file where a whole one is expected. A failed try is retried up to ``max_retries`` times,
0.5 s, 1 s, 2 s ... apart (at most 10 s); a 4xx other than 408/429 is not retried.

Limits (issue 12, item 5): every hop, the first and each redirect, connects only to an
address :class:`~smartget.node.fetchpolicy.FetchPolicy` allows. The name is resolved
once, here, and the checked address is the one dialled (:class:`_CheckedBackend`), so DNS
rebinding gains nothing. A file larger than ``max_file_size`` is cut off (by its
Content-Length, or when the stream passes it), and a whole fetch, its retries included,
ends at ``deadline`` seconds. None of these is retried.

A striped push (:mod:`smartget.node.prefetch`) fetches a stripe of a file:
:meth:`Fetcher.head` learns its size and validators, :meth:`Fetcher.fetch_range` fetches
one byte range into the file in place, under the same policy, limits and deadline. Both
ask for the bytes as they are (``Accept-Encoding: identity``): sizes and ranges of a
compressed body would be of other bytes. A range must come back as asked (206, its
Content-Range); a 200 means the origin ignores ranges (or, with ``If-Range``, that the
file changed), a failure that is not retried.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import os
import re
import secrets
import socket
from collections.abc import Awaitable, Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, BinaryIO, Protocol

import httpcore
import httpx

from smartget import __version__
from smartget.errors import FetchError, FetchRefusedError
from smartget.node.fetchpolicy import FetchPolicy

__all__ = ["Fetched", "Fetcher", "Head", "parse_content_range"]

log = logging.getLogger(__name__)

CHUNK = 1 << 20
WRITE_AHEAD = 8  # chunks read from the network before the oldest is written
MAX_SMALL = 16 << 20  # a .torrent larger than this is refused
USER_AGENT = f"SmartGet-node/{__version__}"
IDENTITY = {"Accept-Encoding": "identity"}  # sizes and ranges of the bytes themselves
MAX_SIZE_LIMIT = "(the node's --fetch-max-size)"


class Tee(Protocol):
    """Sees a fetched file's bytes, in order, as they are written (in the writer's thread)."""

    def update(self, data: bytes) -> None: ...


@dataclass(frozen=True)
class Fetched:
    size: int
    retries: int
    body: bytes = b""


@dataclass(frozen=True)
class Head:
    """What a HEAD said of a file: its size and validators ('' when absent)."""

    size: int
    etag: str = ""
    last_modified: str = ""
    retries: int = 0


_CONTENT_RANGE = re.compile(r"bytes ([0-9]{1,19})-([0-9]{1,19})/([0-9]{1,19}|\*)")


def parse_content_range(value: str) -> tuple[int, int, int | None] | None:
    """``Content-Range: bytes FIRST-LAST/TOTAL`` (RFC 9110, 14.4) as (first, last, total);
    total None for ``*``; None if it is not one satisfied byte range."""
    match = _CONTENT_RANGE.fullmatch(value.strip())
    if match is None:
        return None
    first, last, total = match.groups()
    if int(first) > int(last) or (total != "*" and int(last) >= int(total)):
        return None
    return int(first), int(last), None if total == "*" else int(total)


class _Permanent(FetchError):
    """Not worth retrying (404 and friends)."""


class _CheckedBackend(httpcore.AsyncNetworkBackend):
    """httpcore's network backend, dialling only addresses the policy allows.

    ``connect_tcp`` resolves the host once, drops the addresses the policy refuses and
    connects to the first allowed one that answers (TLS still checks the host name:
    httpcore passes it as the server name, not the address).
    """

    def __init__(self, policy: FetchPolicy) -> None:
        self.policy = policy
        self.inner = httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109 (httpcore's interface)
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        try:
            async with asyncio.timeout(timeout):
                infos = await asyncio.get_running_loop().getaddrinfo(
                    host, port, type=socket.SOCK_STREAM
                )
        except TimeoutError:
            raise httpcore.ConnectTimeout(f"resolving {host} took over {timeout} s") from None
        except OSError as exc:
            raise httpcore.ConnectError(f"cannot resolve {host}: {exc}") from exc
        addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
        allowed = [a for a in addresses if self.policy.refusal(a) is None]
        if not allowed:
            reason = self.policy.refusal(addresses[0]) if addresses else "no address"
            where = "" if addresses == [host] else f"{host} resolves to "
            raise FetchRefusedError(f"refused to connect: {where}{reason}")
        error: Exception | None = None
        for address in allowed:
            try:
                return await self.inner.connect_tcp(
                    address,
                    port,
                    timeout=timeout,
                    local_address=local_address,
                    socket_options=socket_options,
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                error = exc
        assert error is not None
        raise error

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,  # noqa: ASYNC109 (httpcore's interface)
        socket_options: Any = None,
    ) -> httpcore.AsyncNetworkStream:
        raise FetchRefusedError("the node does not fetch over Unix sockets")

    async def sleep(self, seconds: float) -> None:
        await self.inner.sleep(seconds)


class _CheckedTransport(httpx.AsyncHTTPTransport):
    """httpx's transport on a pool that dials through :class:`_CheckedBackend`."""

    def __init__(self, policy: FetchPolicy) -> None:
        super().__init__()
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=httpx.create_ssl_context(),
            network_backend=_CheckedBackend(policy),
        )


class Fetcher:
    """One pooled httpx client for the node's fetches.

    ``policy`` decides which addresses may be dialled (default: globally routable ones
    only); ``max_file_size`` caps a file (None: no cap); ``deadline`` bounds a whole fetch
    with its retries (None: no bound); ``timeout`` is httpx's per-operation timeout.
    """

    def __init__(
        self,
        *,
        timeout: float = 30.0,
        max_file_size: int | None = None,
        deadline: float | None = None,
        policy: FetchPolicy | None = None,
    ) -> None:
        self.policy = policy or FetchPolicy()
        self.client = httpx.AsyncClient(
            timeout=httpx.Timeout(timeout),
            follow_redirects=True,
            max_redirects=5,
            headers={"User-Agent": USER_AGENT},
            trust_env=False,
            transport=_CheckedTransport(self.policy),
        )
        self.max_file_size = max_file_size
        self.deadline = deadline
        self.fetched_bytes = 0
        self.failures = 0
        self.refused = 0

    async def aclose(self) -> None:
        await self.client.aclose()

    def statistics(self) -> dict[str, int]:
        return {
            "fetched_bytes": self.fetched_bytes,
            "failures": self.failures,
            "refused": self.refused,
        }

    async def fetch_file(
        self,
        url: str,
        dest: Path,
        *,
        max_retries: int,
        tee_for: Callable[[int | None], Tee | None] | None = None,
    ) -> Fetched:
        """Download ``url`` to ``dest`` (atomically); returns its size and retries used.

        ``tee_for(content_length)``, called at each try (None: the reply did not say),
        may give a :class:`Tee` that sees every byte of that try as it is written."""
        retries = await self._retry(url, max_retries, lambda: self._to_file(url, dest, tee_for))
        size = (await asyncio.to_thread(dest.stat)).st_size
        return Fetched(size=size, retries=retries)

    async def fetch_small(self, url: str, *, max_retries: int, limit: int = MAX_SMALL) -> Fetched:
        """Download a small body (at most ``limit`` bytes) into memory."""
        box: list[bytes] = []

        async def once() -> None:
            box[:] = [await self._to_memory(url, limit)]

        retries = await self._retry(url, max_retries, once)
        return Fetched(size=len(box[0]), retries=retries, body=box[0])

    async def head(self, url: str, *, max_retries: int) -> Head:
        """The size (Content-Length), ETag and Last-Modified of the file at ``url``.

        A file larger than ``max_file_size`` is refused here, before any of it comes."""
        box: list[Head] = []

        async def once() -> None:
            box[:] = [await self._head(url)]

        retries = await self._retry(url, max_retries, once, method="HEAD")
        return replace(box[0], retries=retries)

    async def fetch_range(
        self,
        url: str,
        dest: Path | None,
        *,
        start: int,
        end: int,
        size: int,
        etag: str = "",
        max_retries: int,
        tee_for: Callable[[], Tee] | None = None,
        chunk: int = CHUNK,
    ) -> Fetched:
        """Bytes ``[start, end)`` of the ``size``-byte file at ``url`` (one ranged GET),
        written at offset ``start`` of ``dest``, which must exist (None: the bytes are only
        seen by the tee). ``etag`` (a strong one) goes as ``If-Range``, so a file changed
        since its HEAD fails rather than mixing two versions. ``tee_for()``, called at each
        try, gives a :class:`Tee` that sees the try's bytes in order, ``chunk`` bytes at a
        time at most (a slow stream's bytes reach it as soon as that many are in)."""
        if not 0 <= start < end <= size:
            raise ValueError(f"no range [{start}, {end}) in {size} bytes")
        retries = await self._retry(
            url,
            max_retries,
            lambda: self._range_to_file(url, dest, start, end, size, etag, tee_for, chunk),
        )
        return Fetched(size=end - start, retries=retries)

    async def _retry(
        self,
        url: str,
        max_retries: int,
        attempt: Callable[[], Awaitable[None]],
        *,
        method: str = "GET",
    ) -> int:
        try:
            async with asyncio.timeout(self.deadline):
                return await self._tries(url, max_retries, attempt, method)
        except TimeoutError:
            self.failures += 1
            raise FetchError(
                f"{method} {url}: not done within {self.deadline:g} s (the node's --fetch-timeout)"
            ) from None

    async def _tries(
        self, url: str, max_retries: int, attempt: Callable[[], Awaitable[None]], method: str
    ) -> int:
        for tried in range(max_retries + 1):
            try:
                await attempt()
                return tried
            except FetchRefusedError as exc:
                self.failures += 1
                self.refused += 1
                raise FetchRefusedError(f"{method} {url}: {exc}") from None
            except _Permanent:
                self.failures += 1
                raise
            except FetchError as exc:
                self.failures += 1
                if tried == max_retries:
                    raise FetchError(f"{exc} (after {tried + 1} tries)") from exc
                # A kept-alive connection the server closed while it was idle fails the
                # next request at once: asked again on a new connection without a wait
                # (a push's node started 0.5 s late so). Once; then the usual backoff.
                stale = tried == 0 and _stale_connection(exc.__cause__)
                delay = 0.0 if stale else min(10.0, 0.5 * 2**tried)
                log.info("fetch %s failed (%s); retrying in %.1f s", url, exc, delay)
                await asyncio.sleep(delay)
        raise AssertionError("unreachable")

    def _stream(
        self, url: str, headers: dict[str, str] | None = None
    ) -> contextlib.AbstractAsyncContextManager[httpx.Response]:
        return self.client.stream("GET", url, headers=headers)

    @staticmethod
    def _check_status(url: str, resp: httpx.Response, method: str = "GET") -> int | None:
        if resp.status_code >= 400:
            cls = (
                FetchError
                if resp.status_code in (408, 429) or resp.status_code >= 500
                else _Permanent
            )
            raise cls(f"{method} {url} answered HTTP {resp.status_code}")
        length = resp.headers.get("content-length")
        if length is not None and length.isascii() and length.isdigit():
            return int(length)
        return None

    def _check_size(self, method: str, url: str, size: int | None) -> None:
        """A file the origin says is larger than ``max_file_size`` is refused before it comes."""
        limit = self.max_file_size
        if size is not None and limit is not None and size > limit:
            raise _Permanent(
                f"{method} {url}: {size} bytes, more than the {limit} bytes allowed "
                f"{MAX_SIZE_LIMIT}"
            )

    async def _to_memory(self, url: str, limit: int) -> bytes:
        try:
            async with self._stream(url) as resp:
                expected = self._check_status(url, resp)
                if expected is not None and expected > limit:
                    raise _Permanent(f"GET {url}: {expected} bytes, more than the {limit} allowed")
                chunks = []
                size = 0
                async for chunk in resp.aiter_bytes():
                    size += len(chunk)
                    if size > limit:
                        raise _Permanent(f"GET {url}: more than the {limit} bytes allowed")
                    chunks.append(chunk)
        except httpx.HTTPError as exc:
            raise FetchError(f"GET {url}: {_describe(exc)}") from exc
        body = b"".join(chunks)
        if expected is not None and len(body) != expected:
            raise FetchError(f"GET {url}: got {len(body)} bytes, Content-Length said {expected}")
        self.fetched_bytes += len(body)
        return body

    async def _to_file(
        self, url: str, dest: Path, tee_for: Callable[[int | None], Tee | None] | None = None
    ) -> None:
        dest.parent.mkdir(parents=True, exist_ok=True)
        temp = dest.with_name(f".{dest.name}.{secrets.token_hex(4)}.part")
        try:
            async with self._stream(url) as resp:
                expected = self._check_status(url, resp)
                self._check_size("GET", url, expected)
                tee = tee_for(expected) if tee_for is not None else None
                with temp.open("wb") as out:
                    size = await _write_body(url, resp, out, tee, self.max_file_size)
            if expected is not None and size != expected:
                raise FetchError(f"GET {url}: got {size} bytes, Content-Length said {expected}")
            os.replace(temp, dest)
            self.fetched_bytes += size
        except httpx.HTTPError as exc:
            raise FetchError(f"GET {url}: {_describe(exc)}") from exc
        except OSError as exc:
            raise _Permanent(f"cannot write {dest}: {exc.strerror}") from exc
        finally:
            with contextlib.suppress(FileNotFoundError):
                temp.unlink()

    async def _head(self, url: str) -> Head:
        try:
            resp = await self.client.head(url, headers=IDENTITY)
        except httpx.HTTPError as exc:
            raise FetchError(f"HEAD {url}: {_describe(exc)}") from exc
        size = self._check_status(url, resp, "HEAD")
        _check_identity("HEAD", url, resp)
        if size is None:
            raise _Permanent(f"HEAD {url}: no Content-Length: the origin does not say the size")
        self._check_size("HEAD", url, size)
        headers = resp.headers
        return Head(size, headers.get("etag", ""), headers.get("last-modified", ""))

    async def _range_to_file(
        self,
        url: str,
        dest: Path | None,
        start: int,
        end: int,
        size: int,
        etag: str,
        tee_for: Callable[[], Tee] | None,
        chunk: int = CHUNK,
    ) -> None:
        asked = f"bytes={start}-{end - 1}"
        headers = {**IDENTITY, "Range": asked}
        if etag and not etag.startswith("W/"):  # If-Range takes a strong validator only
            headers["If-Range"] = etag
        try:
            async with self._stream(url, headers) as resp:
                length = self._check_status(url, resp)
                _check_partial(url, resp, start, end, size, asked, "If-Range" in headers)
                if length is not None and length != end - start:
                    raise _Permanent(f"GET {url}: Content-Length {length} for Range: {asked}")
                tee = tee_for() if tee_for is not None else None
                allowed = f"for Range: {asked}"
                if dest is None:
                    got = await _write_body(url, resp, None, tee, end - start, allowed, chunk)
                else:
                    with dest.open("r+b") as out:
                        out.seek(start)
                        got = await _write_body(url, resp, out, tee, end - start, allowed, chunk)
            if got != end - start:
                raise FetchError(f"GET {url}: got {got} bytes of {end - start} for Range: {asked}")
            self.fetched_bytes += got
        except httpx.HTTPError as exc:
            raise FetchError(f"GET {url}: {_describe(exc)}") from exc
        except OSError as exc:
            raise _Permanent(f"cannot write {dest}: {exc.strerror}") from exc


def _check_identity(method: str, url: str, resp: httpx.Response) -> None:
    encoding = resp.headers.get("content-encoding", "identity").strip().lower()
    if encoding not in ("", "identity"):
        raise _Permanent(
            f"{method} {url}: the origin sent Content-Encoding {encoding[:32]!r} though "
            "asked for the bytes as they are (Accept-Encoding: identity)"
        )


def _check_partial(
    url: str, resp: httpx.Response, start: int, end: int, size: int, asked: str, if_range: bool
) -> None:
    """A ranged GET came back with exactly the range asked for, or fails (not retried)."""
    if resp.status_code == 200:
        changed = ", or the file changed since its HEAD (If-Range)" if if_range else ""
        raise _Permanent(
            f"GET {url}: the origin does not serve byte ranges (it answered 200 to "
            f"Range: {asked}){changed}"
        )
    if resp.status_code != 206:
        raise _Permanent(f"GET {url} answered HTTP {resp.status_code} to Range: {asked}")
    _check_identity("GET", url, resp)
    value = resp.headers.get("content-range", "")
    if parse_content_range(value) != (start, end - 1, size):
        raise _Permanent(
            f"GET {url}: Content-Range {value[:80]!r} for Range: {asked} of {size} bytes "
            "(the file changed since its HEAD, or the origin sent another range)"
        )


async def _write_body(
    url: str,
    resp: httpx.Response,
    out: BinaryIO | None,
    tee: Tee | None,
    limit: int | None,
    allowed: str = MAX_SIZE_LIMIT,
    batch: int = CHUNK,
) -> int:
    """The body into ``out`` (and ``tee``), flushed; returns its size.

    Written in ``batch`` pieces by one thread of its own (in order), up to WRITE_AHEAD
    pieces behind the network, so reading goes on while a piece is written and hashed
    (httpx's own re-chunking, ``aiter_bytes(CHUNK)``, cost more than the copy into
    ``pending``)."""
    loop = asyncio.get_running_loop()
    size = 0
    pending = bytearray()
    writing: collections.deque[asyncio.Future[None]] = collections.deque()
    with ThreadPoolExecutor(1, thread_name_prefix="fetch-write") as writer:
        try:
            async for data in resp.aiter_bytes():
                size += len(data)
                if limit is not None and size > limit:
                    raise _Permanent(f"GET {url}: more than the {limit} bytes allowed {allowed}")
                pending += data
                if len(pending) >= batch:
                    if len(writing) >= WRITE_AHEAD:
                        await writing.popleft()
                    chunk, pending = bytes(pending), bytearray()
                    writing.append(loop.run_in_executor(writer, _write, out, chunk, tee))
            if pending:
                writing.append(loop.run_in_executor(writer, _write, out, bytes(pending), tee))
            while writing:
                await writing.popleft()
            await loop.run_in_executor(writer, _flush, out)
        finally:
            for future in writing:
                future.cancel()
    return size


def _write(out: BinaryIO | None, chunk: bytes, tee: Tee | None) -> None:
    if out is not None:
        out.write(chunk)
    if tee is not None:
        tee.update(chunk)  # hashlib releases the GIL for large data, as the write does


def _flush(out: BinaryIO | None) -> None:
    if out is not None:
        out.flush()
        os.fsync(out.fileno())


def _stale_connection(exc: BaseException | None) -> bool:
    """httpx's error for a request on a kept-alive connection the server had closed."""
    return isinstance(exc, httpx.RemoteProtocolError) and "without sending a response" in str(exc)


def _describe(exc: httpx.HTTPError) -> str:
    if isinstance(exc, httpx.ConnectError):
        return f"cannot connect ({exc})"
    if isinstance(exc, httpx.TimeoutException):
        return "timed out"
    if isinstance(exc, httpx.RemoteProtocolError):
        return f"the server broke the protocol or closed early ({exc})"
    return str(exc) or type(exc).__name__
