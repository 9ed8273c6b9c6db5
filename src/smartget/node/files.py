"""The node's file server: wwwroot over HTTP, with Range and HEAD, nothing else.

With several storage roots (``--wwwroot`` repeated) the server shows them as one tree:
a path is looked up in each root in order, the first holding it wins (as nginx's
``try_files``), so a file stored under any root has the URL its path gives.

libtorrent web seeds (BEP 19) and the seed's ``torrentfileurl`` need it. A path is served
only if, with symlinks resolved, it is a regular file inside wwwroot; no directory
listings, no dot-files (temporary downloads are ``.name.part``). Range, If-Range and HEAD
come from Starlette's ``FileResponse``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from urllib.parse import unquote

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, PlainTextResponse, Response
from starlette.routing import Route

__all__ = ["create_files_app", "resolve"]


def resolve(wwwroot: Path, url_path: str) -> Path | None:
    """The file under ``wwwroot`` that ``url_path`` names, or None if it must not be served."""
    parts = [p for p in unquote(url_path).split("/") if p not in ("", ".")]
    if not parts or any(p == ".." or p.startswith(".") or "\x00" in p for p in parts):
        return None
    real = Path(os.path.realpath(wwwroot.joinpath(*parts)))
    if not real.is_relative_to(wwwroot) or not real.is_file():
        return None
    return real


def create_files_app(
    roots: Path | Sequence[Path], on_served: Callable[[Path], None] | None = None
) -> Starlette:
    """The file server of ``roots`` (one root, or the node's roots, the default first).

    ``on_served(path)`` is told of each file served (the node's cache counts it a use).
    """
    real = [Path(os.path.realpath(r)) for r in ([roots] if isinstance(roots, Path) else roots)]
    served = {"files": 0, "not_found": 0}

    async def serve(request: Request) -> Response:
        path = next((p for r in real if (p := resolve(r, request.url.path)) is not None), None)
        if path is None:
            served["not_found"] += 1
            return PlainTextResponse("Not Found", status_code=404)
        served["files"] += 1
        if on_served is not None:
            on_served(path)
        return FileResponse(path)

    app = Starlette(routes=[Route("/{path:path}", serve, methods=["GET", "HEAD"])])
    app.state.served = served
    return app
