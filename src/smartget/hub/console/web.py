"""The console's HTTP face: sign-in, the page, its live stream and its actions.

====================================  ==========================================================
``GET /login``, ``POST /login``       the sign-in form (field ``token``: the hub's token); sets
                                      the session cookie (HttpOnly, SameSite=Strict, Secure over
                                      TLS, Max-Age) and sends the browser to ``/``
``POST /logout``                      revokes the session, clears the cookie
``GET /``                             the console (``/login`` without a session)
``GET /console/events``               Server-Sent Events: a ``snapshot`` a second
``GET /console/api/snapshot``         the same snapshot, once (JSON)
``POST /console/api/nodes/{id}/ACT``  ``drain``, ``undrain``, ``deregister`` (zombies only)
``POST /console/api/jobs``            submit a push job: ``{"urls": [...], "zones": [...], "count",
                                      "upload_limit"}`` (to the hub's JobRunner, as /api/jobs)
``POST /console/api/jobs/{id}/cancel``  cancel a push job (what is not done stops on its node)
``GET /console/static/{file}``        the page's ES modules and CSS (package data)
====================================  ==========================================================

Every action needs the session cookie and the session's CSRF token in ``X-CSRF-Token``;
a request whose ``Origin`` or ``Sec-Fetch-Site`` says it comes from another site is
refused before that. Pages and API replies carry a Content-Security-Policy without
``unsafe-inline`` (scripts and styles from this origin only), and ``no-store``.
The JSON API keeps its Bearer tokens; a session cookie opens only these routes.
"""

from __future__ import annotations

import asyncio
import html
import time
from importlib import resources
from typing import Annotated, Any, Protocol
from urllib.parse import parse_qs, urlsplit

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Request, status
from fastapi.responses import JSONResponse, RedirectResponse, Response, StreamingResponse
from pydantic import BaseModel, Field

from smartget.errors import JobError, JobNotFoundError, RegistryError
from smartget.hub.console.service import Console, TooManyWatchers
from smartget.hub.console.session import Session
from smartget.hub.jobs.model import CopyState, parse_spec
from smartget.hub.registry import Registry

__all__ = ["ConsoleHost", "add_console"]

COOKIE = "smartget_session"
CSRF_HEADER = "x-csrf-token"
MAX_FORM = 4096
KEEP_ALIVE = 15.0  # seconds between comments on a quiet stream
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",  # no-referrer would make form posts say Origin: null
    "Cache-Control": "no-store",
}
STATIC_TYPES = {
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".png": "image/png",
    ".svg": "image/svg+xml",
}


class ConsoleHost(Protocol):
    """What the console needs from the hub."""

    registry: Registry
    console: Console

    def now(self) -> float: ...
    async def save(self) -> None: ...


def _files() -> dict[str, bytes]:
    """The static files, read once: nothing from a request ever names a path."""
    root = resources.files("smartget.hub.console") / "static"
    return {p.name: p.read_bytes() for p in root.iterdir() if p.is_file()}


def _secure(response: Response) -> Response:
    response.headers.update(SECURITY_HEADERS)
    return response


class JobFormIn(BaseModel):
    """The page's "start a push" form (the API's ``JobIn`` has every other option)."""

    urls: list[Annotated[str, Field(min_length=1, max_length=2048)]] = Field(
        min_length=1, max_length=100
    )
    zones: list[Annotated[str, Field(max_length=64)]] = Field(default_factory=list, max_length=64)
    count: int | None = Field(None, ge=1, le=100_000)
    upload_limit: int = Field(0, ge=0, le=1 << 40, description="bytes/s per node (0: none)")


