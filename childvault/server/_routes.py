"""The vault API routes: ``GET /v1/vault``, ``POST /v1/rpc``, ``/v1/rpc/batch`` and ``/v1/txn/*``.

Thin: parse the JSON body, hand it to the :class:`~._vault.VaultHost`, turn
its answer or refusal into JSON. The signature layer in front has already
set ``request.state.user``.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from childvault._i18n import _t
from childvault.keys import AccessDenied, ChildVaultError, NotFound, UsageError
from childvault.server._common import AuditHook, logger, record_of, report_refusal
from childvault.server._limits import UserRateLimit
from childvault.server._vault import Refused, VaultHost
from childvault.vault._remote._codec import encode
from childvault.vault._wire_messages import message_fields, message_of

Handler = Callable[[Request], Awaitable[Response]]


#: The JSON of an answer: ASCII only (every other character escaped, the same
#: value to any JSON reader) and without the check for circular references
#: (an answer is a tree :func:`encode` has just built; a cycle would still end
#: in RecursionError, a 500). About half the json module's time for the 55 kB
#: answer of an approval's or a read's inputs (docs/benchmarks.md).
_ANSWER_JSON = json.JSONEncoder(
    ensure_ascii=True, allow_nan=False, check_circular=False, separators=(",", ":")
)


class _Answer(JSONResponse):
    """A vault call's answer (``{"result", "gen"}``), rendered by :data:`_ANSWER_JSON`."""

    def render(self, content: Any) -> bytes:
        """``content`` as ASCII JSON."""
        return _ANSWER_JSON.encode(content).encode("ascii")


def _status(exc: ChildVaultError) -> int:
    if isinstance(exc, NotFound):
        return 404
    if isinstance(exc, AccessDenied):
        return 403
    if isinstance(exc, UsageError):
        return 400
    return 409


class RateLimited(Refused):
    """A verified user over their rate of accepted requests (429, ``Retry-After``)."""

    def __init__(self, user: str, per_minute: float, retry_after: str) -> None:
        super().__init__(
            429,
            "rate_limited",
            _t(
                "{user} made more than {n:g} requests a minute: retry after {s} s",
                user=user,
                n=per_minute,
                s=retry_after,
            ),
        )
        self.retry_after = retry_after


