"""The console's people: accounts, password hashes, sessions, CSRF tokens, login limits.

* **Passwords** are hashed with scrypt (``hashlib.scrypt``, n=2**14, r=8, p=1, a
  16-byte random salt per user, 32-byte key) and stored as
  ``scrypt$N$r$p$SALT$KEY`` (base64), so the cost can be raised later without
  locking anyone out.  Checking compares in constant time, and an unknown user
  costs as much as a wrong password (no timing tells which names exist).
* **Sessions** are a random 256-bit token in a cookie; the database keeps only its
  SHA-256, so a copy of the database opens no session.  A session ends at its
  expiry, at logout, and when its user's password changes or the user is removed.
* **CSRF**: every POST carries a token derived from the session's (HMAC-SHA256 of
  the session token): nothing more to store, and a page of another origin cannot
  read it.  The login form has its own (double-submit: cookie and field equal).
* **Login limit**: :class:`LoginLimiter`, a few failed tries per user and address a
  minute, kept in memory.

The tables (``console_users``, ``console_sessions``) are the console's own,
created here with ``IF NOT EXISTS`` in SQL both SQLite and PostgreSQL run.
:class:`Accounts` is synchronous and, like every call on a
:class:`~cloud.database.Database`, is called from the console's one database
thread; hashing runs elsewhere (:func:`hash_password`, :func:`verify_password`
take tens of milliseconds and touch no database).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import secrets
import typing
from collections import deque
from dataclasses import dataclass
from typing import Final

from cloud.console.model import Role
from cloud.database import Database, Tx
from cloud.errors import NotifierError

Language = typing.Literal["ja", "en"]
LANGUAGES: Final[tuple[str, ...]] = typing.get_args(Language)
ROLES: Final[tuple[str, ...]] = typing.get_args(Role)

SCRYPT_N: Final = 2**14
SCRYPT_R: Final = 8
SCRYPT_P: Final = 1
SALT_BYTES: Final = 16
KEY_BYTES: Final = 32
TOKEN_BYTES: Final = 32
"""256-bit session tokens."""
MIN_PASSWORD: Final = 10
"""The shortest password ``user add`` accepts."""

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$")
_SITE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")

SCHEMA: Final[tuple[str, ...]] = (
    """CREATE TABLE IF NOT EXISTS console_users (
        name        TEXT PRIMARY KEY,
        role        TEXT NOT NULL,
        sites       TEXT NOT NULL,            -- JSON list of site ids
        language    TEXT NOT NULL DEFAULT 'ja',
        password    TEXT NOT NULL,            -- scrypt$N$r$p$salt$key
        created_at  DOUBLE PRECISION NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS console_sessions (
        token_hash  TEXT PRIMARY KEY,         -- SHA-256 of the cookie's token, hex
        user_name   TEXT NOT NULL,
        created_at  DOUBLE PRECISION NOT NULL,
        expires_at  DOUBLE PRECISION NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS console_sessions_user ON console_sessions (user_name)",
    "CREATE INDEX IF NOT EXISTS console_sessions_expiry ON console_sessions (expires_at)",
)


class AccountError(NotifierError, ValueError):
    """A console account cannot be made or changed as asked (the message says why)."""


@dataclass(frozen=True, slots=True)
class User:
    """A console user as the pages need them (never the password hash)."""

    name: str
    role: Role
    sites: frozenset[str]
    language: Language

    @property
    def operator(self) -> bool:
        return self.role == "operator"

    @property
    def visible_sites(self) -> frozenset[str] | None:
        """The sites this user may see; ``None``: every site (an operator)."""
        return None if self.operator else self.sites

    def may_see(self, site: str | None) -> bool:
        return site is not None and (self.operator or site in self.sites)


@dataclass(frozen=True, slots=True)
class Session:
    user: User
    token_hash: str
    expires_at: float


# --- passwords ---------------------------------------------------------------------


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def hash_password(password: str, *, salt: bytes | None = None) -> str:
    """``scrypt$N$r$p$SALT$KEY`` of ``password`` with a fresh random salt."""
    salt = secrets.token_bytes(SALT_BYTES) if salt is None else salt
    key = hashlib.scrypt(
        password.encode("utf-8"), salt=salt, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P, dklen=KEY_BYTES
    )
    return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${_b64(salt)}${_b64(key)}"


#: Checked against when the user does not exist, so that costs the same as a wrong password.
_DUMMY_HASH: Final = hash_password("no such user", salt=b"\0" * SALT_BYTES)


def verify_password(password: str, stored: str | None) -> bool:
    """Whether ``password`` matches ``stored`` (constant-time; ``None`` costs the same)."""
    candidate = stored if stored is not None else _DUMMY_HASH
    try:
        scheme, n, r, p, salt_b64, key_b64 = candidate.split("$")
        if scheme != "scrypt":
            return False
        salt = base64.b64decode(salt_b64, validate=True)
        key = base64.b64decode(key_b64, validate=True)
        got = hashlib.scrypt(
            password.encode("utf-8"),
            salt=salt,
            n=int(n),
            r=int(r),
            p=int(p),
            dklen=len(key),
            maxmem=256 * int(r) * int(n) + 1024 * 1024,
        )
    except ValueError:
        return False
    return hmac.compare_digest(got, key) and stored is not None


def check_password_strength(password: str) -> None:
    if len(password) < MIN_PASSWORD:
        raise AccountError(f"the password must have at least {MIN_PASSWORD} characters")


# --- tokens ------------------------------------------------------------------------


def new_token() -> str:
    return secrets.token_urlsafe(TOKEN_BYTES)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("ascii", "replace")).hexdigest()


