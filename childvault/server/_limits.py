"""Limits and hygiene: body size, timeouts against slow clients, the access log.

Three layers, each bounded so one client cannot hold the server:

- :class:`LimitsMiddleware` (ASGI): a request head (line and headers) larger
  than ``max_head`` gets 431; a request body larger than ``max_body``
  gets 413, decided from ``Content-Length`` before anything is read, or while
  reading a chunked body as soon as the count passes the limit (never after
  buffering it all). Every ``receive()`` waits at most ``receive_timeout``
  and the whole body must arrive within ``body_timeout``; otherwise 408. Both
  refusals close the connection.
- :func:`header_timeout_protocol`: uvicorn bounds idle keep-alive connections
  (``timeout_keep_alive``) and the size of an incomplete request head
  (``h11_max_incomplete_event_size``) but not the *time* a client may take to
  send it, so a client sending its headers a byte at a time would hold a
  connection forever. The protocol class it returns closes a connection whose
  request head is not complete within ``header_timeout``.
- :class:`UserRateLimit`: a token bucket per *verified* user over the
  requests the signature layer accepted (the vault routes consult it; a
  request over the limit gets 429 with ``Retry-After`` and is logged as a
  refusal of that user, bounded like every ``server.refuse``).
- :class:`AccessLogMiddleware`: one JSON line per request on the
  ``childvault.server.access`` logger with the time, the verified user (or the
  claimed one on a refusal), method, *route template* (never the concrete path,
  which may hold record ids, and never query values or bodies), status,
  refusal reason, duration and byte counts.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from childvault._i18n import _t
from childvault.keys import UsageError
from childvault.server._common import (
    RECORD_KEY,
    ASGIApp,
    AuditHook,
    Message,
    Receive,
    RequestRecord,
    Scope,
    Send,
    record_of,
    report_refusal,
    send_refusal,
)

#: Default limits (docs/server.md lists them with the reasons).
DEFAULT_MAX_BODY = 16 * 1024 * 1024
DEFAULT_RECEIVE_TIMEOUT = 10.0
DEFAULT_BODY_TIMEOUT = 60.0
DEFAULT_HEADER_TIMEOUT = 10.0
#: Largest request head (request line and headers) uvicorn's h11 will buffer.
DEFAULT_MAX_HEAD = 16 * 1024

ACCESS_LOGGER = "childvault.server.access"
#: Accepted requests a user may make per minute, sustained (``serve --user-rate``):
#: 200 a second. Some commands are chatty (``list`` of 200 records is about 315
#: requests, one client makes at most about 50 a second over loopback), so a
#: person, or 8 processes of one user, stays below it; it also keeps one user
#: below the rate that would fill the nonce store (100,000 in 5 minutes, about
#: 333 a second: _auth.py) and so lock everybody out.
DEFAULT_USER_RATE = 12000.0
#: Requests a user may make at once before the rate applies (``serve --user-burst``):
#: a fifth of the nonce store.
DEFAULT_USER_BURST = 20000


class UserRateLimit:
    """A token bucket per verified user over accepted requests.

    Each user starts with ``burst`` tokens; a request takes one; tokens come
    back at ``per_minute`` a minute, up to ``burst``. The buckets are keyed
    by verified user names (the signature layer ran first), so their number is
    bounded by the vault's users. ``clock`` (seconds, monotonic) is injectable
    so tests need not sleep.
    """

    def __init__(
        self,
        per_minute: float = DEFAULT_USER_RATE,
        burst: int = DEFAULT_USER_BURST,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not per_minute > 0 or burst < 1:
            raise UsageError(_t("the per-user rate must be above 0 and the burst at least 1"))
        self.per_minute = float(per_minute)
        self.burst = int(burst)
        self.clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def take(self, user: str) -> float:
        """Take a token for ``user``: 0 if the request may run, else the seconds until
        the next token (the ``Retry-After`` of the 429)."""
        now = self.clock()
        rate = self.per_minute / 60.0
        with self._lock:
            tokens, at = self._buckets.get(user, (float(self.burst), now))
            tokens = min(float(self.burst), tokens + max(0.0, now - at) * rate)
            if tokens < 1.0:
                self._buckets[user] = (tokens, now)
                return (1.0 - tokens) / rate
            self._buckets[user] = (tokens - 1.0, now)
            return 0.0

    @staticmethod
    def retry_after(wait: float) -> str:
        """``wait`` seconds as a ``Retry-After`` value (whole seconds, at least 1)."""
        return str(max(1, math.ceil(wait)))


class _BodyTooLarge(Exception):
    """Raised from ``receive()`` when the body passes the limit."""


class _ReceiveTimeout(Exception):
    """Raised from ``receive()`` when the client is too slow."""


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", []):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                # h11 already refuses a malformed Content-Length; this is a
                # second line of defence for other servers.
                return None
    return None


def _framed_twice(scope: Scope) -> bool:
    """Whether the request carries both Transfer-Encoding and Content-Length."""
    names = {name for name, _ in scope.get("headers", [])}
    return b"transfer-encoding" in names and b"content-length" in names


def _head_size(scope: Scope) -> int:
    # The request line and header lines roughly as sent (names, values,
    # separators); exact to a few bytes, which is all a limit needs.
    size = len(scope.get("raw_path") or b"") + len(scope.get("query_string", b"")) + 16
    return size + sum(len(n) + len(v) + 4 for n, v in scope.get("headers", []))


class LimitsMiddleware:
    """Body size limit and receive timeouts for every HTTP request (see module doc)."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        max_body: int = DEFAULT_MAX_BODY,
        receive_timeout: float = DEFAULT_RECEIVE_TIMEOUT,
        body_timeout: float = DEFAULT_BODY_TIMEOUT,
        max_head: int = DEFAULT_MAX_HEAD,
        audit: AuditHook | None = None,
    ) -> None:
        self.app = app
        self.audit = audit
        self.max_head = max_head
        self.max_body = max_body
        self.receive_timeout = receive_timeout
        self.body_timeout = body_timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Run the wrapped app with a bounded ``receive``."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        record = record_of(scope)
        if _head_size(scope) > self.max_head:
            # h11 bounds only a head that arrives in pieces; one that arrives
            # whole in a single read is measured here.
            await self._refuse(
                scope, send, 431, "head_too_large", _t("{size} bytes", size=_head_size(scope))
            )
            return
        if _framed_twice(scope):
            # RFC 9112 section 6.3: both headers may be a smuggling attempt (a proxy
            # in front framing by Content-Length, h11 by the chunks); refused and
            # the connection closed, whatever the body says.
            await self._refuse(
                scope,
                send,
                400,
                "ambiguous_framing",
                _t("both Transfer-Encoding and Content-Length"),
            )
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.max_body:
            # Refused on the declaration alone: not one byte of the body is read.
            await self._refuse(
                scope, send, 413, "body_too_large", _t("Content-Length {length}", length=declared)
            )
            return

        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.body_timeout
        received = 0
        body_done = False
        started = False

        async def limited_receive() -> Message:
            nonlocal received, body_done
            if body_done:
                # After the body only http.disconnect can come; waiting for it
                # costs nothing, so it is not timed.
                return await receive()
            timeout = min(self.receive_timeout, deadline - loop.time())
            if timeout <= 0:
                raise _ReceiveTimeout
            # asyncio.timeout, not wait_for: wait_for runs receive() as a task of
            # its own, a task and a turn of the event loop more for every request.
            try:
                async with asyncio.timeout(timeout):
                    message = await receive()
            except TimeoutError:
                raise _ReceiveTimeout from None
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                record.bytes_in = received
                if received > self.max_body:
                    raise _BodyTooLarge
                if not message.get("more_body", False):
                    body_done = True
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except _BodyTooLarge:
            if started:
                raise
            await self._refuse(
                scope, send, 413, "body_too_large", _t("more than {size} bytes", size=received)
            )
        except _ReceiveTimeout:
            if started:
                raise
            await self._refuse(
                scope, send, 408, "request_timeout", _t("{size} bytes in time", size=received)
            )

    async def _refuse(
        self, scope: Scope, send: Send, status: int, reason: str, detail: str
    ) -> None:
        record = record_of(scope)
        record.reason = reason
        report_refusal(
            self.audit,
            scope,
            status=status,
            reason=reason,
            claimed_user=record.claimed_user,
            detail=detail,
        )
        error = {
            400: "bad_request",
            413: "payload_too_large",
            408: "request_timeout",
            431: "request_header_fields_too_large",
        }[status]
        await send_refusal(send, status, error, reason)


