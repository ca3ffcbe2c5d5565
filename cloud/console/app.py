"""The console's web application: pages, JSON API, live stream, actions, and who may see what.

Every route but ``/login`` and ``/static/`` needs a session; every route that
names a device looks up the device's site and answers 404 to a user of another
site (never 403: that would confirm the device exists).  The fleet page and the
rollout actions are for operators (403 for others).  Every POST carries the
session's CSRF token (form field ``csrf`` or header ``X-CSRF-Token``).

One thread owns the database (:class:`DbWorker`): the read model
(:class:`~cloud.console.state.ConsoleState`), the accounts and the nap sheet are
called on it and nowhere else, one call at a time, so the event loop never waits
on a query and a connection is never shared between threads.  Password hashing
(tens of milliseconds of scrypt) runs on the loop's default executor instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import functools
import ipaddress
import json
import logging
import re
import secrets
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Literal, TypeVar
from urllib.parse import quote

import jinja2
import msgspec
from aiohttp import web
from markupsafe import Markup

from cloud.config import NotifierConfig, StoreConfig, describe_dsn
from cloud.console import hydrograph, i18n, naps
from cloud.console.accounts import (
    LANGUAGES,
    Accounts,
    LoginLimiter,
    Session,
    User,
    csrf_token,
    possible_name,
    same_token,
    verify_password,
)
from cloud.console.errors import RolloutActionFailed
from cloud.console.live import LiveHub, labelled, stream
from cloud.console.model import DeviceState, EventRow
from cloud.console.state import DEPLOY_TIMEOUT_S, ConsoleState, deploy_words
from cloud.database import Database, PostgresDatabase, SqliteDatabase

log = logging.getLogger(__name__)

_T = TypeVar("_T")

HERE: Final = Path(__file__).resolve().parent
TEMPLATES: Final = HERE / "templates"
STATIC: Final = HERE / "static"
SESSION_COOKIE: Final = "satoyama_session"
LOGIN_COOKIE: Final = "satoyama_login"
"""The login form's double-submit CSRF token (before there is a session)."""
JST: Final = dt.timezone(dt.timedelta(hours=9), "JST")
MAP_EVENTS: Final = 50
FLASH_MAX: Final = 10_000
"""Messages kept for sessions' next pages; past this (sessions that never came back for
theirs) they are let go."""

SHEET_POLICY: Final = (
    "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
"""The nap sheet's policy: its own inline styles, and nothing that runs."""

HASHING_THREADS: Final = 2
"""Password checks at once (each scrypt check ~16 MiB of memory)."""

NapAck = Callable[[str, str, str, float], Awaitable[None]]
"""Tells a device that a person acknowledged a nap alarm: (device, cot, by, at)."""


class DbWorker:
    """The console's one database thread: every call on the database runs here, in order."""

    def __init__(self) -> None:
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="console-db")

    async def call(self, fn: Callable[[], _T]) -> _T:
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn)

    def close(self) -> None:
        self._pool.shutdown(wait=True)


def connect(store: StoreConfig) -> Database:
    """Open the notifier's database (creating its tables if the notifier never ran)."""
    if store.backend == "postgresql":
        assert store.dsn is not None  # checked with the configuration
        return PostgresDatabase.connect(store.dsn.reveal(), describe_dsn(store.dsn))
    assert store.path is not None  # checked with the configuration
    return SqliteDatabase.connect(Path(store.path))


