"""The console's routes: server-rendered pages over the registry and the key ring, mounted at ``/ui``.

A thin adapter like the REST one (serving/rest.py hands every ``/ui`` request here): it reads the same
services the API reads — :class:`~modelport.registry.service.Registry` for models and versions,
:class:`~modelport.releases.manager.ReleaseManager` for the one change it offers (moving an alias, with
the approval and gate rules the API applies), the worker's :class:`~modelport.security.gate.Gate` for
sign-in — and only translates: form in, HTML out. No SQL here; database work runs off the event loop.

Security (docs/console.md):

- every page but the sign-in form and the static files needs a session (ui/sessions.py); without one
  a page redirects to ``/ui/login`` and anything else answers 401;
- every POST needs the session's CSRF token (form field ``csrf`` or header ``X-CSRF-Token``), else 403
  before anything is read or changed; forms are ``application/x-www-form-urlencoded`` only;
- what a role may not do is not shown (the change form is rendered only for ``publish``), and is
  refused anyway when sent (403), audited under the key's identity like the API's changes;
- with an OpenID provider configured (``oidc_client_id``, ``oidc_redirect_url``), people sign in there
  instead (ui/oidc_login.py): ``/ui/oidc/start`` → the provider → ``/ui/oidc/callback``; their changes
  are audited as ``oidc:<identity>``;
- every response carries a strict Content-Security-Policy (no inline script or style, nothing from
  another origin), ``nosniff``, ``no-referrer``, ``frame-ancestors 'none'``; pages are ``no-store``;
  never a CORS header.
"""

from __future__ import annotations

import asyncio
import itertools
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar
from urllib.parse import parse_qs, quote

import jinja2

from modelport.errors import (
    Forbidden,
    InvalidInput,
    ModelNotFound,
    ModelportError,
    RateLimited,
    Unauthenticated,
)
from modelport.monitoring.metrics import LOCAL
from modelport.registry.names import check_alias_name, check_version_number
from modelport.releases.manager import ReleaseManager
from modelport.security.keys import DEV_PRINCIPAL, Principal
from modelport.serving.http import HTTPError, public_message
from modelport.ui import access, approvals, audit, card, compare, live, monitoring, release
from modelport.ui.charts import Series, line_chart
from modelport.ui.oidc_login import OidcLogin
from modelport.ui.sessions import Session, Sessions, console_secret

if TYPE_CHECKING:
    from modelport.releases.policy import Release
    from modelport.releases.store import HistoryEntry
    from modelport.serving.rest import RestApp

__all__ = ["SECURITY_HEADERS", "Console"]

_HERE = Path(__file__).parent
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
SECURITY_HEADERS: tuple[tuple[bytes, bytes], ...] = (
    (b"content-security-policy", CSP.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"cross-origin-resource-policy", b"same-origin"),
)
_NO_STORE = ((b"cache-control", b"no-store"),)
_HTML = b"text/html; charset=utf-8"
_STATIC_TYPES = {".js": b"text/javascript; charset=utf-8", ".css": b"text/css; charset=utf-8"}
_MAX_FORM = 16 * 1024
_COOKIE = "modelport_session"
_LOGIN_COOKIE = "modelport_login"
_PENDING_COOKIE = "modelport_oidc"

Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


@dataclass(slots=True)
class Page:
    """What a handler answers."""

    body: bytes
    status: int = 200
    content_type: bytes = _HTML
    headers: tuple[tuple[bytes, bytes], ...] = ()


@dataclass(slots=True)
class UIRequest:
    method: str
    path: str
    params: dict[str, str]
    headers: dict[str, str]
    cookies: dict[str, str]
    query: dict[str, list[str]]
    client: str | None
    secure: bool  # served over TLS: Secure cookies with the __Host- prefix
    query_string: str = ""
    form: dict[str, str] = field(default_factory=dict)
    session: Session | None = None

    @property
    def principal(self) -> Principal:
        assert self.session is not None, "the route needs a session"
        return self.session.principal

    def arg(self, name: str) -> str:
        values = self.query.get(name)
        return values[-1] if values else ""