class _CoalescingTransport:
    """A connection's transport whose writes of one event-loop step leave in one send.

    uvicorn writes a response's head and its body separately: two ``send()``
    calls, and the client's kernel wakes it for the head, then again for the
    body (a second ``recv``) on about half of all answers. Writes made in one
    step of the loop (Starlette sends head and body without yielding) are kept
    and handed to the real transport together at the end of that step, before
    any other I/O is handled; ``close``/``write_eof`` hand over what is kept
    first, ``abort`` drops it. Everything else is the real transport's.
    """

    def __init__(self, transport: Any, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._pending: list[bytes] = []

    def write(self, data: bytes | bytearray | memoryview) -> None:
        """Keep ``data`` for the end of this loop step."""
        if not data:
            return
        if not self._pending:
            self._loop.call_soon(self._flush)
        self._pending.append(bytes(data))

    def writelines(self, chunks: Any) -> None:
        """:meth:`write` each chunk."""
        for chunk in chunks:
            self.write(chunk)

    def _flush(self) -> None:
        if self._pending:
            data = b"".join(self._pending)
            self._pending.clear()
            if not self._transport.is_closing():
                self._transport.write(data)

    def get_write_buffer_size(self) -> int:
        """Bytes not yet sent: the real transport's and those kept here."""
        return int(self._transport.get_write_buffer_size()) + sum(map(len, self._pending))

    def write_eof(self) -> None:
        """Send what is kept, then half-close."""
        self._flush()
        self._transport.write_eof()

    def close(self) -> None:
        """Send what is kept, then close (the transport sends its buffer first)."""
        self._flush()
        self._transport.close()

    def abort(self) -> None:
        """Drop what is kept and abort."""
        self._pending.clear()
        self._transport.abort()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


def header_timeout_protocol(header_timeout: float = DEFAULT_HEADER_TIMEOUT) -> type[H11Protocol]:
    """A uvicorn h11 protocol class that closes connections slow to send a request head
    (and writes each response in one send: :class:`_CoalescingTransport`).

    The timer runs from the moment a connection opens (and again after each
    response, for the next request on a kept-alive connection) until h11 has
    parsed the complete request line and headers.
    """

    class HeaderTimeoutH11Protocol(H11Protocol):
        """uvicorn's h11 protocol plus a deadline for the request head."""

        _head_timer: asyncio.TimerHandle | None = None

        def _arm_head_timer(self) -> None:
            self._disarm_head_timer()
            self._head_timer = self.loop.call_later(header_timeout, self._head_timed_out)

        def _disarm_head_timer(self) -> None:
            if self._head_timer is not None:
                self._head_timer.cancel()
                self._head_timer = None

        def _head_timed_out(self) -> None:
            self._head_timer = None
            if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
                # No response: the client has not finished a request to answer.
                # Not an ASGI request, so no access-log line; a warning instead.
                logging.getLogger("childvault.server").warning(
                    "closed a connection from %s: request head not complete within %s s",
                    f"{self.client[0]}:{self.client[1]}" if self.client else "?",
                    header_timeout,
                )
                self.transport.close()

        def connection_made(self, transport: Any) -> None:
            # One send per response (head and body), see _CoalescingTransport.
            super().connection_made(_CoalescingTransport(transport, self.loop))  # type: ignore[arg-type]
            self._arm_head_timer()

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            if self.conn.their_state is not h11.IDLE:
                self._disarm_head_timer()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if self.transport.is_closing():
                return
            if self.conn.their_state is h11.SEND_BODY:
                # Answered before the body ended (a route that does not read
                # it). uvicorn would keep discarding whatever the client sends
                # and every byte would restart its keep-alive timer: a client
                # dripping bytes could hold the connection forever. Close it.
                self.transport.close()
            elif self.conn.their_state is h11.IDLE:
                self._arm_head_timer()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm_head_timer()
            super().connection_lost(exc)

    return HeaderTimeoutH11Protocol


class AccessLogMiddleware:
    """One structured JSON line per request (see module doc); never values."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        route_template: Callable[[Scope], str],
        logger: logging.Logger | None = None,
    ) -> None:
        self.app = app
        self.route_template = route_template
        self.logger = logger or logging.getLogger(ACCESS_LOGGER)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Run the wrapped app and log the outcome, also when it raises."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        record = RequestRecord()
        scope[RECORD_KEY] = record
        started = time.perf_counter()
        logged = False

        def log() -> None:
            nonlocal logged
            if not logged:
                logged = True
                self.logger.info(self._line(scope, record, time.perf_counter() - started))

        async def counting_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                record.status = int(message["status"])
            elif message["type"] == "http.response.body":
                record.bytes_out += len(message.get("body", b""))
                if not message.get("more_body", False):
                    # Logged before the last byte leaves: once a client has
                    # its whole answer, the line is in the log.
                    log()
            await send(message)

        try:
            await self.app(scope, receive, counting_send)
        except Exception:
            if record.status is None:
                record.status = 500
            raise
        finally:
            log()

    def _line(self, scope: Scope, record: RequestRecord, duration: float) -> str:
        entry: dict[str, Any] = {
            "time": datetime.now(UTC).isoformat(timespec="milliseconds"),
            "user": record.user,
            "method": str(scope.get("method", ""))[:16],
            "path": self.route_template(scope),
            "status": record.status,
            "duration_ms": round(duration * 1000, 3),
            "bytes_in": record.bytes_in,
            "bytes_out": record.bytes_out,
        }
        if record.user is None and record.claimed_user is not None:
            entry["claimed_user"] = record.claimed_user
        if record.reason is not None:
            entry["reason"] = record.reason
        return json.dumps(entry, separators=(",", ":"), sort_keys=True)
