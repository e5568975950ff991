"""The client signer on its own: what it covers, and requests it refuses to sign."""

from __future__ import annotations

import pytest
import requests

from childvault.keys import Identity, UsageError
from childvault.vault._httpsig import sign_request

ALICE = Identity.generate("alice")


def _signature_input(request: requests.Request) -> str:
    return str(sign_request(request.prepare(), ALICE).headers["Signature-Input"])


def test_coverage_follows_query_and_content_type() -> None:
    url = "http://127.0.0.1:1/v1/x"
    plain = _signature_input(requests.Request("GET", url))
    assert plain.startswith('childvault=("@method" "@path" "content-digest");created=')
    assert 'keyid="alice";alg="ed25519";nonce="' in plain and plain.endswith('tag="childvault"')
    query = _signature_input(requests.Request("GET", url + "?a=1"))
    assert query.startswith('childvault=("@method" "@path" "@query" "content-digest");')
    body = _signature_input(requests.Request("POST", url, json={"a": 1}))
    assert body.startswith('childvault=("@method" "@path" "content-digest" "content-type");')


def test_every_signature_gets_a_fresh_128_bit_nonce() -> None:
    url = "http://127.0.0.1:1/v1/x"
    nonces = {
        _signature_input(requests.Request("GET", url)).split('nonce="')[1][:33] for _ in range(50)
    }
    assert len(nonces) == 50
    assert all(len(n) == 33 and n.endswith('"') for n in nonces)


def test_empty_body_still_gets_a_digest() -> None:
    prepared = sign_request(requests.Request("GET", "http://127.0.0.1:1/").prepare(), ALICE)
    # sha-256 of the empty string.
    assert prepared.headers["Content-Digest"] == (
        "sha-256=:47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=:"
    )


def test_unsignable_requests_raise_usage_error() -> None:
    url = "http://127.0.0.1:1/v1/x"
    with pytest.raises(UsageError, match="Content-Type"):
        sign_request(requests.Request("POST", url, data=b"raw").prepare(), ALICE)
    streamed = requests.Request("POST", url, data=iter([b"a", b"b"])).prepare()
    with pytest.raises(UsageError, match="stream"):
        sign_request(streamed, ALICE)
