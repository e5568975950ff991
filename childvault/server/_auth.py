"""Server side of the transport: verify every request's RFC 9421 signature.

:class:`SignatureAuthMiddleware` (pure ASGI) refuses a request unless all of
these hold, in this order, and only then passes it on with the verified user
name in ``scope["state"]["user"]``:

1. ``Signature``, ``Signature-Input`` and ``Content-Digest`` are present
   (else 401 ``missing_signature`` / ``missing_digest``).
2. Exactly one signature tagged ``childvault``, parsed and checked by the
   ``http-message-signatures`` package, covering ``@method``, ``@path``,
   ``@query`` (when the URL has one), ``content-digest`` and
   ``content-type`` (when the request has one), with ``created``,
   ``nonce`` (32 hex characters), ``keyid``, ``alg="ed25519"``
   (401 ``malformed_signature`` otherwise).
3. ``created`` within ``skew`` seconds of the server clock either way
   (401 ``clock_skew``).
4. ``keyid`` names a user the :class:`KeyResolver` knows (401
   ``unknown_user``) and the Ed25519 signature verifies with that user's key
   (401 ``invalid_signature``).
5. The user is active (403 ``user_disabled``; only said to a caller who
   proved the key, so probing without it learns nothing more than 401).
6. The nonce was not seen within the window (401 ``replay``); the nonce is
   recorded atomically here, before the body is read, so two copies of one
   request racing each other cannot both pass.
7. The body, read under the limits of :mod:`._limits`, matches the signed
   ``Content-Digest`` (``sha-256`` required; 401 ``digest_mismatch``).

Every refusal goes to the audit hook (an :class:`AuthRefusal`) and to the
access log (the reason code). The client sees only ``{"error", "reason"}``;
the library's message, which may quote header content, goes to the audit
hook's ``detail`` only.

A failing resolver or nonce store is the server's problem, not the client's:
503 ``unavailable`` (fail closed), also audited; ``store_unavailable`` when the
nonce store's database cannot be reached (down or restarting).

Steps 2-4 of the requests the client API sends (one line each of
``Signature-Input``, ``Signature`` and ``Content-Digest``, at most one of
``Content-Type``, written exactly as :mod:`childvault.vault._httpsig` writes
them, a plain path, no query) are done by
:meth:`SignatureAuthMiddleware._verify_plain`: strict patterns over those
headers, then the same checks in the same order over the same signature base,
without the package's Structured Fields parser (it was a third of the
server's CPU per request). Every other request, also one a pattern does not
match exactly, goes through the package as before;
``tests/server/test_httpsig_fast.py`` gives both paths the same requests and
forgeries and requires the same answers.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol

import http_sf
import nacl.exceptions
import nacl.signing
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from http_message_signatures import (
    ContentDigest,
    HTTPMessageVerifier,
    HTTPSignatureKeyResolver,
    InvalidSignature,
    VerifyResult,
    algorithms,
)

from childvault._i18n import _t
from childvault.keys import StorageError, UsageError, check_user_name
from childvault.keys._encoding import is_hex_id
from childvault.server._common import (
    ASGIApp,
    AuditHook,
    Message,
    Receive,
    Scope,
    Send,
    record_of,
    report_refusal,
    send_refusal,
)
from childvault.vault._httpsig import (
    PLAIN_METHOD,
    PLAIN_PATH,
    PLAIN_TYPE,
    SIGNATURE_ALG,
    SIGNATURE_LABEL,
    SIGNATURE_TAG,
    covered_components,
    signature_base,
)
from childvault.vault._wire_messages import message_of

#: Default clock-skew window, seconds, either way.
DEFAULT_SKEW = 300
#: Default bound of the in-memory nonce store.
DEFAULT_MAX_NONCES = 100_000

Clock = Callable[[], float]

# The headers of a plain request (module doc), each matched whole: canonical
# Structured Fields only (no leading zeros, no spaces, the parameters in the
# order the client writes them), so the text signed is the text received.
_PLAIN_INPUT = re.compile(
    re.escape(SIGNATURE_LABEL)
    + r'=\(("@method" "@path" "content-digest"(?: "content-type")?)\)'
    + r';created=(0|[1-9][0-9]{0,14});keyid="([a-z][a-z0-9._-]{0,62})"'
    + f';alg="{SIGNATURE_ALG}"'
    + r';nonce="([0-9a-f]{32})"'
    + f';tag="{SIGNATURE_TAG}"'
)
_PLAIN_SIGNATURE = re.compile(re.escape(SIGNATURE_LABEL) + r"=:([A-Za-z0-9+/]{86}==):")
_PLAIN_DIGEST = re.compile(r"sha-256=:[A-Za-z0-9+/]{43}=:")


class KeyResolver(Protocol):
    """Who may sign requests: user name -> (Ed25519 public key, active) or ``None``.

    The real resolver (from verified registration statements) comes with the
    trust model; tests and the demo use :class:`StaticKeyResolver`.
    """

    def resolve(self, name: str) -> tuple[bytes, bool] | None:
        """The 32-byte Ed25519 public key of ``name`` and whether the user is active."""
        ...


class NonceStore(Protocol):
    """Remembers (user, nonce) pairs until their signatures can no longer be accepted."""

    def check_and_add(self, user: str, nonce: str, expires_at: float, now: float) -> bool:
        """Record the pair; return ``False`` if it was already recorded and not expired.

        Must be atomic: of two concurrent calls with one pair, one returns ``True``.
        Raise :class:`NonceStoreFull` rather than forget a live pair.
        """
        ...


class NonceStoreFull(Exception):
    """The nonce store cannot record another pair without forgetting a live one."""


class MemoryNonceStore:
    """An in-memory, bounded :class:`NonceStore` for a single server process.

    Entries expire when their signature would be refused for skew anyway.
    When full of live entries it refuses (the server answers 503) instead of
    evicting: evicting a live nonce would re-open its replay. Several replicas
    need a shared (database) store instead:
    :class:`childvault.vault._postgres.PostgresNonceStore`, which ``childvault
    serve`` uses for a PostgreSQL store (``_serve.nonce_store``).
    """

    def __init__(self, max_entries: int = DEFAULT_MAX_NONCES) -> None:
        self.max_entries = max_entries
        # Insertion order == expiry order is not guaranteed (created varies
        # per client), so purge scans from the front while entries are expired
        # and a full purge runs when the store is full.
        self._entries: OrderedDict[tuple[str, str], float] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    def check_and_add(self, user: str, nonce: str, expires_at: float, now: float) -> bool:
        """See :meth:`NonceStore.check_and_add`."""
        key = (user, nonce)
        with self._lock:
            seen = self._entries.get(key)
            if seen is not None and seen >= now:
                return False
            while self._entries:
                first_key, first_expiry = next(iter(self._entries.items()))
                if first_expiry >= now:
                    break
                del self._entries[first_key]
            if len(self._entries) >= self.max_entries:
                for old in [k for k, expiry in self._entries.items() if expiry < now]:
                    del self._entries[old]
                if len(self._entries) >= self.max_entries:
                    raise NonceStoreFull(_t("{n} live nonces", n=len(self._entries)))
            self._entries[key] = expires_at
            return True


class StaticKeyResolver:
    """A :class:`KeyResolver` over a fixed mapping (tests, demo, until issue 12)."""

    def __init__(self, users: dict[str, tuple[bytes, bool]]) -> None:
        self._users = dict(users)

    def resolve(self, name: str) -> tuple[bytes, bool] | None:
        """See :meth:`KeyResolver.resolve`."""
        return self._users.get(name)


class _Refused(Exception):
    def __init__(self, status: int, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.reason = reason
        self.detail = detail


class _Disconnected(Exception):
    pass


class _ClockSkew(InvalidSignature):
    pass


class _BadSignature(InvalidSignature):
    pass


def _ed25519_ok(key: Ed25519PublicKey, signature: bytes, message: bytes) -> bool:
    """Whether ``signature`` is ``key``'s Ed25519 signature of ``message``, checked by
    libsodium as every other signature in the vault is (``PublicIdentity.verify``).

    Not OpenSSL's check: libsodium's takes about two thirds of its time, and it
    refuses a key of small order, under which OpenSSL accepts a made-up signature
    of any message (``tests/server/test_httpsig_fast.py``).
    """
    try:
        nacl.signing.VerifyKey(key.public_bytes_raw()).verify(message, signature)
    except (nacl.exceptions.BadSignatureError, ValueError, TypeError):
        return False
    return True


class _Ed25519(algorithms.ED25519):
    """The package's Ed25519, checked as :func:`_ed25519_ok` checks (the same answer
    as the direct path), raising a distinguishable error when a signature fails."""

    def verify(self, signature: bytes, message: bytes) -> None:
        if self.public_key is None or not _ed25519_ok(self.public_key, signature, message):
            raise _BadSignature(_t("signature does not verify"))


class _Verifier(HTTPMessageVerifier):
    """The package's verifier with our clock and window for ``created``."""

    # Our window replaces the package's: its check runs on the wall clock,
    # ours on the injectable one.
    def __init__(self, *, key_resolver: HTTPSignatureKeyResolver, clock: Clock, skew: int) -> None:
        super().__init__(signature_algorithm=_Ed25519, key_resolver=key_resolver)
        self._clock = clock
        self._skew = skew

    def validate_created_and_expires(self, sig_input: Any, max_age: Any = None) -> None:
        params = sig_input.params
        created = params.get("created")
        if type(created) is not int:
            raise InvalidSignature(_t('"created" must be present and an integer'))
        now = _check_created(created, self._clock, self._skew)
        expires = params.get("expires")
        if expires is not None and (type(expires) is not int or expires < now):
            raise InvalidSignature(_t('"expires" is not an integer or has passed'))


