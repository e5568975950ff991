"""Small pieces every server middleware shares: ASGI types, the per-request record, refusals."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

logger = logging.getLogger("childvault.server")

#: Scope key of the :class:`RequestRecord` the access log middleware creates.
#: Scopes are copied shallowly down the stack, so every layer sees one record.
RECORD_KEY = "childvault.record"


@dataclass
class RequestRecord:
    """What the access log reports about one request, filled in by the layers below it."""

    user: str | None = None
    claimed_user: str | None = None
    reason: str | None = None
    status: int | None = None
    bytes_in: int = 0
    bytes_out: int = 0


def record_of(scope: Scope) -> RequestRecord:
    """The request's record (a throw-away one when no access log wraps the app)."""
    record = scope.get(RECORD_KEY)
    if isinstance(record, RequestRecord):
        return record
    record = RequestRecord()
    scope[RECORD_KEY] = record
    return record


async def send_refusal(send: Send, status: int, error: str, reason: str) -> None:
    """Send a small JSON refusal and ask the server to close the connection.

    ``Connection: close`` because a refused request's body may be unread: the
    server must not keep reading (or parsing) what an untrusted client sends.
    The body names a stable reason code, never the internal detail.
    """
    body = json.dumps({"error": error, "reason": reason}, separators=(",", ":")).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
                (b"cache-control", b"no-store"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body, "more_body": False})


@dataclass(frozen=True)
class AuthRefusal:
    """One refused request, as reported to the audit hook.

    ``detail`` is the internal reason (it may quote what the client sent); the
    client itself only ever sees ``reason``.
    """

    status: int
    reason: str
    method: str
    path: str
    claimed_user: str | None
    detail: str
    client: str | None
    time: float


AuditHook = Callable[[AuthRefusal], None]


def report_refusal(
    audit: AuditHook | None,
    scope: Scope,
    *,
    status: int,
    reason: str,
    claimed_user: str | None,
    detail: str,
    now: float | None = None,
) -> None:
    """Hand one refusal to the audit hook; a failing hook is logged, never raised."""
    client = scope.get("client")
    event = AuthRefusal(
        status=status,
        reason=reason,
        method=str(scope.get("method", ""))[:16],
        path=str(scope.get("path", ""))[:200],
        claimed_user=claimed_user,
        detail=detail,
        client=f"{client[0]}:{client[1]}" if client else None,
        time=time.time() if now is None else now,
    )
    logger.info("request refused: %s %s", status, reason)
    if audit is None:
        return
    try:
        audit(event)
    except Exception:
        # A broken audit sink must not turn a refusal into a 500 or an
        # acceptance; it is logged and the refusal stands.
        logger.exception("audit hook failed")
