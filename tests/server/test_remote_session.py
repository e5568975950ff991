"""The remote backend's session reads the environment's proxy and CA settings once
per server, with the answers ``requests`` itself gives at every request."""

from __future__ import annotations

import pytest
import requests

from childvault.vault._remote import _Session

URLS = (
    "http://127.0.0.1:8443/v1/rpc",
    "http://replica.example:8443/v1/rpc/batch",
    "https://vault.example/v1/txn/begin",
    "https://internal.example/v1/rpc",
)


def test_settings_equal_requests_own_per_server(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTP_PROXY", "http://proxy.example:3128")
    monkeypatch.setenv("HTTPS_PROXY", "http://sproxy.example:3128")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,internal.example")
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", "/etc/ssl/certs/institution.pem")
    kept, plain = _Session(), requests.Session()
    for url in URLS * 2:  # the second time from what was kept
        expected = plain.merge_environment_settings(url, {}, None, None, None)
        if url.startswith("http://"):
            # Plain HTTP (loopback only) never goes through a proxy (review RV10-3).
            expected["proxies"] = {}
        assert kept.merge_environment_settings(url, {}, None, None, None) == expected
    proxies = [kept.merge_environment_settings(u, {}, None, None, None)["proxies"] for u in URLS]
    # NO_PROXY is per host: internal.example is not proxied; plain HTTP never is.
    assert proxies[0] == proxies[1] == {}
    assert proxies[2]["https"] == "http://sproxy.example:3128" and "https" not in proxies[3]
    assert kept.merge_environment_settings(URLS[0], {}, None, None, None)["verify"] == (
        "/etc/ssl/certs/institution.pem"
    )
    # Read once: a change of the environment later is not seen (requests' own is).
    monkeypatch.setenv("HTTPS_PROXY", "http://other.example:3128")
    later = kept.merge_environment_settings(URLS[2], {}, None, None, None)["proxies"]
    assert later["https"] == "http://sproxy.example:3128"
    assert plain.merge_environment_settings(URLS[2], {}, None, None, None)["proxies"]["https"] == (
        "http://other.example:3128"
    )


def test_a_request_with_settings_of_its_own_is_not_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("REQUESTS_CA_BUNDLE", raising=False)
    monkeypatch.delenv("CURL_CA_BUNDLE", raising=False)
    session = _Session()
    mine = session.merge_environment_settings(URLS[0], {}, None, "/tmp/ca.pem", None)
    assert mine["verify"] == "/tmp/ca.pem"
    assert session.merge_environment_settings(URLS[0], {}, None, None, None)["verify"] is True


def test_server_ca_is_not_overridden_by_requests_ca_bundle(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Regression (found in the session-8 audit): with REQUESTS_CA_BUNDLE or
    CURL_CA_BUNDLE set, as on many Debian machines, ``requests`` used them instead
    of the backend's ``verify`` (CHILDVAULT_SERVER_CA), so every command against a
    server with its own certificate failed with "did not answer"."""
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", "/etc/ssl/certs/ca-certificates.crt")
    monkeypatch.setenv("CURL_CA_BUNDLE", "/etc/ssl/certs/ca-certificates.crt")
    session = _Session()
    session.verify = "/srv/childvault/server-ca.pem"
    got = session.merge_environment_settings(URLS[2], {}, None, None, None)
    assert got["verify"] == "/srv/childvault/server-ca.pem"
    # A backend left at the default (True) still follows the environment's bundle.
    default = _Session()
    got = default.merge_environment_settings(URLS[2], {}, None, None, None)
    assert got["verify"] == "/etc/ssl/certs/ca-certificates.crt"