def _check_created(created: int, clock: Clock, skew: int) -> float:
    """Raise :class:`_ClockSkew` unless ``created`` is within ``skew`` s of ``clock``; now."""
    now = clock()
    if abs(now - created) > skew:
        raise _ClockSkew(
            _t(
                "created {created} is {seconds:.0f} s from the server clock",
                created=created,
                seconds=now - created,
            )
        )
    return now


class _Lookup(HTTPSignatureKeyResolver):
    """Adapts a :class:`KeyResolver` for the package and remembers what it found."""

    def __init__(self, resolver: KeyResolver) -> None:
        self.resolver = resolver
        self.name: str | None = None
        self.found = False
        self.active = False

    def resolve_public_key(self, key_id: str) -> Ed25519PublicKey | None:
        try:
            self.name = check_user_name(key_id)
        except (UsageError, TypeError):
            return None
        try:
            entry = self.resolver.resolve(self.name)
        except Exception as exc:
            raise _Refused(
                503, "unavailable", _t("key resolver failed: {error}", error=repr(exc))
            ) from exc
        if entry is None:
            return None
        key, active = entry
        self.found = True
        self.active = bool(active)
        return Ed25519PublicKey.from_public_bytes(key)

    def resolve_private_key(self, key_id: str) -> Any:
        raise NotImplementedError(_t("the server holds no private keys"))


