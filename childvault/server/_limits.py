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
  request head is not complete within ``header_timeout``. It also reads each
  request head as sent, before h11 parses it, and refuses (400, closed) the
  forms a proxy in front could read differently (:func:`head_refusal`); h11's
  own refusals get the same JSON answer and access-log line.
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
import re
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from email.utils import formatdate
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
from childvault.server._hosts import AllowedHosts, host_refused

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


#: Where a request head ends: the first empty line, found exactly as h11 finds it
#: (``h11._receivebuffer``), so no head reaches h11 that was not checked here.
_HEAD_END = re.compile(rb"\n\r?\n")
#: A line starting with a space or tab (one search; two ``in`` tests took four times as long).
_FOLD = re.compile(rb"\n[ \t]")
#: The bytes a request head may hold: HTAB, CR, LF, visible ASCII and space, and
#: obs-text (0x80-0xff, RFC 9110 section 5.5). Deleting them leaves the control
#: characters (NUL, DEL, ...; h11 refuses some, not all): one C loop, where a
#: regular expression took three times as long.
_HEAD_BYTES = bytes([9, 10, 13, *range(0x20, 0x7F), *range(0x80, 0x100)])


def head_refusal(head: bytes, hosts: AllowedHosts | None = None) -> str | None:
    """The reason code for refusing a complete request head as sent, or None.

    ``head`` is the request line and header lines up to and including the empty
    line. Each refused form is one a proxy in front (``--behind-proxy``) may read
    otherwise than h11 does, so that the two disagree about a header or about
    where the body and the next request start (request smuggling):

    - ``bare_lf``: a line ending in LF without CR (RFC 9112 section 2.2);
    - ``obs_fold``: a header line continued on the next one (a line starting
      with a space or tab, RFC 9112 section 5.2);
    - ``control_character``: a control character other than HTAB (h11 refuses
      NUL and a lone CR but keeps the others);
    - ``request_target``: a request target not in origin form (``/...``):
      absolute form names a host the ``Host`` header may contradict, and the
      asterisk and authority forms have no use here;
    - ``ambiguous_framing``: more than one ``Content-Length`` or a list as its
      value (h11 merges equal ones), or ``Transfer-Encoding`` in HTTP/1.0
      (RFC 9112 section 6.1: the framing is faulty);
    - ``host``: with ``hosts`` given, no ``Host`` header, more than one, or one
      that does not name this server (DNS rebinding: :mod:`._hosts`).

    Plain byte counts and searches over the head, once per request.
    """
    crlf = head.count(b"\r\n")
    if head.count(b"\n") != crlf:
        return "bare_lf"
    if _FOLD.search(head) is not None:
        return "obs_fold"
    if head.count(b"\r") != crlf or head.translate(None, _HEAD_BYTES):
        # A CR not before LF, or a control character other than HTAB.
        return "control_character"
    request_line = head[: head.find(b"\r\n")]
    parts = request_line.split(b" ")
    if len(parts) == 3 and not parts[1].startswith(b"/"):
        # Other shapes of the request line h11 refuses itself.
        return "request_target"
    lower = head.lower()
    lengths = lower.count(b"\ncontent-length:")
    if lengths > 1:
        return "ambiguous_framing"
    if lengths == 1:
        start = lower.find(b"\ncontent-length:")
        if b"," in lower[start : lower.find(b"\r\n", start + 1)]:
            return "ambiguous_framing"
    if parts[-1] == b"HTTP/1.0" and b"\ntransfer-encoding:" in lower:
        return "ambiguous_framing"
    if hosts is not None and host_refused(lower, hosts):
        return "host"
    return None


def _raw_refusal(reason: str) -> bytes:
    # The answer send_refusal gives, written before any ASGI request exists;
    # with the Date uvicorn adds to every other answer (RFC 9110 section 6.6.1).
    body = json.dumps({"error": "bad_request", "reason": reason}, separators=(",", ":"))
    return (
        f"HTTP/1.1 400 Bad Request\r\ndate: {formatdate(usegmt=True)}\r\n"
        "content-type: application/json\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\ncache-control: no-store\r\n"
        f"\r\n{body}"
    ).encode()