def add_console(app: FastAPI, hub: ConsoleHost) -> None:
    console = hub.console
    sessions = console.sessions
    files = _files()
    page = files.pop("console.html").decode()
    login_page = files.pop("login.html").decode()

    def session_of(request: Request) -> Session | None:
        return sessions.check(request.cookies.get(COOKIE), time.time())

    def same_origin(request: Request) -> bool:
        """False for a request another site's page made (checked before anything else)."""
        if request.headers.get("sec-fetch-site", "same-origin") not in ("same-origin", "none"):
            return False
        origin = request.headers.get("origin")
        if origin is None or origin == "null":  # unknown: Sec-Fetch-Site, CSRF, SameSite decide
            return True
        parts = urlsplit(origin)
        return (parts.scheme, parts.netloc) == (request.url.scheme, request.url.netloc)

    def render_login(message: str, code: int = 200) -> Response:
        body = login_page.replace("%%MESSAGE%%", html.escape(message))
        return _secure(Response(body, status_code=code, media_type="text/html"))

    async def signed_in(request: Request) -> Session:
        session = session_of(request)
        if session is None:
            raise HTTPException(status.HTTP_401_UNAUTHORIZED, "not signed in: open /login")
        return session

    async def acting(request: Request) -> Session:
        session = await signed_in(request)
        if not same_origin(request):
            raise HTTPException(status.HTTP_403_FORBIDDEN, "a request from another site")
        if not sessions.csrf_matches(session, request.headers.get(CSRF_HEADER)):
            raise HTTPException(
                status.HTTP_403_FORBIDDEN, "missing or wrong X-CSRF-Token: reload the page"
            )
        return session

    # -- pages ------------------------------------------------------------------------

    @app.get("/", include_in_schema=False)
    async def index(request: Request) -> Response:
        session = session_of(request)
        if session is None:
            return _secure(RedirectResponse("/login", status.HTTP_303_SEE_OTHER))
        body = page.replace("%%CSRF%%", html.escape(sessions.csrf_token(session), quote=True))
        return _secure(Response(body, media_type="text/html"))

    @app.get("/dashboard", include_in_schema=False)
    async def dashboard() -> Response:
        return RedirectResponse("/", status.HTTP_308_PERMANENT_REDIRECT)

    @app.get("/login", include_in_schema=False)
    async def login_form(request: Request) -> Response:
        if session_of(request) is not None:
            return _secure(RedirectResponse("/", status.HTTP_303_SEE_OTHER))
        return render_login("")

    @app.post("/login", include_in_schema=False)
    async def login(request: Request) -> Response:
        if not same_origin(request):
            return render_login("This sign-in came from another site: refused.", 403)
        client = request.client.host if request.client else ""
        now = hub.now()
        if not console.throttle.allowed(client, now):
            return render_login("Too many wrong tokens: wait a minute, then try again.", 429)
        body = b""
        async for chunk in request.stream():
            body += chunk
            if len(body) > MAX_FORM:
                return render_login("The form was too large.", 413)
        fields = parse_qs(body.decode("utf-8", "replace"), max_num_fields=8)
        given = (fields.get("token") or [""])[0].strip()
        cookie = sessions.sign_in(given, time.time())
        if cookie is None:
            console.throttle.failed(client, now)
            return render_login("That is not the hub's token.", 401)
        console.throttle.succeeded(client)
        response = RedirectResponse("/", status.HTTP_303_SEE_OTHER)
        response.set_cookie(
            COOKIE,
            cookie,
            max_age=sessions.lifetime,
            path="/",
            secure=request.url.scheme == "https",
            httponly=True,
            samesite="strict",
        )
        return _secure(response)

    @app.post("/logout", include_in_schema=False)
    async def logout(request: Request) -> Response:
        sessions.sign_out(await acting(request), time.time())
        response = JSONResponse({"ok": True, "message": "signed out", "redirect": "/login"})
        response.delete_cookie(COOKIE, path="/", httponly=True, samesite="strict")
        return _secure(response)

    @app.get("/console/static/{name}", include_in_schema=False)
    async def static(name: str) -> Response:
        data = files.get(name)
        kind = STATIC_TYPES.get(name[name.rfind(".") :]) if "." in name else None
        if data is None or kind is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, "no such file")
        response = Response(data, media_type=kind)
        _secure(response).headers["Cache-Control"] = "no-cache"
        return response

    # -- the live stream and the actions ---------------------------------------------------

    api = APIRouter(prefix="/console", include_in_schema=False)

    @api.get("/events", dependencies=[Depends(signed_in)])
    async def events(request: Request) -> Response:
        try:
            queue = console.broker.subscribe()
        except TooManyWatchers as exc:
            raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, str(exc)) from None
        cookie = request.cookies.get(COOKIE)

        async def stream() -> Any:
            try:
                await console.refresh_if_old()
                yield b"retry: 2000\n\n" + console.snapshot_event()
                while True:
                    try:
                        async with asyncio.timeout(KEEP_ALIVE):
                            data = await queue.get()
                    except TimeoutError:
                        yield b": still here\n\n"
                        continue
                    if data is None:  # the hub is stopping: the page reconnects
                        return
                    if sessions.check(cookie, time.time()) is None:
                        yield b'event: signedout\ndata: {"redirect": "/login"}\n\n'
                        return
                    yield data
            finally:
                console.broker.unsubscribe(queue)

        response = StreamingResponse(stream(), media_type="text/event-stream")
        _secure(response).headers["X-Accel-Buffering"] = "no"
        return response

    @api.get("/api/snapshot", dependencies=[Depends(signed_in)])
    async def one_snapshot() -> Response:
        await console.refresh_if_old()
        return _secure(JSONResponse(console.snapshot()))

    def done(message: str, **extra: Any) -> Response:
        return _secure(JSONResponse({"ok": True, "message": message, **extra}))

    @api.post("/api/nodes/{node_id}/drain", dependencies=[Depends(acting)])
    async def drain(node_id: int) -> Response:
        node = await console.drain(node_id)  # on Redis: every hub's
        return done(f"node {node.node_id} ({node.addr}) drained: it is no longer handed out")

    @api.post("/api/nodes/{node_id}/undrain", dependencies=[Depends(acting)])
    async def undrain(node_id: int) -> Response:
        node = await console.undrain(node_id)
        return done(f"node {node.node_id} ({node.addr}) is back, status {node.status}")

    @api.post("/api/nodes/{node_id}/deregister", dependencies=[Depends(acting)])
    async def deregister(node_id: int) -> Response:
        node = hub.registry.get_node_by_id(node_id)
        if node is not None and not node.is_zombie:
            raise RegistryError(f"node {node_id} is alive: only zombies are removed from here")
        gone = await console.deregister(node_id)
        return done(f"zombie node {gone.node_id} ({gone.addr}:{gone.port}) deregistered")

    @api.post("/api/jobs", dependencies=[Depends(acting)])
    async def submit_job(body: JobFormIn) -> Response:
        urls = [u.strip() for u in body.urls if u.strip()]
        zones = [z.strip() for z in body.zones if z.strip()]
        try:
            spec = parse_spec(
                urls=urls, zones=zones, nodes=body.count, upload_limit=body.upload_limit
            )
        except JobError as exc:
            raise HTTPException(status.HTTP_400_BAD_REQUEST, str(exc)) from None
        # The same core as POST /api/jobs: saved before this answers, run by the hub.
        job = await console.jobs.submit(spec)
        files = "1 file" if len(spec.files) == 1 else f"{len(spec.files)} files"
        return done(f"job {job.id} queued ({files}): watch it below", id=job.id)

    @api.post("/api/jobs/{job_id}/cancel", dependencies=[Depends(acting)])
    async def cancel_job(job_id: str) -> Response:
        try:
            before = console.jobs.book.get(job_id).state
        except JobNotFoundError as exc:
            raise HTTPException(status.HTTP_404_NOT_FOUND, str(exc)) from None
        if before.final:
            return done(f"job {job_id} had ended already ({before.value}): nothing to cancel")
        job = await console.jobs.cancel(job_id)
        if not job.nodes:
            return done(f"job {job_id} cancelled before it started", id=job_id)
        stopped = sum(any(c.state is CopyState.CANCELLED for c in n.copies) for n in job.nodes)
        kept = len(job.nodes) - stopped
        return done(
            f"job {job_id} cancelled: what was not done is stopped ({stopped} of "
            f"{len(job.nodes)} nodes); {kept} had every copy already",
            id=job_id,
        )

    app.include_router(api)
