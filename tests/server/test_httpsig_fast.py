"""The direct signature path (client ``_sign_plain``, server ``_verify_plain``) against
the ``http-message-signatures`` package: same headers, same answers.

The client API's requests are signed and verified without the package (its
Structured Fields code was a third of a round trip's CPU); these tests give
both paths the same requests, valid and forged, and require byte-identical
headers on the client and the same acceptance or refusal reason on the server.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from typing import Any
from unittest import mock

import pytest
import requests
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from childvault.keys import Identity
from childvault.server._auth import (
    MemoryNonceStore,
    SignatureAuthMiddleware,
    StaticKeyResolver,
    _Lookup,
    _Refused,
)
from childvault.vault import _httpsig
from childvault.vault._httpsig import sign_request

NOW = 1_700_000_000
SIGNED = ("Content-Digest", "Signature-Input", "Signature")


@pytest.fixture(scope="module")
def alice() -> Identity:
    return Identity.generate("alice")


@pytest.fixture(scope="module")
def bob() -> Identity:
    return Identity.generate("bob")


@pytest.fixture(scope="module")
def users(alice: Identity, bob: Identity) -> dict[str, tuple[bytes, bool]]:
    return {"alice": (alice.public.signing_key, True), "bob": (bob.public.signing_key, False)}


def _prepared(method: str, url: str, body: bytes | None, ctype: str | None) -> Any:
    headers = {"Content-Type": ctype} if ctype is not None else {}
    return requests.Request(method, url, data=body, headers=headers).prepare()


def _sign(prepared: Any, identity: Identity, nonce: str, *, package: bool) -> Any:
    if package:
        with mock.patch.object(_httpsig, "_sign_plain", return_value=False):
            return sign_request(prepared, identity, created=NOW, nonce=nonce)
    return sign_request(prepared, identity, created=NOW, nonce=nonce)


def _both_sign(
    method: str, url: str, body: bytes | None, ctype: str | None, identity: Identity, nonce: str
) -> dict[str, str]:
    fast = _sign(_prepared(method, url, body, ctype), identity, nonce, package=False)
    slow = _sign(_prepared(method, url, body, ctype), identity, nonce, package=True)
    assert dict(fast.headers) == dict(slow.headers)
    return {k: fast.headers[k] for k in SIGNED}


@pytest.mark.parametrize(
    ("method", "url", "body", "ctype"),
    [
        ("POST", "http://127.0.0.1:8443/v1/rpc", b'{"txn":null}', "application/json"),
        ("GET", "http://127.0.0.1:8443/v1/vault", None, None),
        ("POST", "https://vault.example:443/v1/txn/begin", b"{}", "application/json"),
        ("post", "http://[::1]:8443/v1/rpc/batch", "h\u00e9".encode(), "text/plain; charset=utf-8"),
        ("POST", "http://localhost/v1/whoami", b"", "application/json"),
    ],
)
def test_client_writes_the_packages_headers(
    alice: Identity, method: str, url: str, body: bytes | None, ctype: str | None
) -> None:
    calls: list[bool] = []
    real = _httpsig._sign_plain

    def spy(*args: Any) -> bool:
        calls.append(real(*args))
        return calls[-1]

    with mock.patch.object(_httpsig, "_sign_plain", spy):
        fast = sign_request(_prepared(method, url, body, ctype), alice, created=NOW, nonce="a" * 32)
    assert calls == [True]  # the direct path did sign it
    slow = _sign(_prepared(method, url, body, ctype), alice, "a" * 32, package=True)
    assert {k: fast.headers[k] for k in SIGNED} == {k: slow.headers[k] for k in SIGNED}


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8443/v1/whoami?record=0123&x=a,b",  # a query
        "http://127.0.0.1:8443/v1/a%20b",  # percent-encoded path
        "http://127.0.0.1:8443/v1/a;b=c",  # sub-delimiters
    ],
)
def test_client_leaves_other_requests_to_the_package(alice: Identity, url: str) -> None:
    prepared = _prepared("POST", url, b"{}", "application/json")
    assert not _httpsig._sign_plain(prepared, alice, NOW, "a" * 32, b"{}")
    _both_sign("POST", url, b"{}", "application/json", alice, "b" * 32)


_PATHS = st.text("abcxyzABZ0189._~-/", max_size=40).map(lambda s: "/" + s)
_TYPES = st.one_of(st.none(), st.from_regex(r"[!-~](?:[ -~]{0,30}[!-~])?", fullmatch=True))
_NAMES = st.from_regex(r"[a-z][a-z0-9._-]{0,20}", fullmatch=True)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    path=_PATHS,
    body=st.binary(max_size=300),
    ctype=_TYPES,
    name=_NAMES,
    nonce=st.from_regex(r"[0-9a-f]{32}", fullmatch=True),
    method=st.sampled_from(["GET", "POST", "PUT", "DELETE"]),
)
def test_client_headers_equal_for_any_plain_request(
    path: str, body: bytes, ctype: str | None, name: str, nonce: str, method: str
) -> None:
    identity = _identity(name)
    if body and ctype is None:
        ctype = "application/octet-stream"
    _both_sign(method, "http://127.0.0.1:8443" + path, body, ctype, identity, nonce)


_IDENTITIES: dict[str, Identity] = {}


def _identity(name: str) -> Identity:
    if name not in _IDENTITIES:
        _IDENTITIES[name] = Identity.generate(name)
    return _IDENTITIES[name]


# -- the server: both paths give every request the same answer


def _scope(prepared: Any) -> dict[str, Any]:
    url = prepared.url.split("://", 1)[1]
    target = "/" + url.split("/", 1)[1] if "/" in url else "/"
    path, _, query = target.partition("?")
    return {
        "type": "http",
        "method": prepared.method,
        "path": path,
        "raw_path": path.encode(),
        "query_string": query.encode(),
        "headers": [
            (k.lower().encode(), str(v).encode("latin-1")) for k, v in prepared.headers.items()
        ],
    }


def _outcome(
    scope: dict[str, Any],
    body: bytes,
    users: dict[str, tuple[bytes, bool]],
    *,
    package: bool,
    nonces: MemoryNonceStore | None = None,
    resolver: Any = None,
) -> tuple[Any, ...]:
    auth = SignatureAuthMiddleware(
        None,  # type: ignore[arg-type]
        resolver=resolver or StaticKeyResolver(users),
        nonce_store=MemoryNonceStore() if nonces is None else nonces,
        clock=lambda: float(NOW),
    )
    plain: list[bool] = []
    real = auth._verify_plain

    def plain_path(*args: Any) -> Any:
        # Records whether the direct path answered: accepted, or refused itself.
        if package:
            return None
        try:
            found = real(*args)
        except _Refused:
            plain.append(True)
            raise
        plain.append(found is not None)
        return found

    lookup = _Lookup(auth.resolver)
    try:
        with mock.patch.object(auth, "_verify_plain", plain_path):
            verified = auth._verify_headers(scope, lookup)
        auth._verify_body(scope, verified, body)
    except _Refused as refused:
        return ("refused", refused.status, refused.reason, any(plain))
    return (
        "accepted",
        verified.name,
        dict(verified.result.parameters),
        dict(verified.result.covered_components),
        any(plain),
    )


def _same(
    scope: dict[str, Any], body: bytes, users: dict[str, tuple[bytes, bool]], **kw: Any
) -> tuple[Any, ...]:
    fast = _outcome(scope, body, users, package=False, **kw)
    slow = _outcome(scope, body, users, package=True, **kw)
    assert fast[:-1] == slow[:-1], (fast, slow)
    return fast


def _signed(identity: Identity, *, body: bytes = b'{"a":1}', path: str = "/v1/rpc") -> Any:
    prepared = _prepared("POST", "http://127.0.0.1:8443" + path, body, "application/json")
    return sign_request(prepared, identity, created=NOW, nonce="c" * 32)


def _set(scope: dict[str, Any], name: str, value: str | None) -> dict[str, Any]:
    headers = [(n, v) for n, v in scope["headers"] if n != name.encode()]
    if value is not None:
        headers.append((name.encode(), value.encode("latin-1")))
    return {**scope, "headers": headers}


def _get(scope: dict[str, Any], name: str) -> str:
    return next(v.decode() for n, v in scope["headers"] if n == name.encode())


def test_a_plain_request_is_accepted_by_the_direct_path(
    alice: Identity, users: dict[str, tuple[bytes, bool]]
) -> None:
    scope = _scope(_signed(alice))
    out = _same(scope, b'{"a":1}', users)
    assert out[0] == "accepted" and out[1] == "alice"
    assert out[-1] is True  # the direct path answered


def _forgeries(alice: Identity, bob: Identity) -> Iterator[tuple[str, dict[str, Any], bytes]]:
    good = _scope(_signed(alice))
    body = b'{"a":1}'
    sig = _get(good, "signature")
    raw = bytearray(base64.b64decode(sig.split(":")[1]))
    raw[5] ^= 1
    yield (
        "flipped bit",
        _set(good, "signature", f"childvault=:{base64.b64encode(raw).decode()}:"),
        body,
    )
    impostor = _scope(_signed(Identity.generate("alice")))
    yield "impostor key", impostor, body
    yield "unknown user", _scope(_signed(Identity.generate("carol"))), body
    yield "disabled user", _scope(_signed(bob)), body
    yield "other method", {**good, "method": "PUT"}, body
    yield "other path", {**good, "path": "/v1/txn/begin", "raw_path": b"/v1/txn/begin"}, body
    yield "query added", {**good, "query_string": b"a=1"}, body
    yield "other type", _set(good, "content-type", "text/plain"), body
    yield "type dropped", _set(good, "content-type", None), body
    yield "other body", good, b'{"a":2}'
    params = _get(good, "signature-input")
    for label, changed in (
        ("created later", params.replace(f"created={NOW}", f"created={NOW + 1}")),
        ("created zero-padded", params.replace(f"created={NOW}", f"created=0{NOW}")),
        ("created far", params.replace(f"created={NOW}", f"created={NOW - 3600}")),
        (
            "params reordered",
            params.replace(';alg="ed25519"', "").replace(";tag", ';alg="ed25519";tag'),
        ),
        ("space in list", params.replace('" "@path', '"  "@path')),
        ("other tag", params.replace('tag="childvault"', 'tag="other"')),
        ("other alg", params.replace('alg="ed25519"', 'alg="rsa-pss-sha512"')),
        ("upper nonce", params.replace("c" * 32, "C" * 32)),
        ("extra param", params + ";expires=9999999999"),
        ("keyid bob", params.replace('keyid="alice"', 'keyid="bob"')),
        ("keyid invalid", params.replace('keyid="alice"', 'keyid="Alice"')),
        ("two labels", params + ", other=();created=1"),
    ):
        yield label, _set(good, "signature-input", changed), body
    yield "digest changed", _set(good, "content-digest", "sha-256=:" + "A" * 43 + "=:"), body
    yield "digest sha-512", _set(good, "content-digest", "sha-512=:" + "A" * 86 + "==:"), body
    yield "digest missing", _set(good, "content-digest", None), body
    yield "signature missing", _set(good, "signature", None), body
    yield "signature param", _set(good, "signature", sig + ";x=1"), body
    doubled = {**good, "headers": [*good["headers"], (b"signature-input", b"x=()")]}
    yield "two input lines", doubled, body
    short = _set(good, "signature", "childvault=:" + base64.b64encode(bytes(63)).decode() + ":")
    yield "short signature", short, body


def test_every_forgery_gets_the_same_answer_on_both_paths(
    alice: Identity, bob: Identity, users: dict[str, tuple[bytes, bool]]
) -> None:
    answers = {}
    for label, scope, body in _forgeries(alice, bob):
        answers[label] = _same(scope, body, users)
    # The forgeries are refused for the reasons the package gives (not merely alike).
    assert answers["flipped bit"][:3] == ("refused", 401, "invalid_signature")
    assert answers["impostor key"][:3] == ("refused", 401, "invalid_signature")
    assert answers["unknown user"][:3] == ("refused", 401, "unknown_user")
    assert answers["disabled user"][:3] == ("refused", 403, "user_disabled")
    assert answers["other path"][:3] == ("refused", 401, "invalid_signature")
    assert answers["created far"][:3] == ("refused", 401, "clock_skew")
    assert answers["other body"][:3] == ("refused", 401, "digest_mismatch")
    # The direct path answered the plain ones itself and left the rest to the package.
    assert answers["flipped bit"][-1] and answers["created far"][-1]
    assert not answers["query added"][-1] and not answers["two input lines"][-1]
    # A zero-padded created is the same Structured Field: the package accepts it.
    assert answers["created zero-padded"][0] == "accepted"


def test_replays_and_a_failing_resolver_answer_alike(
    alice: Identity, users: dict[str, tuple[bytes, bool]]
) -> None:
    scope = _scope(_signed(alice))
    for package in (False, True):
        store = MemoryNonceStore()
        first = _outcome(scope, b'{"a":1}', users, package=package, nonces=store)
        again = _outcome(scope, b'{"a":1}', users, package=package, nonces=store)
        assert first[0] == "accepted" and again[:3] == ("refused", 401, "replay")

    class Broken:
        def resolve(self, name: str) -> tuple[bytes, bool] | None:
            raise OSError("down")

    out = _same(scope, b'{"a":1}', users, resolver=Broken())
    assert out[:3] == ("refused", 503, "unavailable")


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(path=_PATHS, body=st.binary(max_size=200), flip=st.integers(0, 63), forge=st.booleans())
def test_random_plain_requests_answer_alike(path: str, body: bytes, flip: int, forge: bool) -> None:
    alice = _identity("alice")
    users = {"alice": (alice.public.signing_key, True)}
    scope = _scope(_signed(alice, body=body, path=path))
    if forge:
        raw = bytearray(base64.b64decode(_get(scope, "signature").split(":")[1]))
        raw[flip] ^= 0x40
        scope = _set(scope, "signature", f"childvault=:{base64.b64encode(raw).decode()}:")
    out = _same(scope, body, users)
    assert out[0] == ("refused" if forge else "accepted")
    assert out[-1] is True


def test_a_key_of_small_order_signs_nothing(alice: Identity) -> None:
    # The identity point as a registered key: with R the identity too and S = 0,
    # [S]B = R + [k]A holds for every message, and OpenSSL's Ed25519 check
    # accepts that "signature" of any request. Both paths check with libsodium,
    # which refuses keys of small order (as every other signature in the vault).
    small = bytes([1]) + bytes(31)
    users = {"eve": (small, True), "alice": (alice.public.signing_key, True)}
    prepared = _prepared("POST", "http://127.0.0.1:8443/v1/rpc", b'{"a":1}', "application/json")
    eve = Identity.generate("eve")
    sign_request(prepared, eve, created=NOW, nonce="d" * 32)
    made_up = base64.b64encode(small + bytes(32)).decode()
    scope = _set(_scope(prepared), "signature", f"childvault=:{made_up}:")
    out = _same(scope, b'{"a":1}', users)
    assert out[:3] == ("refused", 401, "invalid_signature")
    assert out[-1] is True  # refused by the direct path itself
    # The made-up signature is one OpenSSL's check accepts (what the test guards).
    Ed25519PublicKey.from_public_bytes(small).verify(small + bytes(32), b"any request at all")