def vault_routes(
    vault: VaultHost, audit: AuditHook | None, rate: UserRateLimit | None = None
) -> list[Route]:
    """The routes of the served vault; ``rate`` limits each verified user's requests."""

    def guarded(
        fn: Callable[[Request, dict[str, Any]], Awaitable[Any]], *, ends: bool = False
    ) -> Handler:
        # ends: the route commits or rolls back the transaction its body names.
        async def handler(request: Request) -> Response:
            user = str(request.state.user)
            try:
                body = await request.body()
                doc = json.loads(body, parse_int=_wire_int) if body else {}
                if not isinstance(doc, dict):
                    raise Refused(400, "malformed", _t("the body must be a JSON object"))
                # Ending the caller's own open transaction (commit or rollback naming
                # it) is never refused: that would leave the transaction holding the
                # vault until its idle timeout. Every other request takes a token,
                # calls and batches inside that transaction too: exempting them let
                # one transaction run any number of requests past the limit
                # (docs/server.md, "Per-user rate limit"). Only the caller's own open
                # transaction counts, so a made-up id gains nothing.
                txn = doc.get("txn")
                exempt = ends and isinstance(txn, str) and vault.holds(user, txn)
                if rate is not None and not exempt:
                    wait = rate.take(user)
                    if wait > 0:
                        raise RateLimited(user, rate.per_minute, rate.retry_after(wait))
                # Read before the call: what it answers is at least this new, so a
                # client may keep it while later answers name the same generation.
                generation = vault.generation
                return _Answer({"result": await fn(request, doc), "gen": generation})
            except Refused as exc:
                record_of(request.scope).reason = exc.reason
                report_refusal(
                    audit,
                    request.scope,
                    status=exc.status,
                    reason=exc.reason,
                    claimed_user=user,
                    detail=exc.message,
                )
                headers = {"Retry-After": exc.retry_after} if isinstance(exc, RateLimited) else None
                # With its template, so the client shows what was refused in its
                # reader's language (the English "error" stays as it was).
                return JSONResponse(
                    {"error": exc.message, "reason": exc.reason, **message_fields(exc.message)},
                    exc.status,
                    headers=headers,
                )
            except RecursionError:
                # JSON nested past Python's recursion limit, in the body or in a
                # log entry it carries: unreadable input like any other.
                nested = _t("the body is nested too deeply")
                return JSONResponse(
                    {"error": nested, "reason": "malformed", **message_fields(nested)}, 400
                )
            except ValueError as exc:  # not JSON
                # Marked, so a Chinese reader does not get the JSON parser's English.
                unread = _unreadable(exc)
                shown = message_fields(unread) if len(unread) <= 200 else {}
                return JSONResponse({"error": unread[:200], "reason": "malformed", **shown}, 400)
            except ChildVaultError as exc:
                # A library error (a row missing, a conflict): the client re-raises its class.
                # With its template, so the client shows it in its reader's language.
                shown = message_fields(exc.args[0] if exc.args else None)
                return JSONResponse(
                    {"error": str(exc), "reason": "error", "type": type(exc).__name__, **shown},
                    _status(exc),
                )
            except Exception:
                logger.exception("vault call failed")
                failed = _t("internal error")
                return JSONResponse(
                    {"error": failed, "reason": "internal", **message_fields(failed)}, 500
                )

        return handler

    async def describe(request: Request, doc: dict[str, Any]) -> Any:
        return encode(await vault.describe(str(request.state.user)))

    async def rpc(request: Request, doc: dict[str, Any]) -> Any:
        txn = doc.get("txn")
        if txn is not None and not isinstance(txn, str):
            raise Refused(400, "malformed", _t("txn must be a string"))
        return await vault.call(
            str(request.state.user),
            txn,
            str(doc.get("repo")),
            str(doc.get("method")),
            doc.get("args", []),
            doc.get("kwargs", {"$o": []}),
        )

    async def rpc_batch(request: Request, doc: dict[str, Any]) -> Any:
        # {"txn" | "begin": true, "calls": [{"repo", "method", "args", "kwargs"}, ...],
        #  "commit": bool} -> [txn id or None, [result, ...]]
        txn = doc.get("txn")
        begin, commit, calls = doc.get("begin", False), doc.get("commit", False), doc.get("calls")
        if txn is not None and not isinstance(txn, str):
            raise Refused(400, "malformed", _t("txn must be a string"))
        if not isinstance(begin, bool) or not isinstance(commit, bool):
            raise Refused(400, "malformed", _t("begin and commit must be true or false"))
        if not isinstance(calls, list) or not all(isinstance(c, dict) for c in calls):
            raise Refused(400, "malformed", _t("calls must be a list of objects"))
        # "gen": begin only if nothing was committed since the answer naming it.
        gen = doc.get("gen")
        if gen is not None and (type(gen) is not int or not begin):
            raise Refused(400, "malformed", _t("gen is a number, sent with begin"))
        txn_id, results = await vault.batch(
            str(request.state.user),
            txn,
            [
                (
                    str(c.get("repo")),
                    str(c.get("method")),
                    c.get("args", []),
                    c.get("kwargs", {"$o": []}),
                )
                for c in calls
            ],
            begin=begin,
            commit=commit,
            gen=gen,
        )
        return [txn_id, results]

    async def begin(request: Request, doc: dict[str, Any]) -> Any:
        return await vault.begin(str(request.state.user))

    def ender(commit: bool) -> Callable[[Request, dict[str, Any]], Awaitable[Any]]:
        async def end(request: Request, doc: dict[str, Any]) -> Any:
            await vault.finish(str(request.state.user), str(doc.get("txn")), commit=commit)
            return None

        return end

    return [
        Route("/v1/vault", guarded(describe), methods=["GET"]),
        Route("/v1/rpc", guarded(rpc), methods=["POST"]),
        Route("/v1/txn/begin", guarded(begin), methods=["POST"]),
        Route("/v1/txn/commit", guarded(ender(True), ends=True), methods=["POST"]),
        Route("/v1/txn/rollback", guarded(ender(False), ends=True), methods=["POST"]),
        Route("/v1/rpc/batch", guarded(rpc_batch), methods=["POST"]),
    ]


#: The integers SQLite and PostgreSQL store (64-bit, signed).
_INT_MIN, _INT_MAX = -(2**63), 2**63 - 1


def _wire_int(text: str) -> int:
    """An integer of a request body, refused (400 ``malformed``) outside 64 bits.

    Checked as the body is parsed, before any call runs: a larger one reached
    the store as an ``OverflowError`` (a 500), possibly after earlier calls of
    its batch ran. Only integer literals pass through here, so it costs nothing
    on the strings and binary values that make up the rest of a body.
    """
    value = int(text)
    if not _INT_MIN <= value <= _INT_MAX:
        raise Refused(
            400, "malformed", _t("a number in the request is out of range (64-bit integers only)")
        )
    return value


def _unreadable(exc: ValueError) -> str:
    """What a 400 ``malformed`` says of a body that could not be read: where the
    JSON breaks, or that it is not UTF-8, as a marked message (the parser's own
    text is English); any other ``ValueError`` with its own message."""
    if isinstance(exc, json.JSONDecodeError):
        return _t(
            "the body is not JSON (line {line}, column {column})",
            line=exc.lineno,
            column=exc.colno,
        )
    if isinstance(exc, UnicodeDecodeError):
        return _t("the body is not UTF-8 text")
    return message_of(exc)
