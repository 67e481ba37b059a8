"""The dashboard at /ui: server-rendered pages over the Service's use cases, nothing else.

A sub-application with its own middleware: login, the Origin check on every POST, HTML
error pages and the security headers concern /ui only; the API keeps its problem+json.

Login is a cookie (POST /ui/login with an API token; sessions.py keeps the session
server-side), not a
token kept in sessionStorage: the pages are rendered on the server, and a browser's plain
navigations and form posts carry a cookie but no Authorization header. The cookie is
HttpOnly (no script can read it), SameSite=Strict, and Secure when clients reach the
service over TLS (ORCH_PUBLIC_URL, or a trusted proxy's X-Forwarded-Proto); failed logins
are limited per client address. Every POST must also come with an
Origin (or Referer) of this host, so another site cannot make a logged-in browser act.
With no ORCH_API_TOKENS the dashboard is open, like the API.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp_jinja2
import jinja2
from aiohttp import web
from pydantic import ValidationError

from orchestrator import errors
from orchestrator.config import Settings
from orchestrator.domain.model import ProviderName, Status
from orchestrator.service import ActionRequest, Caller, EventsQuery, ListQuery
from orchestrator.store.sessions import Sessions
from orchestrator.web import keys, problems, sessions
from orchestrator.web.access import WHO, is_https
from orchestrator.web.auth import Scope, Token, authenticate, parse_tokens
from orchestrator.web.limits import BucketsByKey

log = logging.getLogger(__name__)

STATIC = Path(__file__).with_name("static")
#: Seconds between the pages' own refreshes.
REFRESH_S = 5
#: Events per page of a cancellation's history (`?after=` pages on): a flood of callbacks
#: cannot make the page unbounded.
HISTORY_PAGE = 100
#: Rows in each list of the front page.
LIST_LIMIT = 20
#: Failed logins allowed per client address: a burst of this many, then one per
#: LOGIN_REFILL_S seconds (per instance, in memory).
LOGIN_FAILURES = 10
LOGIN_REFILL_S = 30.0

routes = web.RouteTableDef()


@dataclass(frozen=True)
class Viewer:
    """Who is looking: `name` is what the history records for their actions."""

    name: str
    scopes: frozenset[Scope]
    logged_in: bool
    accounts: frozenset[str] | None = None

    @property
    def can_act(self) -> bool:
        return Scope.ADMIN in self.scopes

    @property
    def caller(self) -> Caller:
        return Caller(self.name, self.accounts)


TOKENS = web.AppKey("ui_tokens", list[Token])
LOGIN_LIMIT = web.AppKey("ui_login_limit", BucketsByKey)
VIEWER = web.RequestKey("ui_viewer", Viewer)
OPEN = Viewer("anonymous", frozenset(Scope), logged_in=False)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def setup(app: web.Application, settings: Settings) -> None:
    """Mount the dashboard at /ui (and send /ui to /ui/)."""
    ui = web.Application(middlewares=[guard])
    ui[TOKENS] = parse_tokens(settings)
    ui[LOGIN_LIMIT] = BucketsByKey(1 / LOGIN_REFILL_S, LOGIN_FAILURES)
    aiohttp_jinja2.setup(
        ui,
        loader=jinja2.PackageLoader("orchestrator.web", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        filters=FILTERS,
    )
    ui.router.add_static("/static", STATIC, name="static")
    ui.add_routes(routes)

    async def to_front_page(request: web.Request) -> web.StreamResponse:
        raise web.HTTPFound("/ui/")

    app.router.add_get("/ui", to_front_page)
    app.add_subapp("/ui", ui)


# --- login and the guard ----------------------------------------------------------------


async def end_sessions_of_removed_tokens(app: web.Application, settings: Settings) -> None:
    """At start-up: a token gone from ORCH_API_TOKENS keeps no session in the database."""
    names = [t.name for t in settings.tokens()]
    try:
        ended = await _sessions(app).revoke_except(names)
    except errors.DatabaseUnavailable as exc:
        log.warning("could not end the sessions of removed tokens: %s", exc.detail)
        return
    if ended:
        log.info("ended %d dashboard session(s) of tokens no longer configured", ended)


def _sessions(config: Mapping[Any, Any]) -> Sessions:
    """The sessions' store, from the app (or a request's config_dict)."""
    return Sessions(config[keys.STORE].pool)


async def _viewer(request: web.Request) -> Viewer | None:
    tokens = request.app[TOKENS]
    if not tokens:
        return OPEN
    cookie = request.cookies.get(sessions.COOKIE)
    if not cookie:
        return None
    now = request.config_dict[keys.CLOCK].now()
    token = await sessions.verify(_sessions(request.config_dict), tokens, cookie, now)
    if token is None:
        return None
    request[WHO] = token.name
    return Viewer(token.actor, token.scopes, logged_in=True, accounts=token.accounts)


def _same_origin(request: web.Request) -> bool:
    """The POST comes from a page of this host (CSRF: with SameSite=Strict, belt and braces)."""
    source = request.headers.get("Origin") or request.headers.get("Referer")
    if not source or source == "null":
        return False
    return urlsplit(source).netloc == request.host


_PUBLIC = frozenset({"login", "log_in", "static"})

SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; "
        "form-action 'self'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
}


@web.middleware
async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        response = await _guarded(request, handler)
    except errors.OrchestratorError as exc:
        status = problems.from_error(exc).status
        response = _error_page(request, status, exc.detail)
        if isinstance(exc, errors.TooManyRequests):
            response.headers["Retry-After"] = str(exc.extra["retry_after_s"])
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        response = _error_page(request, exc.status, exc.reason)
    response.headers.update(SECURITY_HEADERS)
    if request.match_info.route.name != "static":
        response.headers["Cache-Control"] = "no-store"
    return response


async def _guarded(request: web.Request, handler: Handler) -> web.StreamResponse:
    if request.method == "POST" and not _same_origin(request):
        raise errors.Forbidden("this form was not sent from a page of the dashboard")
    viewer = await _viewer(request)
    if viewer is None:
        if request.match_info.route.name in _PUBLIC:
            return await handler(request)
        login = request.app.router["login"].url_for().with_query(next=request.path_qs)
        raise web.HTTPSeeOther(login)
    if Scope.READ not in viewer.scopes:
        raise errors.Forbidden("this token lacks the 'read' scope the dashboard needs")
    request[VIEWER] = viewer
    return await handler(request)


def _error_page(request: web.Request, status: int, detail: str) -> web.Response:
    return render(request, "error.html", {"status": status, "detail": detail}, status=status)


def render(
    request: web.Request, template: str, context: dict[str, Any], *, status: int = 200
) -> web.Response:
    now = request.config_dict[keys.CLOCK].now()
    base = {"viewer": request.get(VIEWER), "now": now, "refresh_s": 0, "request": request}
    return aiohttp_jinja2.render_template(template, request, base | context, status=status)


@routes.get("/login", name="login")
async def login_page(request: web.Request) -> web.Response:
    if not request.app[TOKENS]:
        raise web.HTTPSeeOther("/ui/")
    return render(request, "login.html", {"next": _next(request.query.get("next")), "error": None})


@routes.post("/login", name="log_in")
async def login(request: web.Request) -> web.StreamResponse:
    failures = request.app[LOGIN_LIMIT].get(request.remote or "?")
    if failures.available() < 1:
        raise errors.TooManyRequests(
            "too many failed logins from this address; wait before trying again",
            retry_after_s=failures.wait_for(1),
        )
    form = await request.post()
    target = _next(str(form.get("next", "")))
    token = authenticate(request.app[TOKENS], str(form.get("token", "")).strip())
    error = None
    if token is None:
        failures.take_up_to(1)
        error = "That token is not valid."
    elif Scope.READ not in token.scopes:
        error = "That token lacks the 'read' scope the dashboard needs."
    if token is None or error:
        context = {"next": target, "error": error}
        return render(request, "login.html", context, status=401 if token is None else 403)
    response = _see_other(target)
    now = request.config_dict[keys.CLOCK].now()
    response.set_cookie(
        sessions.COOKIE,
        await sessions.issue(_sessions(request.config_dict), token, now),
        max_age=sessions.LIFETIME_S,
        path="/ui",
        httponly=True,
        samesite="Strict",
        secure=is_https(request),
    )
    return response


@routes.post("/logout", name="logout")
async def logout(request: web.Request) -> web.StreamResponse:
    """Ends the session on the server: the cookie, copied or kept, no longer opens it."""
    await sessions.close(_sessions(request.config_dict), request.cookies.get(sessions.COOKIE, ""))
    response = _see_other("/ui/login")
    response.del_cookie(sessions.COOKIE, path="/ui")
    return response


def _see_other(location: str) -> web.Response:
    return web.Response(status=303, headers={"Location": location})


def _next(target: str | None) -> str:
    """Only a dashboard path: a login must not redirect anywhere else."""
    if target and target.startswith("/ui/") and not target.startswith("//"):
        return target
    return "/ui/"


# --- the pages --------------------------------------------------------------------------


@routes.get("/", name="overview")
async def overview(request: web.Request) -> web.Response:
    data = await request.config_dict[keys.SERVICE].overview(LIST_LIMIT)
    return render(
        request,
        "overview.html",
        {
            "o": data,
            "providers": [p.value for p in ProviderName],
            "statuses": [s.value for s in Status],
            "refresh_s": REFRESH_S,
        },
    )


@routes.get("/search", name="search")
async def search(request: web.Request) -> web.StreamResponse:
    text = request.query.get("q", "").strip()
    if not text:
        raise web.HTTPSeeOther("/ui/")
    service = request.config_dict[keys.SERVICE]
    try:
        ident = uuid.UUID(text)
    except ValueError:
        pass
    else:
        await service.get(ident)
        raise web.HTTPSeeOther(f"/ui/cancellations/{ident}")
    try:
        query = ListQuery.model_validate({"resource_id": text, "limit": 100})
    except ValidationError as exc:
        raise errors.InvalidRequest.from_validation(exc, "search") from None
    page = await service.list_cancellations(query)
    context = {"q": text, "rows": page.items, "more": page.next is not None}
    return render(request, "search.html", context | {"refresh_s": REFRESH_S})


@routes.get("/cancellations/{id}", name="cancellation")
async def cancellation(request: web.Request) -> web.Response:
    return await _detail(request, _ident(request))


async def _detail(
    request: web.Request,
    ident: uuid.UUID,
    *,
    error: str | None = None,
    reason: str = "",
    status: int = 200,
) -> web.Response:
    service = request.config_dict[keys.SERVICE]
    after = request.query.get("after")
    try:
        query = EventsQuery.model_validate(
            {"limit": HISTORY_PAGE, **({"after": after} if after is not None else {})}
        )
    except ValidationError as exc:
        raise errors.InvalidRequest.from_validation(exc, "history") from None
    row = await service.get(ident)
    history = await service.events(ident, query)
    context = {
        "c": row,
        "history": history.items,
        "history_after": query.after,
        "history_next": history.next,
        "done": request.query.get("done"),
        "error": error,
        "reason": reason,
        "refresh_s": REFRESH_S,
    }
    return render(request, "cancellation.html", context, status=status)


@routes.post(r"/cancellations/{id}/{action:retry|abandon}", name="act")
async def act(request: web.Request) -> web.StreamResponse:
    ident = _ident(request)
    viewer = request[VIEWER]
    if not viewer.can_act:
        raise errors.Forbidden("this token lacks the 'admin' scope the actions need")
    form = await request.post()
    reason = str(form.get("reason", ""))
    action = request.match_info["action"]
    service = request.config_dict[keys.SERVICE]
    try:
        body = ActionRequest.model_validate({"reason": reason.strip()})
        if action == "retry":
            await service.retry(ident, body.reason, viewer.caller)
        else:
            await service.abandon(ident, body.reason, viewer.caller)
    except ValidationError as exc:
        problem = errors.InvalidRequest.from_validation(exc, "action")
        return await _detail(request, ident, error=problem.detail, reason=reason, status=422)
    except errors.Conflict as exc:
        return await _detail(request, ident, error=exc.detail, reason=reason, status=409)
    raise web.HTTPSeeOther(f"/ui/cancellations/{ident}?done={action}")


def _ident(request: web.Request) -> uuid.UUID:
    try:
        return uuid.UUID(request.match_info["id"])
    except ValueError:
        raise errors.NotFound(f"no cancellation {request.match_info['id']!r}") from None


# --- filters ----------------------------------------------------------------------------


def _moment(value: datetime | str | None) -> datetime | None:
    """A column's datetime, or a time kept as ISO text inside JSON (last_error.at)."""
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value)
        except ValueError:
            return None
    return value


def when(value: datetime | str | None) -> str:
    moment = _moment(value)
    return "—" if moment is None else moment.strftime("%Y-%m-%d %H:%M:%S")


def ago(value: datetime | str | None, now: datetime) -> str:
    moment = _moment(value)
    if moment is None:
        return "—"
    seconds = (now - moment).total_seconds()
    return f"{duration(seconds)} ago" if seconds >= 0 else f"in {duration(-seconds)}"


def duration(seconds: float) -> str:
    """Short and human: 42 s, 3 min 05 s, 2 h 10 min, 3 d 4 h."""
    s = int(max(seconds, 0))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    if s < 86400:
        return f"{s // 3600} h {s % 3600 // 60:02d} min"
    return f"{s // 86400} d {s % 86400 // 3600} h"


FILTERS: dict[str, Callable[..., str]] = {
    "when": when,
    "ago": ago,
    "duration": duration,
}
