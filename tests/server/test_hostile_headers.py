"""Unit tests of the middleware, in process: hostile signature headers, nonce store, failures.

The ASGI app is called directly (no server), so hypothesis can try many
header values quickly. The property: a hostile ``Signature``,
``Signature-Input`` or ``Content-Digest`` gets a clean 401/403 JSON refusal,
never an exception (which uvicorn would turn into a 500) and never a 200.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import http_sf
import pytest
import requests
from hypothesis import given
from hypothesis import strategies as st

from childvault.keys import Identity
from childvault.server import (
    AuthRefusal,
    MemoryNonceStore,
    NonceStoreFull,
    StaticKeyResolver,
    create_app,
)
from childvault.vault._httpsig import sign_request

ALICE = Identity.generate("alice")
DAVE = Identity.generate("dave")
RESOLVER = StaticKeyResolver(
    {"alice": (ALICE.public.signing_key, True), "dave": (DAVE.public.signing_key, False)}
)
APP = create_app(RESOLVER)


def call(
    app: Any,
    headers: dict[str, str] | list[tuple[bytes, bytes]],
    *,
    method: str = "GET",
    path: str = "/v1/whoami",
    query: bytes = b"",
    body: bytes = b"",
) -> tuple[int, dict[str, Any]]:
    """Run one request through ``app`` in process; return status and JSON body."""
    raw_headers = (
        headers
        if isinstance(headers, list)
        else [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]
    )
    scope = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": query,
        "root_path": "",
        "headers": raw_headers,
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8443),
        "state": {},
    }
    sent: list[dict[str, Any]] = []
    pending = [{"type": "http.request", "body": body, "more_body": False}]

    async def receive() -> dict[str, Any]:
        if pending:
            return pending.pop()
        await asyncio.sleep(3600)  # a client that stays connected
        raise AssertionError("unreachable")

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    asyncio.run(app(scope, receive, send))
    status = sent[0]["status"]
    payload = b"".join(m.get("body", b"") for m in sent[1:])
    return status, json.loads(payload)


def signed_headers(identity: Identity = ALICE, **kwargs: Any) -> dict[str, str]:
    """The headers of a freshly signed ``GET /v1/whoami``."""
    request = requests.Request("GET", "http://childvault.invalid/v1/whoami", **kwargs).prepare()
    return dict(sign_request(request, identity).headers)


def test_harness_accepts_a_signed_request() -> None:
    assert call(APP, signed_headers()) == (200, {"user": "alice", "body_bytes": 0})


def _assert_refused(status: int, payload: dict[str, Any]) -> None:
    assert status in (401, 403), payload
    assert set(payload) == {"error", "reason"}


SF_PIECES = st.sampled_from(
    [
        "childvault=",
        "sig=",
        '("@method" "@path" "content-digest")',
        '("@method" "@method")',
        '("@query-param";name="a")',
        '("content-digest";key="sha-256")',
        '("content-digest";sf)',
        '("@status")',
        '("x-unknown")',
        "()",
        ";created=",
        ";expires=",
        ";keyid=",
        ";alg=",
        ";nonce=",
        ';tag="childvault"',
        '"alice"',
        '"../../etc"',
        '"ed25519"',
        '"rsa-pss-sha512"',
        "1796025438",
        "-1",
        "999999999999999",
        "1.5",
        "?1",
        ":AAAA:",
        ":" + "A" * 86 + "==:",
        "sha-256=",
        "sha-512=",
        "md5=",
        ", ",
        ";",
        "=",
        '"',
        "(",
        ")",
        ":",
        "\t",
        "%",
        "\u00ff",
    ]
)
SF_TEXT = st.lists(SF_PIECES, max_size=20).map("".join)
LATIN1 = st.text(st.characters(min_codepoint=0x20, max_codepoint=0xFF), max_size=200)
HEADER = st.one_of(SF_TEXT, LATIN1)
NAMES = st.sampled_from(["signature", "signature-input", "content-digest"])


@given(name=NAMES, value=HEADER)
def test_one_hostile_header_in_a_signed_request_is_refused(name: str, value: str) -> None:
    headers = {k.lower(): v for k, v in signed_headers().items()}
    headers[name] = value
    _assert_refused(*call(APP, headers))


@given(signature=HEADER, signature_input=HEADER, digest=HEADER)
def test_all_hostile_headers_are_refused(signature: str, signature_input: str, digest: str) -> None:
    headers = {"signature": signature, "signature-input": signature_input, "content-digest": digest}
    _assert_refused(*call(APP, headers))


@given(name=NAMES, at=st.integers(min_value=0, max_value=400), insert=HEADER, cut=st.booleans())
def test_spliced_headers_are_refused(name: str, at: int, insert: str, cut: bool) -> None:
    headers = {k.lower(): v for k, v in signed_headers().items()}
    original = headers[name]
    at = min(at, len(original))
    headers[name] = original[:at] + insert + ("" if cut else original[at:])
    if headers[name] == original:
        return
    status, payload = call(APP, headers)
    if status == 200:
        # Structured fields allow optional whitespace and repeated parameters
        # (the last wins): a splice may leave the same parsed header, which is
        # then the same signed request. Anything else must be refused.
        assert http_sf.parse(headers[name].encode("latin-1"), tltype="dictionary") == (
            http_sf.parse(original.encode("latin-1"), tltype="dictionary")
        )
        return
    _assert_refused(status, payload)


@given(raw=st.lists(st.tuples(NAMES, st.binary(max_size=100)), min_size=1, max_size=6))
def test_raw_bytes_and_repeated_header_lines_are_refused(raw: list[tuple[str, bytes]]) -> None:
    headers = [(name.encode(), value) for name, value in raw]
    _assert_refused(*call(APP, headers))


def test_two_childvault_signatures_are_refused() -> None:
    first, second = signed_headers(), signed_headers()
    headers = [(k.lower().encode(), v.encode()) for k, v in first.items()]
    # A second signature line with another label, same tag: ambiguous signer.
    headers.append(
        (b"signature-input", second["Signature-Input"].replace("childvault=", "other=", 1).encode())
    )
    headers.append((b"signature", second["Signature"].replace("childvault=", "other=", 1).encode()))
    status, payload = call(APP, headers)
    assert (status, payload["reason"]) == (401, "malformed_signature")


def test_wrong_tag_or_missing_nonce_is_refused() -> None:
    headers = signed_headers()
    headers["Signature-Input"] = headers["Signature-Input"].replace('tag="childvault"', 'tag="x"')
    assert call(APP, headers)[1]["reason"] == "malformed_signature"
    request = requests.Request("GET", "http://childvault.invalid/v1/whoami").prepare()
    prepared = sign_request(request, ALICE, nonce="short")
    assert call(APP, dict(prepared.headers))[1]["reason"] == "malformed_signature"


def test_injected_clock_decides_the_window() -> None:
    late = create_app(RESOLVER, clock=lambda: time.time() + 3600)
    assert call(late, signed_headers())[1]["reason"] == "clock_skew"
    narrow = create_app(RESOLVER, clock=lambda: time.time() + 20, skew=10)
    assert call(narrow, signed_headers())[1]["reason"] == "clock_skew"
    assert call(create_app(RESOLVER, skew=10), signed_headers())[0] == 200


def test_every_refusal_reaches_the_audit_hook() -> None:
    events: list[AuthRefusal] = []
    app = create_app(RESOLVER, audit=events.append)
    call(app, {})
    call(app, signed_headers(DAVE))
    assert [(e.status, e.reason, e.claimed_user) for e in events] == [
        (401, "missing_signature", None),
        (403, "user_disabled", "dave"),
    ]
    assert events[1].method == "GET" and events[1].path == "/v1/whoami"


def test_a_failing_audit_hook_does_not_turn_a_refusal_into_acceptance() -> None:
    def broken(event: AuthRefusal) -> None:
        raise OSError("audit sink down")

    app = create_app(RESOLVER, audit=broken)
    assert call(app, signed_headers(DAVE))[0] == 403
    assert call(app, {})[0] == 401


def test_a_failing_resolver_fails_closed_with_503() -> None:
    class DownResolver:
        def resolve(self, name: str) -> tuple[bytes, bool] | None:
            raise ConnectionError("database unreachable")

    status, payload = call(create_app(DownResolver()), signed_headers())
    assert (status, payload["reason"]) == (503, "unavailable")


def test_nonce_store_refuses_a_live_pair_and_forgets_expired_ones() -> None:
    store = MemoryNonceStore(max_entries=3)
    assert store.check_and_add("alice", "n1", expires_at=100, now=0)
    assert not store.check_and_add("alice", "n1", expires_at=100, now=50)
    # The same nonce from another user is another pair.
    assert store.check_and_add("bob", "n1", expires_at=100, now=50)
    # After expiry the signature is refused for skew anyway; the pair is forgotten.
    assert store.check_and_add("alice", "n1", expires_at=300, now=101)


def test_full_nonce_store_refuses_instead_of_evicting_live_pairs() -> None:
    store = MemoryNonceStore(max_entries=2)
    assert store.check_and_add("alice", "a", expires_at=100, now=0)
    assert store.check_and_add("alice", "b", expires_at=10, now=0)
    with pytest.raises(NonceStoreFull):
        store.check_and_add("alice", "c", expires_at=100, now=5)
    assert not store.check_and_add("alice", "a", expires_at=100, now=5)
    # Once "b" has expired there is room again; "a" is still remembered.
    assert store.check_and_add("alice", "c", expires_at=100, now=11)
    assert len(store) == 2
    assert not store.check_and_add("alice", "a", expires_at=100, now=12)


def test_full_nonce_store_answers_503() -> None:
    app = create_app(RESOLVER, nonce_store=MemoryNonceStore(max_entries=1))
    assert call(app, signed_headers())[0] == 200
    status, payload = call(app, signed_headers())
    assert (status, payload["reason"]) == (503, "unavailable")


def test_replay_in_process_uses_the_same_store() -> None:
    app = create_app(RESOLVER)
    headers = signed_headers()
    assert call(app, headers)[0] == 200
    assert call(app, headers)[1]["reason"] == "replay"


def test_content_type_is_covered_whenever_sent() -> None:
    headers = signed_headers(headers={"Content-Type": "application/json"})
    assert '"content-type"' in headers["Signature-Input"]
    assert call(APP, headers)[0] == 200
    # Added after signing, it is not covered: refused.
    headers = signed_headers()
    headers["Content-Type"] = "application/json"
    assert call(APP, headers)[1]["reason"] == "malformed_signature"


def test_parameters_on_the_signature_member_are_refused() -> None:
    headers = signed_headers()
    headers["Signature"] += ';tag="childvault"'
    assert call(APP, headers)[1]["reason"] == "malformed_signature"