@dataclass
class Console:
    """Everything the routes share; open with :func:`open_console`."""

    config: NotifierConfig
    worker: DbWorker
    db: Database
    state: ConsoleState
    accounts: Accounts
    clock: Callable[[], float] = time.time
    nap_ack: NapAck | None = None
    limiter: LoginLimiter = field(init=False)
    hub: LiveHub = field(init=False)

    def __post_init__(self) -> None:
        self.limiter = LoginLimiter(self.config.console.login_tries)
        self.hub = LiveHub(self._poll, revalidate=self._live_sessions)
        self.hashing = ThreadPoolExecutor(max_workers=HASHING_THREADS, thread_name_prefix="scrypt")
        """Password checks: scrypt takes ~16 MiB and tens of ms each; a few threads bound
        both what a flood of logins costs and the memory their allocator arenas keep."""
        self.flash: dict[tuple[str, str], str] = {}
        """(session, page) -> a message for that session's next view of that page: what the
        deploy tool said (the fleet page), that an action was recorded (a device page).
        Only this console writes them, never a link."""

    def say(self, session: str, page: str, message: str) -> None:
        """Show ``message`` once, on ``session``'s next view of ``page``."""
        if len(self.flash) >= FLASH_MAX:
            self.flash.clear()
        self.flash[(session, page)] = message

    def said(self, session: str, page: str) -> str | None:
        """The message left for this view of ``page`` (then gone), if any."""
        return self.flash.pop((session, page), None)

    async def call(self, fn: Callable[[], _T]) -> _T:
        return await self.worker.call(fn)

    async def _poll(self) -> tuple[list[EventRow], list[DeviceState]]:
        now = self.clock()

        def work() -> tuple[list[EventRow], list[DeviceState]]:
            events = self.state.catch_up(now=now)
            return events, self.state.changed_states()

        return await self.call(work)

    async def _live_sessions(self, hashes: frozenset[str]) -> frozenset[str]:
        return await self.call(
            functools.partial(self.accounts.live_sessions, hashes, now=self.clock())
        )

    async def close(self) -> None:
        self.hub.close_all()
        with contextlib.suppress(Exception):
            await self.call(self.db.close)
        self.worker.close()
        self.hashing.shutdown(wait=True)


def deploy_args(config: NotifierConfig) -> tuple[str, ...]:
    """How ``satoyama-deploy rollout announce`` reaches the broker: the notifier's
    ``[mqtt]`` host, port and prefix; under TLS the fleet CA and the rollout publisher's
    certificate (``[console] rollout_cert_file``, else the console's own
    ``mqtt_cert_file``: the broker must let it write ``cmd/update``)."""
    m = config.mqtt
    args = ["--broker", f"{m.host}:{m.port}", "--prefix", m.topic_prefix]
    if m.tls is not None:
        args += ["--tls-ca", m.tls.ca_file]
        cfg = config.console
        cert, key = cfg.rollout_cert_file, cfg.rollout_key_file
        if cert is None or key is None:
            cert, key = cfg.mqtt_cert_file, cfg.mqtt_key_file
        if cert is not None and key is not None:
            args += ["--tls-cert", cert, "--tls-key", key]
    return tuple(args)