class _Message:
    """The view of an incoming request that the package's component resolver reads."""

    def __init__(self, scope: Scope, headers: list[tuple[str, str]]) -> None:
        self.method = str(scope["method"])
        raw_path = scope.get("raw_path") or str(scope["path"]).encode()
        path = bytes(raw_path).decode("latin-1")
        query = bytes(scope.get("query_string", b"")).decode("latin-1")
        # Only @method, @path and @query are covered, so the authority is a
        # placeholder; the raw (still percent-encoded) path is what the client
        # signed, and the package refuses anything that is not a valid URL.
        self.url = "http://childvault.invalid" + path + ("?" + query if query else "")
        self.headers = _Headers(headers)


class _Headers:
    def __init__(self, fields: list[tuple[str, str]]) -> None:
        self._fields = fields

    def items(self) -> Iterable[tuple[str, str]]:
        return list(self._fields)

    def __iter__(self) -> Any:
        return iter(dict.fromkeys(name for name, _ in self._fields))

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and any(n.lower() == name.lower() for n, _ in self._fields)


def _header(headers: list[tuple[str, str]], name: str) -> str | None:
    values = [v for n, v in headers if n == name]
    return ", ".join(values) if values else None


class SignatureAuthMiddleware:
    """Refuse every request not signed by an active user (see module doc).

    ``public`` lists (method, path) pairs served without a signature, such as
    ``("GET", "/health")``.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        resolver: KeyResolver,
        nonce_store: NonceStore | None = None,
        audit: AuditHook | None = None,
        clock: Clock = time.time,
        skew: int = DEFAULT_SKEW,
        public: Iterable[tuple[str, str]] = (),
    ) -> None:
        self.app = app
        self.resolver = resolver
        self.nonce_store: NonceStore = (
            nonce_store if nonce_store is not None else MemoryNonceStore()
        )
        self.audit = audit
        self.clock = clock
        self.skew = skew
        self.public = frozenset(public)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Verify, then pass the request on with a replayable ``receive``."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        method = str(scope["method"])
        if (method, scope["path"]) in self.public or (
            method == "HEAD" and ("GET", scope["path"]) in self.public
        ):
            await self.app(scope, receive, send)
            return
        record = record_of(scope)
        lookup = _Lookup(self.resolver)
        try:
            user = self._verify_headers(scope, lookup)
            body = await self._read_body(receive)
            self._verify_body(scope, user, body)
        except _Disconnected:
            # The client left mid-body: nobody to answer, nothing was accepted.
            record.reason = "client_disconnected"
            return
        except _Refused as refusal:
            record.claimed_user = lookup.name
            record.reason = refusal.reason
            self._report(scope, refusal, lookup.name)
            error = {401: "unauthorized", 403: "forbidden"}.get(refusal.status, "unavailable")
            await send_refusal(send, refusal.status, error, refusal.reason)
            return
        record.user = user.name
        state = dict(scope.get("state") or {})
        state["user"] = user.name
        inner_scope = dict(scope)
        inner_scope["state"] = state
        await self.app(inner_scope, _replay(body, receive), send)

    # -- steps -------------------------------------------------------------

    def _verify_headers(self, scope: Scope, lookup: _Lookup) -> _Verified:
        headers = [
            (bytes(n).decode("latin-1").lower(), bytes(v).decode("latin-1"))
            for n, v in scope.get("headers", [])
        ]
        signature_header = _header(headers, "signature")
        if signature_header is None or _header(headers, "signature-input") is None:
            raise _Refused(401, "missing_signature", _t("no Signature or Signature-Input header"))
        result = self._verify_plain(scope, headers, lookup)
        plain = result is not None
        if result is None:
            result = self._verify_package(scope, headers, lookup, signature_header)
        params = result.parameters
        nonce = params.get("nonce")
        if params.get("alg") != SIGNATURE_ALG or not is_hex_id(nonce):
            raise _Refused(401, "malformed_signature", _t("alg or nonce missing or malformed"))
        if lookup.name is None or not lookup.found:
            raise _Refused(401, "unknown_user", _t("key lookup did not run"))
        if not lookup.active:
            raise _Refused(403, "user_disabled", _t("user {name!r} is disabled", name=lookup.name))
        created = int(params["created"])
        try:
            fresh = self.nonce_store.check_and_add(
                lookup.name, str(nonce), float(created + self.skew), self.clock()
            )
        except StorageError as exc:
            # The shared database is down or restarting: said as such, so that
            # the client reports the database (exit 1), not a server that did
            # not answer. Refused before serving: nothing was done.
            raise _Refused(
                503, "store_unavailable", _t("nonce store: {error}", error=repr(exc))
            ) from exc
        except Exception as exc:
            raise _Refused(503, "unavailable", _t("nonce store: {error}", error=repr(exc))) from exc
        if not fresh:
            raise _Refused(401, "replay", _t("nonce {nonce} already used", nonce=nonce))
        has_type = _header(headers, "content-type") is not None
        return _Verified(lookup.name, result, has_type, plain)

    def _verify_package(
        self, scope: Scope, headers: list[tuple[str, str]], lookup: _Lookup, signature_header: str
    ) -> VerifyResult:
        """Steps 2-4 by the ``http-message-signatures`` package (any request)."""
        try:
            signatures = http_sf.parse(signature_header.encode("latin-1"), tltype="dictionary")
        except Exception as exc:
            raise _Refused(
                401, "malformed_signature", _t("Signature: {error}", error=repr(exc))
            ) from exc
        # Parameters on a Signature member mean nothing and are not signed:
        # refused rather than ignored, so what is accepted is what was signed.
        if not isinstance(signatures, dict) or any(
            not isinstance(member, tuple) or member[1] for member in signatures.values()
        ):
            raise _Refused(401, "malformed_signature", _t("Signature members carry parameters"))
        digest_header = _header(headers, "content-digest")
        if digest_header is None:
            raise _Refused(401, "missing_digest", _t("no Content-Digest header"))
        try:
            digests = http_sf.parse(digest_header.encode("latin-1"), tltype="dictionary")
        except Exception as exc:
            raise _Refused(
                401, "malformed_digest", _t("Content-Digest: {error}", error=repr(exc))
            ) from exc
        if not isinstance(digests, dict) or "sha-256" not in digests:
            raise _Refused(401, "malformed_digest", _t("Content-Digest has no sha-256 member"))

        message = _Message(scope, headers)
        required = covered_components(
            has_query=bool(scope.get("query_string")),
            has_content_type=_header(headers, "content-type") is not None,
        )
        verifier = _Verifier(key_resolver=lookup, clock=self.clock, skew=self.skew)
        try:
            results = verifier.verify(
                message,
                max_age=None,
                expect_tag=SIGNATURE_TAG,
                require_components=required,
            )
        except _Refused:
            raise
        except InvalidSignature as exc:
            # The package wraps what the key lookup raises; a failing resolver
            # must come out as 503, not as a bad signature.
            if isinstance(exc.__cause__, _Refused):
                raise exc.__cause__ from None
            raise self._classify(exc, lookup) from exc
        except Exception as exc:
            raise self._classify(exc, lookup) from exc
        if len(results) != 1:
            raise _Refused(
                401, "malformed_signature", _t("{n} childvault signatures", n=len(results))
            )
        result: VerifyResult = results[0]
        return result

    def _verify_plain(
        self, scope: Scope, headers: list[tuple[str, str]], lookup: _Lookup
    ) -> VerifyResult | None:
        """Steps 2-4 of a plain request (module doc); None if it is not one."""
        if scope.get("query_string"):
            return None
        fields: dict[str, str] = {}
        for name, value in headers:
            if name in ("signature-input", "signature", "content-digest", "content-type"):
                if name in fields:
                    return None  # more than one line: the package combines them
                fields[name] = value
        method = str(scope["method"])
        path = bytes(scope.get("raw_path") or str(scope["path"]).encode()).decode("latin-1")
        params_match = _PLAIN_INPUT.fullmatch(fields.get("signature-input", ""))
        signature_match = _PLAIN_SIGNATURE.fullmatch(fields.get("signature", ""))
        digest = fields.get("content-digest", "")
        content_type = fields.get("content-type")
        if (
            params_match is None
            or signature_match is None
            or _PLAIN_DIGEST.fullmatch(digest) is None
            or PLAIN_METHOD.fullmatch(method) is None
            or PLAIN_PATH.fullmatch(path) is None
            or (content_type is not None and PLAIN_TYPE.fullmatch(content_type) is None)
            or params_match.group(1).endswith('"content-type"') != (content_type is not None)
        ):
            return None
        created, keyid, nonce = (
            int(params_match.group(2)),
            params_match.group(3),
            params_match.group(4),
        )
        # In the package's order: the window, then the key, then the signature.
        try:
            _check_created(created, self.clock, self.skew)
        except _ClockSkew as exc:
            raise self._classify(exc, lookup) from exc
        key = lookup.resolve_public_key(keyid)
        if key is None:
            # The package's own error, so the audit detail reads alike.
            failure = InvalidSignature("Unable to resolve verification key")
            raise self._classify(failure, lookup)
        params_text = params_match.group(0)[len(SIGNATURE_LABEL) + 1 :]
        base = signature_base(method, path, digest, content_type, params_text)
        # The pattern matched: 64 bytes in canonical base64.
        if not _ed25519_ok(key, base64.b64decode(signature_match.group(1)), base):
            raise _Refused(401, "invalid_signature", _t("signature does not verify"))
        covered = {'"@method"': method, '"@path"': path, '"content-digest"': digest}
        if content_type is not None:
            covered['"content-type"'] = content_type
        covered['"@signature-params"'] = params_text
        return VerifyResult(
            label=SIGNATURE_LABEL,
            algorithm=_Ed25519,
            covered_components=covered,
            parameters={
                "created": created,
                "keyid": keyid,
                "alg": SIGNATURE_ALG,
                "nonce": nonce,
                "tag": SIGNATURE_TAG,
            },
            body=None,
            nonce=nonce,
        )

    @staticmethod
    def _classify(exc: Exception, lookup: _Lookup) -> _Refused:
        if isinstance(exc, _ClockSkew):
            return _Refused(401, "clock_skew", message_of(exc))
        if isinstance(exc, _BadSignature):
            return _Refused(401, "invalid_signature", message_of(exc))
        # Anything else the package refuses (structure, coverage, parameters)
        # is malformed input, unless the key lookup found no such user: that
        # gets its own reason.
        if lookup.name is not None and not lookup.found:
            return _Refused(401, "unknown_user", _t("no user {name!r}", name=lookup.name))
        return _Refused(401, "malformed_signature", _t("Signature: {error}", error=repr(exc)[:500]))

    async def _read_body(self, receive: Receive) -> bytes:
        # Limits (size, time) are enforced by LimitsMiddleware's receive.
        chunks: list[bytes] = []
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise _Disconnected
            chunks.append(bytes(message.get("body", b"")))
            if not message.get("more_body", False):
                return b"".join(chunks)

    def _verify_body(self, scope: Scope, user: _Verified, body: bytes) -> None:
        if body and not user.content_type_covered:
            raise _Refused(401, "malformed_signature", _t("a body without a signed Content-Type"))
        if user.plain:
            # _PLAIN_DIGEST matched: one sha-256 member, 32 bytes in canonical base64.
            signed = base64.b64decode(user.result.covered_components['"content-digest"'][9:-1])
            if not hmac.compare_digest(signed, hashlib.sha256(body).digest()):
                # The detail the package's refusal gives (the audit log reads alike).
                failure = InvalidSignature("Content-Digest does not match the message body")
                raise _Refused(
                    401, "digest_mismatch", _t("Content-Digest: {error}", error=repr(failure))
                )
            return
        try:
            checked = ContentDigest.verify_components(user.result.covered_components, body)
        except Exception as exc:
            raise _Refused(
                401, "digest_mismatch", _t("Content-Digest: {error}", error=repr(exc)[:500])
            ) from exc
        if not checked:
            raise _Refused(401, "malformed_signature", _t("Content-Digest not covered"))

    def _report(self, scope: Scope, refusal: _Refused, claimed: str | None) -> None:
        report_refusal(
            self.audit,
            scope,
            status=refusal.status,
            reason=refusal.reason,
            claimed_user=claimed,
            detail=refusal.detail,
            now=self.clock(),
        )


@dataclass(frozen=True)
class _Verified:
    name: str
    result: VerifyResult
    content_type_covered: bool
    #: Verified by :meth:`SignatureAuthMiddleware._verify_plain` (its digest is plain too).
    plain: bool = False


def _replay(body: bytes, receive: Receive) -> Receive:
    """A ``receive`` that yields the already-read body once, then defers to the server."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay
