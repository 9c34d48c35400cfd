"""Who may open ``/admin``: the login form, the session cookie, the admin bearer token,
and the checks every state-changing admin request passes (same origin, CSRF token).

The Hydra web convention: ``/login`` with one ``token`` field, cookie ``admin_session``,
303 to ``/admin``; admin pages also take ``Authorization: Bearer <admin_token>`` for
scripts (no cookie, so no CSRF token asked). The api token never opens them.
"""

from __future__ import annotations

import asyncio
import hmac
from collections.abc import AsyncIterator
from dataclasses import dataclass
from urllib.parse import quote, urlsplit

import aiohttp_jinja2
from aiohttp import web

from hydraissue.errors import Forbidden
from hydraissue.sessions import LoginThrottle, Session, Sessions
from web.clientip import client_ip
from web.keys import CONFIG, LOGIN_THROTTLE, SAFE_METHODS, SESSIONS, TRUSTED_PROXIES, Handler
from web.tokens import matches

routes = web.RouteTableDef()
COOKIE = "admin_session"


@dataclass(frozen=True, slots=True)
class AdminAuth:
    """How this request proved it is the admin: a browser session, or the token."""

    session: Session | None  # None: Authorization: Bearer <admin_token>
    session_id: str = ""

    @property
    def csrf(self) -> str:
        return self.session.csrf if self.session else ""


# Set by the guard on every admin request it lets through.
ADMIN = web.RequestKey("admin", AdminAuth)


def is_admin_path(path: str) -> bool:
    return path == "/admin" or path.startswith("/admin/")


def safe_next(raw: str | None) -> str:
    """Where to go after logging in: only a path on this site (no ``//host``,
    ``/\\host``, scheme or control characters); anything else is ``/admin``."""
    if not raw or not raw.startswith("/") or raw.startswith(("//", "/\\")):
        return "/admin"
    if any(ord(c) < 0x21 or c == "\\" for c in raw):
        return "/admin"
    parts = urlsplit(raw)
    if parts.scheme or parts.netloc:
        return "/admin"
    return raw


def _bearer(request: web.Request) -> str | None:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def token_ok(request: web.Request, token: str) -> bool:
    expected = request.app[CONFIG].admin_token
    return bool(expected) and matches(token, expected)


def same_origin(request: web.Request) -> bool:
    """A browser's own word on where a request comes from: ``Sec-Fetch-Site`` when it
    sends one, else ``Origin`` against this site's address."""
    site = request.headers.get("Sec-Fetch-Site")
    if site is not None:
        return site in ("same-origin", "none")
    origin = request.headers.get("Origin")
    if origin is None or origin == "null":
        return origin is None  # a sandboxed or privacy-stripped origin is not ours
    ours = {f"{request.scheme}://{request.host}"}
    base = request.app[CONFIG].base_url.rstrip("/")
    if base:
        parts = urlsplit(base)
        ours.add(f"{parts.scheme}://{parts.netloc}")
    return origin in ours


def cross_site() -> Forbidden:
    return Forbidden(
        "this request came from another site; admin changes are made from the admin pages",
        {"csrf": "origin"},
    )


