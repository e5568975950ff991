"""The console's web security: one-time login, sessions, CSRF, Host and headers.

The console listens on 127.0.0.1 only, but any web page the officer opens in the
same browser can make the browser send requests there (CSRF), and a hostile DNS
name can be pointed at 127.0.0.1 (DNS rebinding). Hence:

- a one-time login URL (32 random bytes, a few minutes) printed on the terminal
  is the only way in; redeeming it creates the one session of this process;
- the session cookie is HttpOnly and SameSite=Strict;
- every POST carries the session's synchronizer CSRF token, and a POST that
  the browser marks as coming from elsewhere (``Origin``, ``Sec-Fetch-Site``)
  is refused as well;
- only ``127.0.0.1[:port]`` is accepted as ``Host``;
- every response carries a strict Content-Security-Policy (no script at all),
  ``nosniff``, ``no-referrer`` (the login URL never leaks) and ``no-store``
  (no approval token or child's bookkeeping is left in the browser cache).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass, field
from typing import Any

from childvault._i18n import _t

#: How long the one-time login URL may be used after it is printed.
LOGIN_TTL_S = 300.0
#: A session ends after this long without a request (the officer walked away).
SESSION_IDLE_S = 30 * 60.0
#: ... and in any case after this long (like the longest CLI unlock).
SESSION_MAX_S = 8 * 3600.0
#: Name of the session cookie.
COOKIE = "cv_session"
#: How long an approval token stays downloadable after it was shown.
TOKEN_KEEP_S = 600.0

SECURITY_HEADERS = (
    (
        b"content-security-policy",
        b"default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
        b"frame-ancestors 'none'; base-uri 'none'",
    ),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"cache-control", b"no-store"),
    (b"x-frame-options", b"DENY"),
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"cross-origin-resource-policy", b"same-origin"),
)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def _digest(secret: str) -> bytes:
    # Only digests are kept, so a memory dump of a logged-out console holds no usable secret,
    # and comparisons run on fixed-length values.
    return hashlib.sha256(secret.encode("utf-8", "surrogatepass")).digest()


@dataclass
class Session:
    """One officer's browser session in this console process."""

    csrf: str
    created: float
    last_seen: float
    lang: str
    #: Messages shown once on the next page (kind, text already translated).
    flashes: list[tuple[str, str]] = field(default_factory=list)
    #: Approval tokens the officer may still download once: grant id -> (token, shown at).
    tokens: dict[str, tuple[str, float]] = field(default_factory=dict)

    def take_token(self, grant_id: str, now: float) -> str | None:
        """The approval token of ``grant_id`` for one download, then forgotten."""
        self.tokens = {g: t for g, t in self.tokens.items() if now - t[1] < TOKEN_KEEP_S}
        entry = self.tokens.pop(grant_id, None)
        return entry[0] if entry else None


class Gate:
    """The one-time login token and the sessions it opened (thread-safe)."""

    def __init__(self, default_lang: str, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._default_lang = default_lang
        self._login: bytes | None = None
        self._login_expires = 0.0
        self._sessions: dict[bytes, Session] = {}

    @property
    def default_lang(self) -> str:
        """The language of a new session (and of pages shown before login)."""
        return self._default_lang

    def new_login_token(self) -> str:
        """A fresh one-time login token (replacing any unused one)."""
        token = secrets.token_urlsafe(32)
        with self._lock:
            self._login = _digest(token)
            self._login_expires = self._clock() + LOGIN_TTL_S
        return token

    def redeem(self, token: str) -> str | None:
        """Exchange the one-time login token for a new session id, once; else None."""
        now = self._clock()
        with self._lock:
            expected = self._login
            if expected is None or now > self._login_expires:
                return None
            if not hmac.compare_digest(expected, _digest(token)):
                return None
            # Spent whatever happens next: a URL copied from the terminal works once.
            self._login = None
            session_id = secrets.token_urlsafe(32)
            self._sessions[_digest(session_id)] = Session(
                csrf=secrets.token_urlsafe(32),
                created=now,
                last_seen=now,
                lang=self._default_lang,
            )
            return session_id

    def session(self, session_id: str | None) -> Session | None:
        """The live session for a cookie value (touching it), or None."""
        if not session_id:
            return None
        now = self._clock()
        key = _digest(session_id)
        with self._lock:
            found = self._sessions.get(key)
            if found is None:
                return None
            if now - found.last_seen > SESSION_IDLE_S or now - found.created > SESSION_MAX_S:
                del self._sessions[key]
                return None
            found.last_seen = now
            return found

    def end(self, session_id: str | None) -> None:
        """Log out: forget the session (and the tokens it still held)."""
        if session_id:
            with self._lock:
                self._sessions.pop(_digest(session_id), None)


def csrf_ok(session: Session, submitted: str | None) -> bool:
    """Whether a form's CSRF token is this session's (constant-time)."""
    if not submitted:
        return False
    return hmac.compare_digest(_digest(session.csrf), _digest(submitted))


def origin_ok(origin: str | None, fetch_site: str | None, port: int) -> bool:
    """Whether a POST's ``Origin`` and ``Sec-Fetch-Site`` headers allow it.

    Browsers mark where a request comes from. ``Sec-Fetch-Site`` (sent by
    current browsers whatever the referrer policy) must say ``same-origin``.
    ``Origin`` must be this console, or ``null``: with ``Referrer-Policy:
    no-referrer`` a browser sends ``Origin: null`` even on the console's own
    forms, so ``null`` is accepted only when ``Sec-Fetch-Site`` vouches for the
    request. A request with neither header does not come from a browser form;
    the CSRF token, checked after this, still decides.
    """
    if fetch_site is not None and fetch_site != "same-origin":
        return False
    if origin is None:
        return True
    if origin == "null":
        return fetch_site == "same-origin"
    allowed = {f"http://127.0.0.1:{port}"} | ({"http://127.0.0.1"} if port == 80 else set())
    return origin in allowed


def host_ok(host: str | None, port: int) -> bool:
    """Whether the ``Host`` header names this console (DNS-rebinding defence)."""
    allowed = {f"127.0.0.1:{port}"} | ({"127.0.0.1"} if port == 80 else set())
    return host in allowed


class Guard:
    """ASGI middleware: refuses foreign ``Host`` headers and adds the security headers."""

    def __init__(self, app: ASGIApp, port: Callable[[], int]) -> None:
        self._app = app
        self._port = port

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        host = headers.get(b"host", b"").decode("latin-1")
        if not host_ok(host, self._port()):
            # Before any session, so its language is unknown: both (Chinese first,
            # the console's default).
            refused = _t("This console answers only at 127.0.0.1.")
            await _plain(send, 421, f"{refused.in_locale('zh_CN')}\n{refused}\n".encode())
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                names = {name.lower() for name, _ in SECURITY_HEADERS}
                kept = [(n, v) for n, v in message.get("headers", []) if n.lower() not in names]
                message["headers"] = kept + list(SECURITY_HEADERS)
            await send(message)

        await self._app(scope, receive, send_with_headers)


async def _plain(send: Send, status: int, body: bytes) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"text/plain; charset=utf-8"), *SECURITY_HEADERS],
        }
    )
    await send({"type": "http.response.body", "body": body})