async def run_deploy(commands: list[list[str]], *, timeout_s: float = DEPLOY_TIMEOUT_S) -> str:
    """Run ``satoyama-deploy`` commands in turn as child processes of the event loop (never
    on the database thread: a slow broker holds up only this request); what they said.
    :class:`RolloutActionFailed` with the tool's words when one refuses, fails or runs
    past ``timeout_s``."""
    said: list[str] = []
    for command in commands:
        try:
            process = await asyncio.create_subprocess_exec(
                *command,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
        except OSError as exc:
            raise RolloutActionFailed(" ".join([*said, f"satoyama-deploy: {exc}"])) from exc
        try:
            out, err = await asyncio.wait_for(process.communicate(), timeout_s)
        except (TimeoutError, asyncio.CancelledError) as exc:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()
            if isinstance(exc, asyncio.CancelledError):
                raise
            raise RolloutActionFailed(
                " ".join([*said, f"satoyama-deploy did not finish in {timeout_s:g} s"])
            ) from None
        code = process.returncode if process.returncode is not None else -1
        words = deploy_words(out.decode(errors="replace"), err.decode(errors="replace"), code)
        if code != 0:
            raise RolloutActionFailed(" ".join([*said, words]))
        said.append(words)
    return " ".join(said)


async def open_console(
    config: NotifierConfig,
    *,
    clock: Callable[[], float] = time.time,
    nap_ack: NapAck | None = None,
) -> Console:
    """Connect, create the console's tables, and return the shared :class:`Console`."""
    worker = DbWorker()
    try:
        db = await worker.call(lambda: connect(config.store))
        fleet_db = Path(config.console.fleet_db) if config.console.fleet_db else None

        def build() -> tuple[ConsoleState, Accounts]:
            state = ConsoleState(
                db,
                heartbeat_timeout_s=config.devices.heartbeat_timeout_s,
                fleet_db=fleet_db,
                deploy_command=(sys.executable, "-m", "deploy.cli"),
                deploy_args=deploy_args(config),
            )
            state.open()
            accounts = Accounts(db)
            accounts.open()
            return state, accounts

        state, accounts = await worker.call(build)
    except BaseException:
        worker.close()
        raise
    return Console(
        config=config,
        worker=worker,
        db=db,
        state=state,
        accounts=accounts,
        clock=clock,
        nap_ack=nap_ack,
    )


# --- keys on the application and the request ---------------------------------------

CONSOLE: Final = web.AppKey("console", Console)
TEMPLATE_ENV: Final = web.AppKey("jinja", jinja2.Environment)
HUB_TASK: Final = web.AppKey("hub_task", asyncio.Task[None])
SESSION: Final = web.RequestKey("session", Session)
TOKEN: Final = web.RequestKey("token", str)


def _console(request: web.Request) -> Console:
    return request.app[CONSOLE]


def _session(request: web.Request) -> Session:
    session: Session | None = request.get(SESSION)
    assert session is not None, "route needs a session (the auth middleware)"
    return session


def _user(request: web.Request) -> User:
    return _session(request).user


# --- pages -------------------------------------------------------------------------


def _when(value: float | str | None, language: str = "ja") -> str:
    """A time as people read it here: Japan time, to the minute."""
    if value is None:
        return i18n.text(language, "never")
    if isinstance(value, str):
        try:
            moment = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return value
    else:
        moment = dt.datetime.fromtimestamp(value, dt.UTC)
    return moment.astimezone(JST).strftime("%Y-%m-%d %H:%M")


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    s = int(seconds)
    d, s = divmod(s, 86400)
    h, s = divmod(s, 3600)
    m, _ = divmod(s, 60)
    return f"{d}d {h}h" if d else f"{h}h {m}m" if h else f"{m}m"


def _bytes(n: int | None) -> str:
    if n is None:
        return "-"
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n} B"


def template_env() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["duration"] = _duration
    env.filters["bytes"] = _bytes
    env.filters["urlpart"] = lambda s: quote(str(s), safe="")
    return env


def render(
    request: web.Request,
    template: str,
    *,
    status: int = 200,
    language: str | None = None,
    **context: Any,
) -> web.Response:
    console = _console(request)
    session: Session | None = request.get(SESSION)
    user = session.user if session is not None else None
    lang = language or (user.language if user is not None else _anonymous_language(request))
    token: str | None = request.get(TOKEN)
    page = (
        request.app[TEMPLATE_ENV]
        .get_template(template)
        .render(
            lang=lang,
            t=functools.partial(i18n.text, lang),
            kind_name=functools.partial(i18n.kind_name, lang),
            posture=functools.partial(i18n.posture_name, lang),
            when=functools.partial(_when, language=lang),
            user=user,
            csrf=csrf_token(token) if isinstance(token, str) and user is not None else "",
            console=console.config.console,
            path=request.path,
            **context,
        )
    )
    return web.Response(text=page, status=status, content_type="text/html", charset="utf-8")


def _anonymous_language(request: web.Request) -> str:
    lang = request.query.get("lang", "")
    return lang if lang in LANGUAGES else i18n.DEFAULT_LANGUAGE


