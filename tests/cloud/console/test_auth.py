"""Logging in and out: scrypt hashes, hashed sessions, cookie flags, CSRF, the login limit,
the security headers and the language preference, over a real socket and a real SQLite file."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import logging
import sqlite3
from pathlib import Path

import aiohttp
import pytest

from cloud.config import NotifierConfig, StoreConfig, load_config
from cloud.console.accounts import (
    AccountError,
    Accounts,
    LoginLimiter,
    hash_password,
    verify_password,
)
from cloud.console.app import SESSION_COOKIE, connect
from cloud.errors import ConfigError
from tests.cloud.console.conftest import (
    PASSWORD,
    USERS,
    Browser,
    Served,
    add_users,
    console_toml,
    serve,
)

pytestmark = pytest.mark.timeout(60)


def _db_rows(config: NotifierConfig, sql: str) -> list[tuple[object, ...]]:
    assert config.store.path is not None
    with contextlib.closing(sqlite3.connect(config.store.path)) as conn:
        return conn.execute(sql).fetchall()


async def test_a_user_logs_in_sees_the_map_and_logs_out(served: Served) -> None:
    b = served.browser()
    status, headers, _ = await b.get("/")
    assert status == 303 and headers["Location"] == "/login"
    status, headers, body = await b.login("alice")
    assert status == 303 and headers["Location"] == "/", body
    status, _, body = await b.get("/")
    assert status == 200 and 'data-testid="map"' in body and '<html lang="ja">' in body
    token = b.cookies[SESSION_COOKIE]
    status, headers, _ = await b.post("/logout")
    assert status == 303 and headers["Location"] == "/login"
    assert SESSION_COOKIE not in b.cookies
    # the old cookie opens nothing any more
    b.cookies[SESSION_COOKIE] = token
    status, headers, _ = await b.get("/")
    assert status == 303 and headers["Location"] == "/login"
    status, _, _ = await b.get("/api/map")
    assert status == 401


async def test_the_session_cookie_is_secure_httponly_lax_and_stored_only_hashed(
    served: Served,
) -> None:
    b = served.browser()
    await b.login("bob")
    raw = next(c for c in b.set_cookies if c.startswith(SESSION_COOKIE + "="))
    flags = {part.strip().split("=")[0].lower() for part in raw.split(";")[1:]}
    assert {"secure", "httponly", "path", "max-age"} <= flags, raw
    assert "samesite=lax" in raw.lower()
    token = b.cookies[SESSION_COOKIE]
    assert len(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))) == 32  # 256 bits
    stored = _db_rows(served.console.config, "SELECT token_hash FROM console_sessions")
    assert stored == [(hashlib.sha256(token.encode()).hexdigest(),)]
    assert token not in str(stored)


async def test_cookie_secure_false_drops_only_the_secure_flag(tmp_path: Path) -> None:
    path = tmp_path / "notifier.toml"
    path.write_text(console_toml(tmp_path / "n.sqlite3", extra="cookie_secure = false"))
    config = load_config(path)
    from tests.cloud.console.conftest import add_users

    add_users(config)
    async for s in serve(config, live_task=False):
        b = s.browser()
        await b.login("olga")
        raw = next(c for c in b.set_cookies if c.startswith(SESSION_COOKIE + "="))
        assert "secure" not in raw.lower() and "httponly" in raw.lower()


async def test_wrong_password_and_unknown_user_get_the_same_answer(served: Served) -> None:
    b = served.browser()
    wrong = await b.login("alice", "not the password")
    nobody = await b.login("mallory", "not the password")
    assert wrong[0] == nobody[0] == 401
    assert "ユーザー名またはパスワードが違います" in wrong[2]
    assert wrong[2].count("login-error") == nobody[2].count("login-error") == 1
    assert SESSION_COOKIE not in b.cookies
    assert _db_rows(served.console.config, "SELECT count(*) FROM console_sessions") == [(0,)]


async def test_login_is_limited_per_user_and_address(served: Served) -> None:
    tries = served.console.config.console.login_tries
    b = served.browser()
    for _ in range(tries):
        status, _, _ = await b.login("alice", "wrong guess")
        assert status == 401
    status, headers, _ = await b.login("alice")  # even the right password, for now
    assert status == 429 and int(headers["Retry-After"]) > 0
    assert SESSION_COOKIE not in b.cookies
    # another user from the same address is not locked out
    status, _, _ = await served.browser().login("bob")
    assert status == 303
    # a minute later alice may try again
    served.console.limiter.window_s = 0.0
    status, _, _ = await b.login("alice")
    assert status == 303


async def test_login_without_its_form_token_is_refused(served: Served) -> None:
    b = served.browser()
    await b.get("/login")
    status, _, _ = await b.post("/login", {"name": "alice", "password": PASSWORD}, csrf=False)
    assert status == 400
    status, _, _ = await b.post("/login", {"name": "alice", "password": PASSWORD, "csrf": "x"})
    assert status == 400
    assert SESSION_COOKIE not in b.cookies


async def test_a_post_without_the_session_csrf_token_is_refused(served: Served) -> None:
    b = await served.as_user("alice")
    for data, headers in (
        ({}, None),
        ({"csrf": "0" * 64}, None),
        ({}, {"X-CSRF-Token": "forged"}),
    ):
        status, _, _ = await b.request(
            "POST", "/language", data={"language": "en", **data}, headers=headers
        )
        assert status == 400
    status, _, _ = await b.request("POST", "/logout", data={})
    assert status == 400
    _, _, body = await b.get("/")
    assert '<html lang="ja">' in body  # the refused language change did not happen
    # the header form works as well as the field
    status, _, _ = await b.request(
        "POST", "/language", data={"language": "en"}, headers={"X-CSRF-Token": b.csrf}
    )
    assert status == 303


async def test_an_expired_session_sends_the_user_to_login(served: Served) -> None:
    b = await served.as_user("alice")
    assert (await b.get("/"))[0] == 200
    served.clock[0] += served.console.config.console.session_hours * 3600 + 1
    status, headers, _ = await b.get("/")
    assert status == 303 and headers["Location"] == "/login"


async def test_language_is_japanese_by_default_and_english_by_preference(served: Served) -> None:
    b = await served.as_user("bob")
    _, _, body = await b.get("/")
    assert '<html lang="ja">' in body and "ログアウト" in body
    status, headers, _ = await b.post("/language", {"language": "en", "next": "/fleet"})
    assert status == 303 and headers["Location"] == "/fleet"
    _, _, body = await b.get("/")
    assert '<html lang="en">' in body and "Log out" in body
    # kept on the user: a new session is in English too
    b2 = await served.as_user("bob")
    assert '<html lang="en">' in (await b2.get("/"))[2]
    # the login page itself: Japanese unless asked
    assert '<html lang="ja">' in (await served.browser().get("/login"))[2]
    assert '<html lang="en">' in (await served.browser().get("/login?lang=en"))[2]
    status, _, _ = await b.post("/language", {"language": "fr"})
    assert status == 400
    # an open redirect is not offered
    for away in ("//evil.example/", "/\\evil.example/", "https://evil.example/", "/\r\nX: y"):
        _, headers, _ = await b.post("/language", {"language": "ja", "next": away})
        assert headers["Location"] == "/", away
    _, headers, _ = await b.post("/language", {"language": "ja", "next": "/device/pi-a-01"})
    assert headers["Location"] == "/device/pi-a-01"


async def test_security_headers_on_pages_api_and_errors(served: Served) -> None:
    b = await served.as_user("alice")
    for path in ("/", "/api/map", "/device/no-such-device", "/login"):
        _, headers, _ = await b.get(path)
        csp = headers["Content-Security-Policy"]
        assert "default-src 'self'" in csp and "frame-ancestors 'none'" in csp
        assert "img-src 'self' data: https://cyberjapandata.gsi.go.jp" in csp
        assert "script-src 'self';" in csp and "unsafe-inline" not in csp
        assert headers["X-Frame-Options"] == "DENY"
        assert headers["Referrer-Policy"] == "same-origin"
        assert headers["X-Content-Type-Options"] == "nosniff"


def test_password_hashes_are_scrypt_with_a_salt_of_their_own(seeded: NotifierConfig) -> None:
    rows = _db_rows(seeded, "SELECT name, password FROM console_users ORDER BY name")
    assert [r[0] for r in rows] == sorted(USERS)
    for _, stored in rows:
        scheme, n, r, p, salt, key = str(stored).split("$")
        assert (scheme, n, r, p) == ("scrypt", "16384", "8", "1")
        assert len(base64.b64decode(salt)) == 16 and len(base64.b64decode(key)) == 32
        # the stored key is what the standard library's scrypt gives for this salt
        expected = hashlib.scrypt(
            PASSWORD.encode(), salt=base64.b64decode(salt), n=16384, r=8, p=1, dklen=32
        )
        assert base64.b64decode(key) == expected
    a, b = hash_password(PASSWORD), hash_password(PASSWORD)
    assert a != b and a.split("$")[4] != b.split("$")[4]
    assert verify_password(PASSWORD, a) and not verify_password(PASSWORD + "x", a)
    assert not verify_password(PASSWORD, None) and not verify_password(PASSWORD, "md5$x")


def test_accounts_work_on_postgresql_too(store_config: StoreConfig) -> None:
    db = connect(store_config)
    try:
        accounts = Accounts(db)
        accounts.open()
        accounts.open()  # idempotent
        accounts.add("tanaka", role="farmer", sites=frozenset({"s1"}), password_hash="x", now=1.0e9)
        with pytest.raises(AccountError):
            accounts.add("tanaka", role="farmer", sites=frozenset({"s1"}), password_hash="x",
                         now=1.0e9)  # fmt: skip
        token = accounts.start_session("tanaka", now=1.7e9, hours=1)
        session = accounts.session(token, now=1.7e9 + 3599)
        assert session is not None and session.user.sites == frozenset({"s1"})
        assert session.expires_at == pytest.approx(1.7e9 + 3600, abs=1e-3)  # double precision
        assert accounts.session(token, now=1.7e9 + 3601) is None
        accounts.set_language("tanaka", "en")
        user = accounts.user("tanaka")
        assert user is not None and user.language == "en"
        assert accounts.set_password("tanaka", "y")
        assert accounts.session(token, now=1.7e9) is None  # a new password ends sessions
        assert accounts.remove("tanaka") and not accounts.remove("tanaka")
        with pytest.raises(AccountError):
            accounts.add("x", role="farmer", sites=frozenset(), password_hash="x", now=1.0)
        with pytest.raises(AccountError):
            accounts.add("bad name", role="operator", sites=frozenset(), password_hash="x",
                         now=1.0)  # fmt: skip
    finally:
        db.close()


def test_the_login_limiter_keeps_only_the_last_minutes_names() -> None:
    limiter = LoginLimiter(3, window_s=60.0, max_keys=4)
    for n in range(3):
        limiter.failed("alice", "10.0.0.1", now=float(n))
    assert not limiter.allowed("alice", "10.0.0.1", now=3.0)
    assert limiter.allowed("alice", "10.0.0.2", now=3.0)  # per name and address
    limiter.failed("bob", "10.0.0.1", now=30.0)
    # a minute after alice's last failure her key is gone, bob's (newer) is not
    assert limiter.allowed("carol", "10.0.0.1", now=62.5)
    assert [name for name, _ in limiter._failures] == ["bob"]
    assert limiter.allowed("alice", "10.0.0.1", now=62.5)
    # at most max_keys: the oldest go first
    for n in range(6):
        limiter.failed(f"guess{n}", "10.0.0.9", now=70.0 + n)
    assert [name for name, _ in limiter._failures] == [f"guess{n}" for n in range(2, 6)]
    # a failure moves its key to the end (the order is that of the last failures)
    limiter.failed("guess2", "10.0.0.9", now=80.0)
    assert next(iter(limiter._failures)) == ("guess3", "10.0.0.9")


def test_trusted_proxies_must_be_addresses(tmp_path: Path) -> None:
    path = tmp_path / "notifier.toml"
    extra = 'trusted_proxies = ["10.0.0.1", "10.1.0.0/16", "::1", "proxy.example"]'
    path.write_text(console_toml(tmp_path / "n.sqlite3", extra=extra))
    with pytest.raises(ConfigError, match=r"console\.trusted_proxies\[3\]"):
        load_config(path)
    fine = extra.replace(', "proxy.example"', "")
    path.write_text(console_toml(tmp_path / "n.sqlite3", extra=fine))
    assert load_config(path).console.trusted_proxies == ("10.0.0.1", "10.1.0.0/16", "::1")


async def test_x_forwarded_for_counts_only_from_a_trusted_proxy(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The proxy is 127.0.0.2: behind it each client is limited on its own (not everyone
    at once); the same header from anyone else (127.0.0.1) changes nothing."""
    caplog.set_level(logging.INFO, logger="cloud.console")
    path = tmp_path / "notifier.toml"
    extra = 'trusted_proxies = ["127.0.0.2"]'
    path.write_text(console_toml(tmp_path / "n.sqlite3", extra=extra))
    config = load_config(path)
    add_users(config)

    def fwd(chain: str) -> dict[str, str]:
        return {"X-Forwarded-For": chain}

    async def attempt(b: Browser, chain: str, password: str = "a wrong guess") -> int:
        await b.get("/login")
        status, _, _ = await b.post(
            "/login", {"name": "alice", "password": password}, headers=fwd(chain)
        )
        return status

    connector = aiohttp.TCPConnector(local_addr=("127.0.0.2", 0))
    async for s in serve(config, live_task=False):
        async with aiohttp.ClientSession(
            connector=connector, cookie_jar=aiohttp.DummyCookieJar()
        ) as via_proxy:
            # an untrusted peer: the header is ignored, its own address is limited
            direct = s.browser()
            for n in range(5):
                assert await attempt(direct, f"203.0.113.{n}") == 401
            assert await attempt(direct, "203.0.113.99", PASSWORD) == 429
            # through the trusted proxy: another client is not locked out by that
            assert await attempt(Browser(via_proxy, s.base), "203.0.113.99", PASSWORD) == 303
            # a guesser behind the proxy is limited as itself...
            guesser = Browser(via_proxy, s.base)
            for _ in range(5):
                assert await attempt(guesser, "198.51.100.7") == 401
            assert await attempt(guesser, "198.51.100.7", PASSWORD) == 429
            # ...whatever it writes left of what the proxy saw, or through a second proxy
            assert await attempt(guesser, "203.0.113.50, 198.51.100.7", PASSWORD) == 429
            assert await attempt(guesser, "198.51.100.7, 127.0.0.2", PASSWORD) == 429
            # ...and its neighbour behind the same proxy is not
            assert await attempt(Browser(via_proxy, s.base), "198.51.100.8", PASSWORD) == 303
    logged = [r.getMessage() for r in caplog.records]
    assert any("failed login for 'alice' from 198.51.100.7" in m for m in logged), logged
    assert any("alice logged in from 198.51.100.8" in m for m in logged), logged