async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every ``/admin`` request is the admin's or goes to the login form; every change
    made with a session carries the session's CSRF token and comes from this site.
    (Called by web/middleware.py ``authenticate`` for the admin paths.)"""
    token = _bearer(request)
    if token is not None:
        if not token_ok(request, token):
            raise web.HTTPUnauthorized(
                text="invalid admin token: admin pages take Authorization: Bearer <admin_token>",
                headers={"WWW-Authenticate": 'Bearer realm="hydraissue-admin"'},
            )
        request[ADMIN] = AdminAuth(None)
        return await handler(request)
    session_id = request.cookies.get(COOKIE, "")
    session = request.app[SESSIONS].find(session_id)
    if session is None:
        target = request.path_qs if request.method in SAFE_METHODS else request.path
        raise web.HTTPSeeOther(f"/login?next={quote(target, safe='/')}")
    if request.method not in SAFE_METHODS:
        if not same_origin(request):
            raise cross_site()
        form = await request.post()
        sent = form.get("csrf")
        if not isinstance(sent, str) or not hmac.compare_digest(
            sent.encode(), session.csrf.encode()
        ):
            raise Forbidden(
                "the form's security token is missing or out of date; reload the page "
                "and try again",
                {"csrf": "token"},
            )
    request[ADMIN] = AdminAuth(session, session_id)
    return await handler(request)


def see_other(location: str) -> web.Response:
    return web.Response(status=303, headers={"Location": location})


def admin_of(request: web.Request) -> AdminAuth:
    return request[ADMIN]


# -- the login form ----------------------------------------------------------------------


def _login_page(
    request: web.Request, next_path: str, error: str = "", status: int = 200
) -> web.Response:
    context = {"next": next_path, "error": error}
    response = aiohttp_jinja2.render_template("admin/login.html", request, context, status=status)
    response.headers["Cache-Control"] = "no-store"
    return response


@routes.get("/login")
async def login_form(request: web.Request) -> web.StreamResponse:
    next_path = safe_next(request.query.get("next"))
    if request.app[SESSIONS].find(request.cookies.get(COOKIE, "")) is not None:
        raise web.HTTPSeeOther(next_path)
    return _login_page(request, next_path)


@routes.post("/login")
async def login(request: web.Request) -> web.StreamResponse:
    if not same_origin(request):
        raise cross_site()
    form = await request.post()
    next_path = safe_next(str(form.get("next") or ""))
    client = client_ip(request, request.app[TRUSTED_PROXIES])
    throttle = request.app[LOGIN_THROTTLE]
    wait = throttle.retry_after(client)
    if wait:
        refused = _login_page(
            request,
            next_path,
            f"Too many failed logins from this address; try again in {wait} s.",
            status=429,
        )
        refused.headers["Retry-After"] = str(wait)
        return refused
    delay = throttle.delay(client)
    if delay:
        await asyncio.sleep(delay)  # every guess after the first few costs more time
    token = form.get("token")
    if not isinstance(token, str) or not token_ok(request, token.strip()):
        throttle.failed(client)
        return _login_page(request, next_path, "Invalid token", status=401)
    throttle.succeeded(client)
    sessions = request.app[SESSIONS]
    old = request.cookies.get(COOKIE)
    if old:
        await asyncio.to_thread(sessions.close, old)  # a fresh id at every login
    session_id, _ = await asyncio.to_thread(sessions.open)
    response = see_other(next_path)
    config = request.app[CONFIG]
    response.set_cookie(
        COOKIE,
        session_id,
        max_age=config.admin_session_days * 86400,
        path="/",
        httponly=True,
        samesite="Lax",
        secure=config.base_url.startswith("https://"),
    )
    return response


@routes.post("/logout")
async def logout(request: web.Request) -> web.StreamResponse:
    if not same_origin(request):
        raise cross_site()
    session_id = request.cookies.get(COOKIE)
    sessions = request.app[SESSIONS]
    session = sessions.find(session_id or "")
    if session is not None:
        form = await request.post()
        sent = form.get("csrf")
        if not isinstance(sent, str) or not hmac.compare_digest(
            sent.encode(), session.csrf.encode()
        ):
            raise Forbidden(
                "the form's security token is missing or out of date", {"csrf": "token"}
            )
        await asyncio.to_thread(sessions.close, session_id or "")
    response = see_other("/login")
    response.del_cookie(COOKIE, path="/")
    return response


# -- wiring ------------------------------------------------------------------------------


async def admin_sessions(app: web.Application) -> AsyncIterator[None]:
    """Sessions load once the storage holds the data dir (its cleanup_ctx runs first)."""
    config = app[CONFIG]
    sessions = Sessions(config.data_path, config.admin_token, config.admin_session_days * 86400.0)
    await asyncio.to_thread(sessions.load)
    app[SESSIONS] = sessions
    app[LOGIN_THROTTLE] = LoginThrottle()
    yield