def csrf_token(session_token: str) -> str:
    """The CSRF token of a session: derived from its secret, so never stored."""
    return hmac.new(session_token.encode("ascii", "replace"), b"csrf", "sha256").hexdigest()


def same_token(given: str | None, expected: str) -> bool:
    return given is not None and hmac.compare_digest(
        given.encode("utf-8", "replace"), expected.encode("utf-8", "replace")
    )


# --- the tables --------------------------------------------------------------------


def _user(row: tuple[object, ...]) -> User:
    name, role, sites, language = row[:4]
    lang = str(language)
    return User(
        name=str(name),
        role=typing.cast(Role, str(role)),
        sites=frozenset(json.loads(str(sites))),
        language=typing.cast(Language, lang if lang in LANGUAGES else "ja"),
    )


def check_user(name: str, role: str, sites: frozenset[str], language: str) -> None:
    """What a new user must be: a simple name, a known role, sites unless an operator."""
    if not _NAME.match(name):
        raise AccountError(
            f"{name!r}: a user name is 1 to 64 letters, digits, '_', '.', '@' or '-'"
        )
    if role not in ROLES:
        raise AccountError(f"unknown role {role!r} (one of: {', '.join(ROLES)})")
    if language not in LANGUAGES:
        raise AccountError(f"unknown language {language!r} (one of: {', '.join(LANGUAGES)})")
    for site in sites:
        if not _SITE.match(site):
            raise AccountError(f"{site!r} is not a site id")
    if role != "operator" and not sites:
        raise AccountError(f"a {role} sees only their own sites: give at least one --site")


