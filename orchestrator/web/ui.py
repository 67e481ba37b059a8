"""The dashboard at /ui: server-rendered pages over the Service's use cases, nothing else.

A sub-application with its own middleware: login, the Origin check on every POST, HTML
error pages and the security headers concern /ui only; the API keeps its problem+json.

Login is a cookie (POST /ui/login with an API token; sessions.py signs the cookie), not a
token kept in sessionStorage: the pages are rendered on the server, and a browser's plain
navigations and form posts carry a cookie but no Authorization header. The cookie is
HttpOnly (no script can read it) and SameSite=Strict; every POST must also come with an
Origin (or Referer) of this host, so another site cannot make a logged-in browser act.
With no ORCH_API_TOKENS the dashboard is open, like the API.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
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
from orchestrator.service import ActionRequest, ListQuery
from orchestrator.web import keys, problems, sessions
from orchestrator.web.auth import Scope, Token, authenticate, parse_tokens

STATIC = Path(__file__).with_name("static")
#: Seconds between the pages' own refreshes.
REFRESH_S = 5
#: Rows in each list of the front page.
LIST_LIMIT = 20

routes = web.RouteTableDef()


@dataclass(frozen=True)
class Viewer:
    """Who is looking: `name` is what the history records for their actions."""

    name: str
    scopes: frozenset[Scope]
    logged_in: bool

    @property
    def can_act(self) -> bool:
        return Scope.ADMIN in self.scopes


TOKENS = web.AppKey("ui_tokens", list[Token])
VIEWER = web.RequestKey("ui_viewer", Viewer)
OPEN = Viewer("anonymous", frozenset(Scope), logged_in=False)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def setup(app: web.Application, settings: Settings) -> None:
    """Mount the dashboard at /ui (and send /ui to /ui/)."""
    ui = web.Application(middlewares=[guard])
    ui[TOKENS] = parse_tokens(settings.api_tokens)
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


def _viewer(request: web.Request) -> Viewer | None:
    tokens = request.app[TOKENS]
    if not tokens:
        return OPEN
    cookie = request.cookies.get(sessions.COOKIE)
    if not cookie:
        return None
    token = sessions.verify(tokens, cookie, request.config_dict[keys.CLOCK].now())
    return Viewer(token.name, token.scopes, logged_in=True) if token else None


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
    viewer = _viewer(request)
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
    form = await request.post()
    target = _next(str(form.get("next", "")))
    token = authenticate(request.app[TOKENS], str(form.get("token", "")).strip())
    error = None
    if token is None:
        error = "That token is not valid."
    elif Scope.READ not in token.scopes:
        error = "That token lacks the 'read' scope the dashboard needs."
    if token is None or error:
        context = {"next": target, "error": error}
        return render(request, "login.html", context, status=401 if token is None else 403)
    response = _see_other(target)
    response.set_cookie(
        sessions.COOKIE,
        sessions.issue(token, request.config_dict[keys.CLOCK].now()),
        max_age=sessions.LIFETIME_S,
        path="/ui",
        httponly=True,
        samesite="Strict",
        secure=request.secure,
    )
    return response


@routes.post("/logout", name="logout")
async def logout(request: web.Request) -> web.StreamResponse:
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
    row = await service.get(ident)
    history = await service.events(ident)
    context = {
        "c": row,
        "history": history,
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
            await service.retry(ident, body.reason, viewer.name)
        else:
            await service.abandon(ident, body.reason, viewer.name)
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