def _cookies(header: str) -> dict[str, str]:
    jar: dict[str, str] = {}
    for part in header.split(";"):
        name, sep, value = part.strip().partition("=")
        if sep and name not in jar:  # the first wins: a sub-domain cannot shadow ours (__Host-)
            jar[name] = value
    return jar


def _cookie_name(request: UIRequest, name: str) -> str:
    return f"__Host-{name}" if request.secure else name


def _set_cookie(
    request: UIRequest, name: str, value: str, max_age: int, same_site: str = "Strict"
) -> tuple[bytes, bytes]:
    attributes = f"Path=/; HttpOnly; SameSite={same_site}; Max-Age={max_age}"
    if request.secure:
        attributes += "; Secure"
    return b"set-cookie", f"{_cookie_name(request, name)}={value}; {attributes}".encode()


def _redirect(to: str, *extra: tuple[bytes, bytes]) -> Page:
    return Page(b"", 303, b"text/plain", ((b"location", to.encode()), *extra))


def _serving(aliases: Mapping[str, int], releases: Mapping[str, Release]) -> dict[int, list[str]]:
    """What each version does for traffic now: ``live`` behind an alias, ``canary`` or ``shadow`` of a
    running release (as this worker routes: the registry's state within a poll interval)."""
    roles: dict[int, list[str]] = {}
    for number in aliases.values():
        roles.setdefault(number, []).append("live")
    for running in releases.values():
        if running.canary is not None:
            roles.setdefault(running.canary, []).append("canary")
        if running.shadow is not None:
            roles.setdefault(running.shadow, []).append("shadow")
    return {number: list(dict.fromkeys(found)) for number, found in roles.items()}


Handler = Callable[["Console", UIRequest], Awaitable[Page]]
_NAME = r"(?P<name>[A-Za-z0-9._-]{1,100})"