_METHOD = re.compile(rb"[A-Z]{1,16}")


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


def header_timeout_protocol(
    header_timeout: float = DEFAULT_HEADER_TIMEOUT, hosts: AllowedHosts | None = None
) -> type[H11Protocol]:
    """A uvicorn h11 protocol class that closes connections slow to send a request head
    (and writes each response in one send: :class:`_CoalescingTransport`).

    With ``hosts``, a request head whose ``Host`` does not name this server is
    refused like the other heads :func:`head_refusal` refuses (reason ``host``).

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

        def _refuse_head(self, reason: str, head: bytes) -> None:
            # Answered and closed without h11 or the app seeing the request:
            # nothing after this head can be read as a request or a body.
            self._disarm_head_timer()
            self.transport.write(_raw_refusal(reason))
            self.transport.close()
            found = _METHOD.match(head)
            method = found.group().decode() if found is not None else ""
            _log_unparsed_refusal(self.client, method, reason)

        def _refused_head(self, pending: bytes) -> bool:
            """Refuse the request head at the start of ``pending`` if it is complete and bad."""
            end = _HEAD_END.search(pending)
            if end is None:
                return False  # incomplete: checked again when more arrives
            head = pending[: end.end()]
            reason = head_refusal(head, hosts)
            if reason is None:
                return False
            self._refuse_head(reason, head)
            return True

        def data_received(self, data: bytes) -> None:
            if self.conn.their_state is h11.IDLE:
                # A request head is due: what h11 holds of it (usually nothing)
                # plus the new bytes start with it.
                held = self.conn.trailing_data[0]
                if self._refused_head(held + data if held else data):
                    return
            super().data_received(data)
            if self.conn.their_state is not h11.IDLE:
                self._disarm_head_timer()

        def send_400_response(self, msg: str) -> None:
            # h11 refused the head itself (a space before a colon, two Host
            # headers, ...): the server's JSON answer and an access-log line
            # rather than uvicorn's plain text.
            self._disarm_head_timer()
            self.transport.write(_raw_refusal("malformed_head"))
            self.transport.close()
            _log_unparsed_refusal(self.client, "", "malformed_head")

        def on_response_complete(self) -> None:
            if (
                self.conn.our_state is h11.DONE
                and self.conn.their_state is h11.DONE
                and not self.transport.is_closing()
            ):
                # A pipelined request sent with the previous one: uvicorn's
                # handler would let h11 parse it now, from h11's buffer.
                held = self.conn.trailing_data[0]
                if held and self._refused_head(held):
                    super().on_response_complete()  # counts the request; closing, so no more
                    return
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
        return _access_line(
            str(scope.get("method", ""))[:16], self.route_template(scope), record, duration
        )


def _access_line(method: str, path: str, record: RequestRecord, duration: float) -> str:
    entry: dict[str, Any] = {
        "time": datetime.now(UTC).isoformat(timespec="milliseconds"),
        "user": record.user,
        "method": method,
        "path": path,
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


def _log_unparsed_refusal(client: tuple[str, int] | None, method: str, reason: str) -> None:
    """Log a request refused before it was parsed: the access-log line (path ``-``,
    never the target as sent) and the refusal line :func:`report_refusal` writes."""
    body = json.dumps({"error": "bad_request", "reason": reason}, separators=(",", ":"))
    record = RequestRecord(status=400, reason=reason, bytes_out=len(body))
    logging.getLogger(ACCESS_LOGGER).info(_access_line(method, "-", record, 0.0))
    logging.getLogger("childvault.server").info(
        "request refused: 400 %s from %s",
        reason,
        f"{client[0]}:{client[1]}" if client else "?",
    )