def _json(value: Any, *, status: int = 200) -> web.Response:
    return web.Response(
        body=msgspec.json.encode(value), status=status, content_type="application/json"
    )


def _is_api(request: web.Request) -> bool:
    return request.path.startswith("/api/")


# --- middleware --------------------------------------------------------------------

PUBLIC: Final = ("/login", "/static/")


@web.middleware
async def errors(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Errors as pages in the user's language (or JSON under ``/api/``)."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status not in (400, 403, 404, 405):
            raise
        if _is_api(request):
            return _json({"error": exc.reason}, status=exc.status)
        key = 404 if exc.status == 405 else exc.status
        return render(
            request,
            "error.html",
            status=exc.status,
            title=f"error_{key}",
            message=f"error_{key}_text",
        )
    except Exception:  # a page must say something went wrong, not hang up
        log.exception("console: %s %r failed", request.method, request.path)
        if _is_api(request):
            return _json({"error": "internal error"}, status=500)
        return render(
            request, "error.html", status=500, title="error_500", message="error_500_text"
        )


@web.middleware
async def authenticate(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Find the session; send the anonymous to /login (pages) or answer 401 (API);
    refuse a POST without the session's CSRF token."""
    if request.path == "/login" or request.path.startswith("/static/"):
        return await handler(request)
    console = _console(request)
    token = request.cookies.get(SESSION_COOKIE)
    session = None
    if token:
        session = await console.call(
            functools.partial(console.accounts.session, token, now=console.clock())
        )
    if session is None or token is None:
        if _is_api(request):
            return _json({"error": "login required"}, status=401)
        raise web.HTTPSeeOther("/login")
    request[SESSION] = session
    request[TOKEN] = token
    if request.method == "POST":
        given = request.headers.get("X-CSRF-Token")
        if given is None and request.content_type in (
            "application/x-www-form-urlencoded",
            "multipart/form-data",
        ):
            form = await request.post()
            value = form.get("csrf")
            given = value if isinstance(value, str) else None
        if not same_token(given, csrf_token(token)):
            raise web.HTTPBadRequest(reason="CSRF token missing or wrong")
    return await handler(request)


def security_headers(console: Console) -> Callable[[web.Request, web.StreamResponse], Any]:
    tiles = console.config.console.tile_origin
    img = "'self' data:" + (f" {tiles}" if tiles else "")
    policy = "; ".join(
        (
            "default-src 'self'",
            f"img-src {img}",
            "script-src 'self'",
            "style-src 'self'",
            "connect-src 'self'",
            "font-src 'self'",
            "object-src 'none'",
            "base-uri 'none'",
            "form-action 'self'",
            "frame-ancestors 'none'",
        )
    )

    async def add(request: web.Request, response: web.StreamResponse) -> None:
        response.headers.setdefault("Content-Security-Policy", policy)
        response.headers["X-Frame-Options"] = "DENY"
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Referrer-Policy"] = "same-origin"
        response.headers.setdefault("Cache-Control", "no-store")
        if request.path.startswith("/static/"):
            response.headers["Cache-Control"] = "public, max-age=3600"

    return add


# --- login and logout ----------------------------------------------------------------


def _set_cookie(
    console: Console, response: web.StreamResponse, name: str, value: str, max_age: int
) -> None:
    response.set_cookie(
        name,
        value,
        max_age=max_age,
        path="/",
        secure=console.config.console.cookie_secure,
        httponly=True,
        samesite="Lax",
    )


async def login_page(request: web.Request) -> web.Response:
    console = _console(request)
    token = request.cookies.get(LOGIN_COOKIE) or secrets.token_urlsafe(32)
    response = render(request, "login.html", login_csrf=token, error=None, name="")
    _set_cookie(console, response, LOGIN_COOKIE, token, 3600)
    return response


async def login(request: web.Request) -> web.StreamResponse:
    console = _console(request)
    form = await request.post()
    name = str(form.get("name", "")).strip()
    password = str(form.get("password", ""))
    lang = str(form.get("lang", "")) if form.get("lang") in LANGUAGES else None
    cookie = request.cookies.get(LOGIN_COOKIE)
    if cookie is None or not same_token(str(form.get("csrf", "")), cookie):
        raise web.HTTPBadRequest(reason="login form token missing or wrong")
    address = client_address(request, console.config.console.trusted_networks)
    now = console.clock()

    def refused(key: str, status: int) -> web.Response:
        return render(
            request, "login.html", status=status, language=lang,
            login_csrf=cookie, error=key, name=name,
        )  # fmt: skip

    if not possible_name(name):
        # no account can have it: nothing to look up, nothing for the limiter to keep
        log.info("console: failed login for a name no account can have from %s", address)
        name = ""
        return refused("login_wrong", 401)
    if not console.limiter.allowed(name, address, now=now):
        response = refused("login_limited", 429)
        response.headers["Retry-After"] = str(int(console.limiter.window_s))
        return response
    found = await console.call(functools.partial(console.accounts.credentials, name))
    stored = found[1] if found is not None else None
    ok = await asyncio.get_running_loop().run_in_executor(
        console.hashing, verify_password, password, stored
    )
    if not ok or found is None:
        console.limiter.failed(name, address, now=now)
        log.info("console: failed login for %r from %s", name, address)
        return refused("login_wrong", 401)
    console.limiter.succeeded(name, address)
    hours = console.config.console.session_hours
    token = await console.call(
        functools.partial(console.accounts.start_session, name, now=now, hours=hours)
    )
    log.info("console: %s logged in from %s", name, address)
    response = web.HTTPSeeOther("/")
    _set_cookie(console, response, SESSION_COOKIE, token, int(hours * 3600))
    response.del_cookie(LOGIN_COOKIE, path="/")
    raise response


async def logout(request: web.Request) -> web.StreamResponse:
    console = _console(request)
    token = request[TOKEN]
    await console.call(functools.partial(console.accounts.end_session, token))
    console.hub.end_session(_session(request).token_hash)
    response = web.HTTPSeeOther("/login")
    response.del_cookie(SESSION_COOKIE, path="/")
    raise response


async def set_language(request: web.Request) -> web.StreamResponse:
    console = _console(request)
    form = await request.post()
    language = form.get("language")
    if language not in LANGUAGES:
        raise web.HTTPBadRequest(reason="unknown language")
    user = _user(request)
    await console.call(functools.partial(console.accounts.set_language, user.name, str(language)))
    back = str(form.get("next", "/"))
    raise web.HTTPSeeOther(back if _LOCAL_PATH.fullmatch(back) else "/")


Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def client_address(request: web.Request, trusted: tuple[Network, ...]) -> str:
    """The client's address: the connection's own, unless the connection comes from a
    trusted reverse proxy (``[console] trusted_proxies``); then the right-most entry of
    ``X-Forwarded-For`` that is not itself a trusted proxy (what the nearest trusted proxy
    saw connect to it: the entries left of it are whatever the client wrote)."""
    peer = request.remote or "?"
    if not trusted or not _within(peer, trusted):
        return peer
    forwarded = ",".join(request.headers.getall("X-Forwarded-For", ()))
    for entry in reversed(forwarded.split(",")):
        try:
            address = ipaddress.ip_address(entry.strip())
        except ValueError:
            return peer  # not what a proxy writes: count it against the proxy
        if not any(address in net for net in trusted):
            return str(address)
    return peer


def _within(address: str, trusted: tuple[Network, ...]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in net for net in trusted)


#: A path on this console to go back to: no scheme, no host (``//``), no backslash (which
#: browsers read as ``/``), no control characters.
_LOCAL_PATH: Final = re.compile(r"/(?![/\\])[A-Za-z0-9/_.~%?=&+-]*")


# --- authorisation -------------------------------------------------------------------


async def _device_for(request: web.Request) -> str:
    """The ``{id}`` of the URL if the user may see its site; 404 otherwise."""
    console = _console(request)
    device = request.match_info["id"]
    site = await console.call(functools.partial(console.state.device_site, device))
    if not _user(request).may_see(site):
        raise web.HTTPNotFound()
    return device


def _operator(request: web.Request) -> User:
    user = _user(request)
    if not user.operator:
        raise web.HTTPForbidden()
    return user


# --- pages and API -------------------------------------------------------------------


def _map_attrs(request: web.Request) -> dict[str, str]:
    """The data attributes of ``div#map`` that ``static/map.js`` reads."""
    cfg = _console(request).config.console
    return {
        "data-api": "/api/map",
        "data-live": "/api/live",
        "data-events": "/api/events",
        "data-device-url": "/device/",
        "data-tiles": cfg.tile_url,
        "data-credit": cfg.credit,
        "data-language": _user(request).language,
        "data-center-lat": f"{cfg.center_lat:g}",
        "data-center-lon": f"{cfg.center_lon:g}",
        "data-zoom": str(cfg.zoom),
    }


def _labels_json(language: str) -> Markup:
    """The map script's labels as JSON safe inside ``<script type="application/json">``."""
    text = json.dumps(i18n.labels(language), ensure_ascii=False)
    return Markup(text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026"))


async def map_page(request: web.Request) -> web.Response:
    console = _console(request)
    user = _user(request)
    now = console.clock()

    def work() -> tuple[list[DeviceState], list[EventRow]]:
        sites = user.visible_sites
        return console.state.map(sites, now=now), console.state.events(sites, limit=MAP_EVENTS)

    devices, events = await console.call(work)
    return render(
        request,
        "map.html",
        devices=devices,
        events=[labelled(e, user.language) for e in events],
        map_attrs=_map_attrs(request),
        labels_json=_labels_json(user.language),
    )


async def api_map(request: web.Request) -> web.Response:
    console = _console(request)
    user = _user(request)
    devices = await console.call(
        functools.partial(console.state.map, user.visible_sites, now=console.clock())
    )
    cfg = console.config.console
    return _json({"devices": devices, "tiles": {"url": cfg.tile_url, "credit": cfg.credit}})


async def _device_page(request: web.Request) -> tuple[str, Any]:
    console = _console(request)
    device = await _device_for(request)
    page = await console.call(
        functools.partial(console.state.device_page, device, now=console.clock())
    )
    if page is None:
        raise web.HTTPNotFound()
    user = _user(request)
    # a device that moved between sites: its old site's events stay with that site
    events = [labelled(e, user.language) for e in page.events if user.may_see(e.site)]
    return device, msgspec.structs.replace(page, events=events)


async def api_device(request: web.Request) -> web.Response:
    _, page = await _device_page(request)
    return _json(page)


async def device_page(request: web.Request) -> web.Response:
    console = _console(request)
    device, page = await _device_page(request)
    lang = _user(request).language
    actions = await console.call(functools.partial(console.state.actions, device))
    # only what this console said to this session: never words from a link
    note = console.said(_session(request).token_hash, _device_path(device))
    now = console.clock()
    graphs_24h = [
        Markup(hydrograph.svg(h, language=lang, width=640, height=240, now=now, window_s=86400.0))
        for h in page.hydrographs_24h
    ]
    graphs_7d = [
        Markup(
            hydrograph.svg(h, language=lang, width=640, height=240, now=now, window_s=7 * 86400.0)
        )
        for h in page.hydrographs_7d
    ]
    return render(
        request,
        "device.html",
        device=device,
        page=page,
        actions=actions,
        graphs_24h=graphs_24h,
        graphs_7d=graphs_7d,
        done=note == DONE,
        unsent=note == UNSENT,
    )


async def sheet_page(request: web.Request) -> web.Response:
    console = _console(request)
    device = await _device_for(request)
    lang = _user(request).language
    now = console.clock()
    html = await console.call(
        functools.partial(naps.sheet_html, console.db, device, language=lang, now=now)
    )
    if html is None:
        raise web.HTTPNotFound()
    # the console's header and the way back above the sheet, its body in <main>; the
    # sheet's own style and grid stay as the device renders them
    bar = render(request, "_sheet_bar.html", device=device).text or ""
    html = naps.sheet_page(html, bar, title=f"{device} | {i18n.text(lang, 'app')}")
    response = web.Response(text=html, content_type="text/html", charset="utf-8")
    # The sheet is the device's own printable page: its layout is an inline style sheet
    # (and column widths in style attributes).  Styles only: still no script at all.
    response.headers["Content-Security-Policy"] = SHEET_POLICY
    return response


async def fleet_page(request: web.Request) -> web.Response:
    _operator(request)
    console = _console(request)
    fleet = await console.call(functools.partial(console.state.fleet, now=console.clock()))
    # only what this console said to this session: never words from a link
    message = console.said(_session(request).token_hash, "/fleet")
    return render(request, "fleet.html", fleet=fleet, message=message)


async def api_events(request: web.Request) -> web.Response:
    """The latest events of the user's sites, newest first (what the map page lists; the
    page fetches it again when the live stream says ``reload``)."""
    console = _console(request)
    user = _user(request)
    events = await console.call(
        functools.partial(console.state.events, user.visible_sites, limit=MAP_EVENTS)
    )
    return _json({"events": [labelled(e, user.language) for e in events]})


async def live(request: web.Request) -> web.StreamResponse:
    console = _console(request)
    session = _session(request)
    refused = console.hub.refusal(session.token_hash, session.user.name)
    if refused is not None:
        return _json({"error": refused}, status=429)
    sub = console.hub.subscribe(
        sites=session.user.visible_sites,
        language=session.user.language,
        session=session.token_hash,
        user=session.user.name,
    )
    return await stream(request, console.hub, sub)


# --- actions -------------------------------------------------------------------------


DONE: Final = "done"
UNSENT: Final = "unsent"
"""What an action leaves for the device page it returns to (:meth:`Console.say`)."""


def _device_path(device: str) -> str:
    return f"/device/{quote(device, safe='')}"


def _back(request: web.Request, device: str, note: str = DONE) -> web.HTTPSeeOther:
    """Back to the device page, which then says ``note`` once (to this session only)."""
    path = _device_path(device)
    _console(request).say(_session(request).token_hash, path, note)
    return web.HTTPSeeOther(path)


async def trap_checked(request: web.Request) -> web.StreamResponse:
    return await _trap(request, "checked")


async def trap_reset(request: web.Request) -> web.StreamResponse:
    return await _trap(request, "reset")


async def _trap(request: web.Request, what: str) -> web.StreamResponse:
    console = _console(request)
    device = await _device_for(request)
    sensor = request.match_info["sensor"]
    user = _user(request)
    method = console.state.mark_trap_checked if what == "checked" else console.state.reset_trap
    try:
        await console.call(
            functools.partial(method, device, sensor, by=user.name, now=console.clock())
        )
    except LookupError:
        raise web.HTTPNotFound() from None
    log.info("console: %s marked trap %r/%r %s", user.name, device, sensor, what)
    raise _back(request, device)


async def cot_ack(request: web.Request) -> web.StreamResponse:
    console = _console(request)
    device = await _device_for(request)
    cot = request.match_info["cot"]
    user = _user(request)
    now = console.clock()
    try:
        # a command the device would refuse (a cot name too long for any device) is not
        # recorded either: no such cot, as for one the device never reported
        naps.check_nap_ack(device, cot, user.name)
    except naps.NapAckError:
        raise web.HTTPNotFound() from None
    try:
        await console.call(
            functools.partial(
                console.state.acknowledge_nap_alarm, device, cot, by=user.name, now=now
            )
        )
    except LookupError:
        raise web.HTTPNotFound() from None
    log.info("console: %s acknowledged the nap alarm of %r/%r", user.name, device, cot)
    if console.nap_ack is not None:
        try:
            await console.nap_ack(device, cot, user.name, now)
        except Exception as exc:  # recorded here and on the sheet: never a failure page
            # the device could not be told (the broker away or slow, no certificate...)
            log.warning(
                "console: could not tell %r of the acknowledgement: %r",
                device,
                str(exc),
                exc_info=not isinstance(exc, (naps.NapAckNotSent, naps.NapAckError)),
            )
            raise _back(request, device, UNSENT) from None
    raise _back(request, device)


async def rollout(request: web.Request) -> web.StreamResponse:
    user = _operator(request)
    console = _console(request)
    rollout_id = request.match_info["rollout"]
    action = request.match_info["action"]
    if action not in ("start", "pause"):
        raise web.HTTPNotFound()
    what: Literal["start", "pause"] = "start" if action == "start" else "pause"
    try:
        # the fleet database on the database thread; the deploy tool off it (it may wait
        # on the broker for a while: every other page goes on meanwhile)
        commands = await console.call(
            functools.partial(console.state.rollout_commands, rollout_id, what, by=user.name)
        )
        message = await run_deploy(commands)
        await console.call(
            functools.partial(
                console.state.rollout_done, rollout_id, what, by=user.name, detail=message
            )
        )
    except LookupError:
        raise web.HTTPNotFound() from None
    except RolloutActionFailed as exc:
        # the deploy tool refused or failed: the operator reads why, in its words
        message = str(exc)
    log.info("console: %s: rollout %r %s: %r", user.name, rollout_id, action, message)
    console.say(_session(request).token_hash, "/fleet", message)
    raise web.HTTPSeeOther("/fleet")


# --- the application -------------------------------------------------------------------


def make_app(console: Console, *, live_task: bool = True) -> web.Application:
    """The aiohttp application over ``console`` (which the caller opened and closes)."""
    app = web.Application(middlewares=[errors, authenticate], client_max_size=64 * 1024)
    app[CONSOLE] = console
    app[TEMPLATE_ENV] = template_env()
    app.on_response_prepare.append(security_headers(console))
    r = app.router
    r.add_get("/login", login_page)
    r.add_post("/login", login)
    r.add_post("/logout", logout)
    r.add_post("/language", set_language)
    r.add_get("/", map_page)
    r.add_get("/device/{id}", device_page)
    r.add_get("/device/{id}/sheet", sheet_page)
    r.add_post("/device/{id}/trap/{sensor}/checked", trap_checked)
    r.add_post("/device/{id}/trap/{sensor}/reset", trap_reset)
    r.add_post("/device/{id}/cot/{cot}/ack", cot_ack)
    r.add_get("/fleet", fleet_page)
    r.add_post("/fleet/rollout/{rollout}/{action}", rollout)
    r.add_get("/api/map", api_map)
    r.add_get("/api/device/{id}", api_device)
    r.add_get("/api/events", api_events)
    r.add_get("/api/live", live)
    if STATIC.is_dir():
        r.add_static("/static/", STATIC, follow_symlinks=False)
    if live_task:
        app.cleanup_ctx.append(_run_hub)
    return app


async def _run_hub(app: web.Application) -> AsyncIterator[None]:
    hub = app[CONSOLE].hub
    task = asyncio.create_task(hub.run(), name="console-live")
    app[HUB_TASK] = task
    yield
    hub.close_all()
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


def routes(app: web.Application) -> Mapping[str, list[str]]:
    """Every route's path and its methods (for the docs and the tests)."""
    found: dict[str, list[str]] = {}
    for route in app.router.routes():
        info = route.get_info()
        path = info.get("formatter") or info.get("path") or info.get("prefix") or ""
        found.setdefault(str(path), []).append(route.method)
    return found