class Accounts:
    """Users and sessions in the console's tables; call from the database thread only."""

    def __init__(self, db: Database) -> None:
        self._db = db

    def open(self) -> None:
        """Create the tables if they are missing (idempotent)."""

        def work(tx: Tx) -> None:
            for statement in SCHEMA:
                tx.execute(statement)

        self._db.run(work)

    # --- users

    def add(
        self,
        name: str,
        *,
        role: str,
        sites: frozenset[str],
        language: str = "ja",
        password_hash: str,
        now: float,
    ) -> User:
        check_user(name, role, sites, language)

        def work(tx: Tx) -> None:
            if tx.query("SELECT 1 FROM console_users WHERE name = ?", (name,)):
                raise AccountError(f"user {name!r} already exists")
            tx.execute(
                "INSERT INTO console_users (name, role, sites, language, password, created_at)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (name, role, json.dumps(sorted(sites)), language, password_hash, now),
            )

        self._db.run(work)
        user = self.user(name)
        assert user is not None
        return user

    def user(self, name: str) -> User | None:
        rows = self._db.run(
            lambda tx: tx.query(
                "SELECT name, role, sites, language FROM console_users WHERE name = ?", (name,)
            ),
            write=False,
        )
        return _user(rows[0]) if rows else None

    def users(self) -> list[User]:
        rows = self._db.run(
            lambda tx: tx.query(
                "SELECT name, role, sites, language FROM console_users ORDER BY name"
            ),
            write=False,
        )
        return [_user(r) for r in rows]

    def credentials(self, name: str) -> tuple[User, str] | None:
        """The user and their stored password hash (for :func:`verify_password`)."""
        rows = self._db.run(
            lambda tx: tx.query(
                "SELECT name, role, sites, language, password FROM console_users WHERE name = ?",
                (name,),
            ),
            write=False,
        )
        return (_user(rows[0]), str(rows[0][4])) if rows else None

    def remove(self, name: str) -> bool:
        """Remove the user and end their sessions; False if there was no such user."""

        def work(tx: Tx) -> int:
            tx.execute("DELETE FROM console_sessions WHERE user_name = ?", (name,))
            return tx.execute("DELETE FROM console_users WHERE name = ?", (name,))

        return self._db.run(work) > 0

    def set_password(self, name: str, password_hash: str) -> bool:
        """Change the password and end every session of the user."""

        def work(tx: Tx) -> int:
            tx.execute("DELETE FROM console_sessions WHERE user_name = ?", (name,))
            return tx.execute(
                "UPDATE console_users SET password = ? WHERE name = ?", (password_hash, name)
            )

        return self._db.run(work) > 0

    def set_language(self, name: str, language: str) -> None:
        if language not in LANGUAGES:
            raise AccountError(f"unknown language {language!r}")
        self._db.run(
            lambda tx: tx.execute(
                "UPDATE console_users SET language = ? WHERE name = ?", (language, name)
            )
        )

    # --- sessions

    def start_session(self, name: str, *, now: float, hours: float) -> str:
        """A new session of ``name``; returns the token for the cookie (kept only hashed)."""
        token = new_token()
        expires = now + hours * 3600.0

        def work(tx: Tx) -> None:
            tx.execute("DELETE FROM console_sessions WHERE expires_at <= ?", (now,))
            tx.execute(
                "INSERT INTO console_sessions (token_hash, user_name, created_at, expires_at)"
                " VALUES (?, ?, ?, ?)",
                (token_hash(token), name, now, expires),
            )

        self._db.run(work)
        return token

    def session(self, token: str, *, now: float) -> Session | None:
        """The live session whose cookie holds ``token``, with its user; else None."""
        hashed = token_hash(token)
        rows = self._db.run(
            lambda tx: tx.query(
                "SELECT u.name, u.role, u.sites, u.language, s.expires_at"
                " FROM console_sessions s JOIN console_users u ON u.name = s.user_name"
                " WHERE s.token_hash = ? AND s.expires_at > ?",
                (hashed, now),
            ),
            write=False,
        )
        if not rows:
            return None
        return Session(user=_user(rows[0]), token_hash=hashed, expires_at=float(rows[0][4]))

    def live_sessions(self, hashes: frozenset[str], *, now: float) -> frozenset[str]:
        """Which of the session hashes ``hashes`` still open a session."""
        if not hashes:
            return frozenset()
        ordered = sorted(hashes)

        def work(tx: Tx) -> set[str]:
            found: set[str] = set()
            for i in range(0, len(ordered), 500):
                chunk = ordered[i : i + 500]
                marks = ", ".join("?" for _ in chunk)
                rows = tx.query(
                    "SELECT s.token_hash FROM console_sessions s"
                    " JOIN console_users u ON u.name = s.user_name"
                    f" WHERE s.expires_at > ? AND s.token_hash IN ({marks})",
                    (now, *chunk),
                )
                found.update(str(r[0]) for r in rows)
            return found

        found = self._db.run(work, write=False)
        return frozenset(found)

    def end_session(self, token: str) -> None:
        self._db.run(
            lambda tx: tx.execute(
                "DELETE FROM console_sessions WHERE token_hash = ?", (token_hash(token),)
            )
        )

    def session_count(self, name: str, *, now: float) -> int:
        rows = self._db.run(
            lambda tx: tx.query(
                "SELECT count(*) FROM console_sessions WHERE user_name = ? AND expires_at > ?",
                (name, now),
            ),
            write=False,
        )
        return int(rows[0][0])


# --- login attempts ----------------------------------------------------------------


class LoginLimiter:
    """At most ``tries`` failed logins per (user name, address) in ``window_s``.

    In memory, per process: it slows a guesser down; it is not an account lockout
    (which would let anyone lock a user out).  Only names an account can have are
    counted (:func:`possible_name`: at most 64 characters), and every call lets go of
    the keys whose last failure is older than the window: the keys are kept in the
    order of their last failure, so that costs a look at the oldest few (amortised
    constant time), and memory follows the names tried in the last minute, never every
    name ever tried.  At most ``max_keys`` are held (the oldest go first).
    """

    MAX_KEYS: Final = 100_000

    def __init__(self, tries: int, window_s: float = 60.0, *, max_keys: int = MAX_KEYS) -> None:
        self.tries = tries
        self.window_s = window_s
        self.max_keys = max_keys
        self._failures: dict[tuple[str, str], deque[float]] = {}
        """(name, address) -> times of its failures in the window; ordered by the last."""

    def _prune(self, now: float) -> None:
        """Let go of every key whose last failure is older than the window."""
        cutoff = now - self.window_s
        failures = self._failures
        while failures:
            key = next(iter(failures))
            if failures[key][-1] > cutoff and len(failures) <= self.max_keys:
                break
            del failures[key]

    def _recent(self, key: tuple[str, str], now: float) -> int:
        cutoff = now - self.window_s
        return sum(1 for t in self._failures.get(key, ()) if t > cutoff)

    def allowed(self, name: str, address: str, *, now: float) -> bool:
        self._prune(now)
        return self._recent((name, address), now) < self.tries

    def failed(self, name: str, address: str, *, now: float) -> None:
        key = (name, address)
        times = self._failures.pop(key, None)  # re-inserted last: the order of last failures
        if times is None:
            times = deque(maxlen=self.tries)
        times.append(now)
        self._failures[key] = times
        self._prune(now)

    def succeeded(self, name: str, address: str) -> None:
        self._failures.pop((name, address), None)


def possible_name(name: str) -> bool:
    """Whether an account could have ``name`` (what ``user add`` accepts)."""
    return _NAME.fullmatch(name) is not None