class Console:
    """The console: routes, templates and static files, over a :class:`RestApp`'s worker."""

    def __init__(self, app: RestApp, session_hours: float = 8.0) -> None:
        self.app = app
        registry = app.worker.registry
        self.sessions = Sessions(console_secret(registry.settings.home), session_hours * 3600)
        self.templates = jinja2.Environment(
            loader=jinja2.FileSystemLoader(_HERE / "templates"),
            autoescape=True,  # every value is escaped, in every template
            undefined=jinja2.StrictUndefined,
            auto_reload=False,
        )
        self.oidc = _oidc_login(app)
        # the Models page's requests/s, p99 and errors: a ring of metric snapshots (ui/live.py)
        self.live = live.LiveNumbers() if registry.settings.metrics else None
        self.templates.filters["q"] = lambda value: quote(str(value), safe="")
        # The files that exist when the server starts, by name: a request can only name one of them
        # (no path is ever joined from a request, so nothing outside the folder can be reached).
        self.static = {
            path.name: (path.read_bytes(), _STATIC_TYPES[path.suffix])
            for path in (_HERE / "static").iterdir()
            if path.suffix in _STATIC_TYPES
        }

    # -- rendering ------------------------------------------------------------------------------

    def render(self, request: UIRequest, template: str, code: int = 200, **values: Any) -> Page:
        session = request.session
        html = self.templates.get_template(template).render(
            principal=session.principal if session else None,
            csrf=session.csrf if session else "",
            **values,
        )
        return Page(html.encode(), code, headers=_NO_STORE)

    # -- handlers -------------------------------------------------------------------------------

    async def home(self, request: UIRequest) -> Page:
        return _redirect("/ui/models")

    async def login_form(self, request: UIRequest, message: str = "", status: int = 200) -> Page:
        cookie, token = self.sessions.login_cookie()
        page = self.render(
            request,
            "login.html",
            status,
            login_csrf=token,
            message=message,
            sso=self.oidc.display_name if self.oidc else None,
        )
        page.headers += (_set_cookie(request, _LOGIN_COOKIE, cookie, 3600),)
        return page

    async def login(self, request: UIRequest) -> Page:
        login_cookie = request.cookies.get(_cookie_name(request, _LOGIN_COOKIE))
        if not self.sessions.login_token_ok(login_cookie, request.form.get("csrf")):
            raise HTTPError(403, "the sign-in form expired or was not sent from this console: reload it")
        token = request.form.get("key", "").strip()
        try:
            principal = await self.app.gate.authenticate(token, request.client)
        except RateLimited as exc:
            page = await self.login_form(request, public_message(exc), 429)
            page.headers += ((b"retry-after", str(max(1, int(exc.retry_after + 0.999))).encode()),)
            return page
        except ModelportError:
            return await self.login_form(request, "That key was not accepted.", 401)
        cookie = self.sessions.start(principal, token)
        lifetime = self.sessions.lifetime
        return _redirect(
            "/ui/models",
            _set_cookie(request, _COOKIE, cookie, lifetime),
            _set_cookie(request, _LOGIN_COOKIE, "", 0),
        )

    async def logout(self, request: UIRequest) -> Page:
        session = request.session
        keys = self.app.gate.keys
        if session is not None and keys is not None:  # without keys (insecure dev) only the cookie goes
            # recorded in the database: the cookie is refused everywhere, even a copy of it
            expires = datetime.fromtimestamp(session.expires, UTC)
            await asyncio.to_thread(keys.end_session, session.id, expires, actor=request.principal.actor)
            await asyncio.to_thread(self.app.gate.reload)  # this worker at once; the others within 0.25 s
        cleared = _set_cookie(request, _COOKIE, "", 0)
        at_provider = None
        if self.oidc is not None and request.principal.subject is not None:
            at_provider = await self.oidc.logout_url()
        if at_provider is None:
            return _redirect("/ui/login", cleared)
        # A page that moves on, not a redirect: the CSP's form-action 'self' would stop a POST from
        # being redirected to the provider's origin.
        page = self.render(request, "continue.html", to=at_provider, title="Signed out")
        page.headers += (cleared,)
        return page

    # -- OpenID sign-in (ui/oidc_login.py) -------------------------------------------------------

    def _sso(self) -> OidcLogin:
        if self.oidc is None:
            raise HTTPError(404, "single sign-on is not configured on this server")
        return self.oidc

    async def oidc_start(self, request: UIRequest) -> Page:
        begun = await self._sso().begin()
        cookie = self.sessions.pending_cookie(begun.state, begun.nonce, begun.verifier)
        # Lax, not Strict: the provider sends the browser back with a cross-site navigation, which
        # carries Lax cookies only. It holds nothing but this sign-in's secrets, for ten minutes.
        return _redirect(begun.url, _set_cookie(request, _PENDING_COOKIE, cookie, 600, "Lax"))

    async def oidc_callback(self, request: UIRequest) -> Page:
        sso = self._sso()
        cleared = _set_cookie(request, _PENDING_COOKIE, "", 0, "Lax")  # one callback per sign-in
        pending = self.sessions.pending(
            request.cookies.get(_cookie_name(request, _PENDING_COOKIE)), request.arg("state")
        )
        if pending is None:
            page = await self.login_form(request, "That sign-in was not started here or has expired.", 403)
        elif request.arg("error") or not request.arg("code"):
            page = await self.login_form(request, "The identity provider did not sign you in.", 401)
        else:
            try:
                principal, expires = await sso.finish(request.arg("code")[:2048], *pending)
            except Forbidden:
                page = await self.login_form(request, "Your groups grant no access to this console.", 403)
            except Unauthenticated:
                page = await self.login_form(request, "The identity provider's answer was not accepted.", 401)
            else:
                cookie, lifetime = self.sessions.start_oidc(principal, expires)
                # A page that moves on to /ui/models rather than a redirect: after the provider's
                # cross-site redirect, a browser would not send the SameSite=Strict session cookie
                # on a further redirect, only on a navigation this page starts.
                page = self.render(request, "continue.html", to="/ui/models", title="Signed in")
                page.headers += (_set_cookie(request, _COOKIE, cookie, lifetime),)
        page.headers += (cleared,)
        return page

    async def static_file(self, request: UIRequest) -> Page:
        found = self.static.get(request.params["file"])
        if found is None:
            raise HTTPError(404, "no such file")
        body, content_type = found
        return Page(body, 200, content_type, ((b"cache-control", b"public, max-age=3600"),))

    async def models(self, request: UIRequest) -> Page:
        query = request.arg("q").strip()[:100]
        started = time.perf_counter()
        records = await asyncio.to_thread(self.app.worker.registry.models)  # two queries, any number
        sees = request.principal.sees
        needle = query.lower()
        shown = [
            m
            for m in records
            if sees(m.name) and (not needle or needle in m.name.lower() or needle in m.description.lower())
        ]
        names = [m.name for m in shown]
        reading = None
        if self.live is not None:
            LOCAL.flush()  # this worker's latest counts, on the loop that counts them (others': ≤ 0.25 s)
            await self.live.refresh()  # a snapshot in a thread when due (every worker's, multi-process)
            reading = self.live.reading(names)
        monitor = self.app.worker.monitor
        states: dict[str, live.Health] = {}
        if monitor is not None and self.live is not None:
            states = self.live.health(await asyncio.to_thread(monitor.latest_samples))
        numbers = {
            name: live.cells(
                reading.models.get(name) if reading is not None else None,
                states.get(name),
                monitored=monitor is not None,
            )
            for name in names
        }
        template = "_model_rows.html" if request.headers.get("hx-request") == "true" else "models.html"
        page = self.render(
            request,
            template,
            models=shown,
            live=numbers,
            window=reading.label if reading is not None else "metrics are off",
            query=query,
            server_ms=round((time.perf_counter() - started) * 1000, 1),
        )
        page.headers += ((b"vary", b"HX-Request"),)
        return page

    def _visible(self, request: UIRequest) -> str:
        name = request.params["name"]
        if not request.principal.sees(name):  # outside the key's patterns: as if it did not exist
            raise ModelNotFound(f"no model named {name!r}")
        return name

    async def model(self, request: UIRequest) -> Page:
        name = self._visible(request)
        registry = self.app.worker.registry
        record = await asyncio.to_thread(registry.model, name)
        before_text = request.arg("before")
        before = int(before_text) if before_text.isdigit() and len(before_text) <= 9 else None
        # A page of the newest versions (two queries, ui/compare.py's PAGE_SIZE), "older" pages after.
        versions = await asyncio.to_thread(
            registry.version_summaries, name, limit=compare.PAGE_SIZE, before=before
        )
        full = len(versions) == compare.PAGE_SIZE
        older = versions[-1].number if full and versions[-1].number > 1 else None
        # Metric evolution: the numeric lineage metrics of this page's versions (one query), oldest
        # first; ten series at most (the chart's colours).
        numbers = sorted(v.number for v in versions)
        recorded = await asyncio.to_thread(registry.version_metrics, name, numbers)
        numeric = {
            n: {k: float(v) for k, v in recorded.get(n, {}).items() if type(v) in (int, float)}
            for n in numbers
        }
        metric_names = list(dict.fromkeys(key for n in numbers for key in numeric[n]))[:10]
        table = [(n, [numeric[n].get(key) for key in metric_names]) for n in numbers]
        chart = line_chart(
            f"Metrics of {name} by version",
            [f"v{n}" for n in numbers],
            [Series(key, tuple(row[i] for _, row in table)) for i, key in enumerate(metric_names)],
        )
        shown_moves = 20

        def moves() -> dict[str, list[tuple[int | None, HistoryEntry]]]:
            """Each alias's latest moves as (from, entry), newest first, for 20 aliases at most: one
            indexed query per alias, reading one entry more than shown for the oldest one's "from"."""
            found: dict[str, list[tuple[int | None, HistoryEntry]]] = {}
            for alias in sorted(record.aliases)[:20]:
                entries = registry.store.releases.history(name, alias, limit=shown_moves + 1)  # oldest first
                # the alias's first state came from nothing, unless it is only the extra entry read
                pairs: list[tuple[HistoryEntry | None, HistoryEntry]] = (
                    [(None, entries[0])] if entries and len(entries) <= shown_moves else []
                )
                pairs += itertools.pairwise(entries)
                found[alias] = [(p.version if p else None, e) for p, e in reversed(pairs)]
            return found

        history = await asyncio.to_thread(moves)
        verdicts = await asyncio.to_thread(registry.store.validation.verdicts, name, numbers)
        return self.render(
            request,
            "model.html",
            model=record,
            versions=versions,
            serving=_serving(record.aliases, self.app.worker.plane.pool.releases().get(name, {})),
            verdicts=verdicts,
            older=older,
            paged=before is not None,
            may_publish=request.principal.may("publish"),
            changed=request.arg("changed")[:40],
            chart=chart if metric_names else None,
            metric_names=metric_names,
            metric_rows=table[::-1],  # newest first, like the versions table
            history=history,
        )

    async def move_alias(self, request: UIRequest) -> Page:
        """Point an alias at another version: the API's ``PUT …/aliases/{alias}``, through the same
        release manager (approvals, promotion gate, verification, audit under the key's identity)."""
        name = self._visible(request)
        request.principal.require("publish")
        alias = request.params["alias"]
        check_alias_name(alias)
        text = request.form.get("version", "")
        if not text.isdigit():
            raise InvalidInput("choose a version number")
        manager = ReleaseManager(self.app.worker.registry)
        result = await asyncio.to_thread(
            manager.set_alias, name, alias, check_version_number(int(text)), actor=request.principal.actor
        )
        status = "pending" if result.get("status") == "pending" else "moved"
        return _redirect(f"/ui/models/{quote(name, safe='')}?changed={status}")

    async def version(self, request: UIRequest) -> Page:
        name = self._visible(request)
        number = int(request.params["number"])
        # Recorded evidence only (ui/card.py): two queries on a thread, no model loaded for the page.
        found = await asyncio.to_thread(card.evidence, self.app.worker, name, number)
        return self.render(request, "version.html", **found.values())

    # method, path, handler, who may call: "open" (no session), "session", or a permission
    ROUTES: ClassVar[tuple[tuple[str, re.Pattern[str], Handler, str], ...]] = (
        ("GET", re.compile(r"/ui/?"), home, "session"),
        ("GET", re.compile(r"/ui/login"), login_form, "open"),
        ("POST", re.compile(r"/ui/login"), login, "open"),
        ("POST", re.compile(r"/ui/logout"), logout, "session"),
        ("GET", re.compile(r"/ui/oidc/start"), oidc_start, "open"),
        ("GET", re.compile(r"/ui/oidc/callback"), oidc_callback, "open"),
        ("GET", re.compile(r"/ui/static/(?P<file>[A-Za-z0-9][A-Za-z0-9._-]{0,99})"), static_file, "open"),
        ("GET", re.compile(r"/ui/models"), models, "read"),
        ("GET", re.compile(rf"/ui/models/{_NAME}"), model, "read"),
        ("POST", re.compile(rf"/ui/models/{_NAME}/aliases/(?P<alias>[^/]{{1,100}})"), move_alias, "publish"),
        ("GET", re.compile(rf"/ui/models/{_NAME}/versions/(?P<number>[0-9]{{1,9}})"), version, "read"),
        ("GET", re.compile(rf"/ui/models/{_NAME}/versions/(?P<number>[0-9]{{1,9}})/card"), card.page, "read"),
        ("GET", re.compile(r"/ui/audit"), audit.page, "admin"),  # as /api/v1/audit
        ("GET", re.compile(r"/ui/approvals"), approvals.page, "publish"),  # as /api/v1/approvals
        ("GET", re.compile(r"/ui/compare"), compare.page, "read"),  # ?model=…&v=…: 2 to 10 versions
        ("POST", re.compile(r"/ui/approvals/(?P<change>[0-9]{1,9})/approve"), approvals.approve, "publish"),
        ("POST", re.compile(r"/ui/approvals/(?P<change>[0-9]{1,9})/reject"), approvals.reject, "publish"),
        # an alias's release (ui/release.py): its numbers, their live fragment, the API's four changes
        ("GET", re.compile(rf"/ui/models/{_NAME}{release.AT}"), release.page, "read"),
        ("GET", re.compile(rf"/ui/models/{_NAME}{release.AT}/arms"), release.arms, "read"),
        ("POST", re.compile(rf"/ui/models/{_NAME}{release.AT}/start"), release.start, "publish"),
        ("POST", re.compile(rf"/ui/models/{_NAME}{release.AT}/promote"), release.promote, "publish"),
        ("POST", re.compile(rf"/ui/models/{_NAME}{release.AT}/rollback"), release.rollback, "publish"),
        ("POST", re.compile(rf"/ui/models/{_NAME}{release.AT}/stop"), release.stop, "publish"),
        # drift per feature over time, prediction drift, live accuracy, label lag (ui/monitoring.py)
        ("GET", re.compile(rf"/ui/models/{_NAME}/monitoring"), monitoring.page, "read"),
        # keys, roles, scopes, quotas and usage (ui/access.py): as /api/v1/keys, admins only
        ("GET", re.compile(r"/ui/access"), access.page, "admin"),
        ("POST", re.compile(r"/ui/access/keys"), access.create_key, "admin"),
        ("POST", re.compile(r"/ui/access/keys/(?P<key>[a-z0-9]{12})/revoke"), access.revoke_key, "admin"),
    )

    # -- ASGI -----------------------------------------------------------------------------------

    async def __call__(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        method, path = scope["method"], scope["path"]
        raw = scope["headers"]
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in raw}
        client = scope.get("client")
        request = UIRequest(
            method,
            path,
            {},
            headers,
            _cookies(headers.get("cookie", "")),
            {},
            client[0] if client else None,
            scope.get("scheme") == "https",
            scope.get("query_string", b"").decode("latin-1"),
        )
        try:
            page = await self._answer(request, receive)
        except Exception as exc:
            page = self._error(request, exc)
        await send(
            {
                "type": "http.response.start",
                "status": page.status,
                "headers": [
                    (b"content-type", page.content_type),
                    (b"content-length", str(len(page.body)).encode()),
                    *SECURITY_HEADERS,
                    *page.headers,
                    *self.app.extra_headers,
                ],
            }
        )
        await send({"type": "http.response.body", "body": page.body})

    async def _answer(self, request: UIRequest, receive: Receive) -> Page:
        self.app._check_host(request.headers.get("host", ""))  # noqa: SLF001 -- the API's own DNS-rebinding guard
        matched = self._match(request)
        if matched is None:
            raise HTTPError(404, f"no page at {request.path[:200]}")
        handler, needs = matched
        if needs != "open":
            request.session = self._session(request)
            if request.session is None:
                if request.method == "GET" and request.headers.get("hx-request") == "true":
                    # a live fragment (the release page's refresh) whose session ended: an XHR would
                    # follow a 303 and swap the sign-in page into the fragment; htmx loads it instead
                    return Page(b"", 200, b"text/plain", ((b"hx-redirect", b"/ui/login"),))
                if request.method == "GET":
                    return _redirect("/ui/login")
                raise HTTPError(401, "sign in first")
        if request.method == "POST":
            request.form = await self._form(request, receive)
            if request.session is not None:
                token = request.form.get("csrf") or request.headers.get("x-csrf-token")
                if not Sessions.csrf_ok(request.session, token):
                    raise HTTPError(403, "missing or wrong CSRF token: reload the page and try again")
        if needs not in ("open", "session"):
            await self.app.gate.limit(request.principal, needs)  # the key's rate applies here too
            if not request.principal.may(needs):
                raise Forbidden(f"key {request.principal.key_id} ({request.principal.role}) may not {needs}")
        return await handler(self, request)

    def _session(self, request: UIRequest) -> Session | None:
        gate = self.app.gate
        cookie = request.cookies.get(_cookie_name(request, _COOKIE))
        return self.sessions.resume(cookie, gate.ring, DEV_PRINCIPAL if gate.insecure else None)

    def _match(self, request: UIRequest) -> tuple[Handler, str] | None:
        for method, pattern, handler, needs in self.ROUTES:
            found = pattern.fullmatch(request.path)
            if found and method == request.method:
                request.params = {k: v for k, v in found.groupdict().items() if v is not None}
                try:
                    request.query = parse_qs(request.query_string, max_num_fields=11)  # compare: model + 10 v
                except ValueError:
                    raise HTTPError(400, "too many query parameters") from None
                return handler, needs
        return None

    async def _form(self, request: UIRequest, receive: Receive) -> dict[str, str]:
        media = request.headers.get("content-type", "").split(";")[0].strip().lower()
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > _MAX_FORM:
            raise HTTPError(413, "the form is too large")
        chunks: list[bytes] = []
        size = 0
        try:
            async with asyncio.timeout(self.app.body_timeout):  # a form that stops is not waited for
                while True:
                    message = await receive()
                    if message["type"] == "http.disconnect":
                        raise HTTPError(400, "client disconnected")
                    chunk = message.get("body", b"")
                    size += len(chunk)
                    if size > _MAX_FORM:
                        raise HTTPError(413, "the form is too large")
                    chunks.append(chunk)
                    if not message.get("more_body", False):
                        break
        except TimeoutError:
            raise HTTPError(408, "the form did not arrive in time") from None
        body = b"".join(chunks)
        if body and media != "application/x-www-form-urlencoded":
            raise HTTPError(415, "the console accepts form posts only")
        try:
            fields = parse_qs(body.decode("utf-8"), max_num_fields=20)
        except (ValueError, UnicodeDecodeError):
            raise HTTPError(400, "the form could not be read") from None
        return {name: values[-1] for name, values in fields.items()}

    def _error(self, request: UIRequest, exc: Exception) -> Page:
        from modelport.serving.rest import log, status_for

        known = isinstance(exc, ModelportError | HTTPError)
        if not known:
            log.error("unexpected error answering a console request", exc_info=exc)
        status = status_for(exc)
        message = public_message(exc) if known else "internal error"
        try:
            return self.render(request, "error.html", status, status=status, message=message)
        except Exception:  # a template that fails must not hide the error
            return Page(message.encode(), status, b"text/plain; charset=utf-8", _NO_STORE)


def _oidc_login(app: RestApp) -> OidcLogin | None:
    """The console's OpenID client, when the issuer's verifier and a console client are configured."""
    settings = app.worker.registry.settings
    verifier = app.gate.oidc
    if verifier is None or not settings.oidc_client_id or not settings.oidc_redirect_url:
        return None
    secret = settings.oidc_client_secret
    return OidcLogin(
        verifier,
        settings.oidc_client_id,
        secret.get_secret_value() if secret is not None else None,
        settings.oidc_redirect_url,
        settings.oidc_display_name,
    )
