"""The HTTP client of the remote backend: a ``requests`` session whose connections
send a request's head and body in one piece, and which posts a signed request
straight through its connection pool. Apart from the backend: it knows nothing
of calls, transactions or answers, only of sending one request."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlsplit

import requests
import requests.adapters
import urllib3
import urllib3.connection
import urllib3.exceptions

from childvault.keys import Identity
from childvault.vault._httpsig import plain_headers, redirect_refused


class _OneSend:
    """A urllib3 connection that sends a request's head and body (bytes) in one
    ``send()``: urllib3 sends them apart, and the server then wakes twice for
    one request (docs/server.md "Limits"; bench/NOTES.md, round 2 session 8)."""

    _body: bytes | None = None
    _joined: bytes | None = None

    def request(  # type: ignore[no-untyped-def]
        self, method, url, body=None, headers=None, **kwargs
    ) -> None:
        """As urllib3's, the body (bytes, not chunked) held for :meth:`endheaders`."""
        if isinstance(body, bytes) and body and not kwargs.get("chunked"):
            named = {str(k).lower() for k in headers or {}}
            if "transfer-encoding" not in named:
                self._body = body
                if "content-length" not in named:
                    headers = {**(headers or {}), "Content-Length": str(len(body))}
                body = None
        try:
            super().request(method, url, body=body, headers=headers, **kwargs)  # type: ignore[misc]
        finally:
            self._body = None

    def endheaders(  # type: ignore[no-untyped-def]
        self, message_body=None, *, encode_chunked=False
    ) -> None:
        """http.client's; the held body goes out with the head (:meth:`send`)."""
        self._joined, self._body = self._body, None
        try:
            super().endheaders(message_body, encode_chunked=encode_chunked)  # type: ignore[misc]
        finally:
            self._joined = None

    def send(self, data: Any) -> None:
        """http.client's; the head that ``endheaders`` sends carries the held body."""
        joined, self._joined = self._joined, None
        super().send(data if joined is None else bytes(data) + joined)  # type: ignore[misc]


class _OneSendHTTP(_OneSend, urllib3.connection.HTTPConnection):
    """:class:`_OneSend` over plain HTTP (loopback)."""


class _OneSendHTTPS(_OneSend, urllib3.connection.HTTPSConnection):
    """:class:`_OneSend` over TLS."""


class _OneSendPool(urllib3.HTTPConnectionPool):
    ConnectionCls = _OneSendHTTP


class _OneSendTLSPool(urllib3.HTTPSConnectionPool):
    ConnectionCls = _OneSendHTTPS


class _Adapter(requests.adapters.HTTPAdapter):
    """``requests``' adapter with connections that send a request in one piece."""

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        """As ``requests``', with the pools of :class:`_OneSend` connections."""
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {
            "http": _OneSendPool,
            "https": _OneSendTLSPool,
        }


class _Session(requests.Session):
    """A ``requests.Session`` that reads the environment's proxy and CA bundle
    settings (``HTTPS_PROXY``, ``NO_PROXY``, ``REQUESTS_CA_BUNDLE`` ...) once per
    server, not at every request: ``requests`` walks ``os.environ`` for them
    each time (~80 us, a twentieth of a loopback round trip). Set ``verify``
    and ``proxies`` before the first request; they are part of what is kept.
    """

    def __init__(self) -> None:
        super().__init__()
        self._settings: dict[tuple[str, str], Any] = {}
        #: The connection pool of each server URL (:meth:`post_signed`).
        self._pools: dict[str, tuple[urllib3.HTTPConnectionPool, str]] = {}
        for scheme in ("http://", "https://"):
            self.mount(scheme, _Adapter())

    def merge_environment_settings(
        self, url: Any, proxies: Any, stream: Any, verify: Any, cert: Any
    ) -> Any:
        """The settings of a request to ``url``: kept per scheme and host for a
        request that sets none of its own (every request the backend sends)."""
        if proxies or stream is not None or verify is not None or cert is not None:
            return super().merge_environment_settings(url, proxies, stream, verify, cert)
        parts = urlsplit(url.decode() if isinstance(url, bytes) else str(url))
        key = (parts.scheme, parts.netloc)
        kept = self._settings.get(key)
        if kept is None:
            kept = super().merge_environment_settings(url, proxies, stream, verify, cert)
            if self.verify is not True:
                # The server's own CA (``CHILDVAULT_SERVER_CA``) or no check at
                # all was asked for: ``requests`` would let REQUESTS_CA_BUNDLE or
                # CURL_CA_BUNDLE override it (psf/requests#3829), and the client
                # would refuse its own server's certificate.
                kept["verify"] = self.verify
            if parts.scheme == "http":
                # Plain HTTP is allowed on loopback only (check_url): through an
                # HTTP_PROXY it would leave the machine in clear, the unsigned
                # answers (release keys) with it (review RV10-3).
                kept["proxies"] = {}
            self._settings[key] = kept
        # A copy: requests may change what it is given.
        return {**kept, "proxies": dict(kept["proxies"])}

    def post_signed(
        self, base: str, path: str, body: bytes, identity: Identity, timeout: float
    ) -> _Reply | None:
        """POST ``body`` (JSON) to ``base + path``, signed by ``identity``, straight
        through the connection pool ``requests`` would use; None if this request
        is not one the direct way sends (a proxy in the way, a path or name the
        plain signature does not cover): the caller sends it through ``requests``.

        What ``requests`` did for these requests and is not needed for them
        (preparing and merging the request, hooks, cookies, a ``Response``) was
        about half of the client's CPU of a round trip. The pool, its TLS
        settings and the connection are ``requests``' own; a redirect raises
        :class:`ConfigError` as :class:`~childvault.vault._httpsig.HTTPSignatureAuth`
        does; a transport failure raises what ``urllib3`` raises (the caller's
        ``urllib3.exceptions.HTTPError`` and ``OSError``).
        """
        found = self._pools.get(base)
        if found is None or found[0].pool is None:  # first request, or the pool was closed
            found = self._pool(base)
            if found is None:
                return None
        pool, prefix = found
        # The URL's own path (a server behind a proxy at /childvault) comes first:
        # it is what requests would send, and what the signature covers.
        path = prefix + path
        headers = plain_headers(identity, "POST", path, body, "application/json")
        if headers is None:
            return None
        headers.update(_FIXED_HEADERS)
        headers["Content-Length"] = str(len(body))
        r = pool.urlopen(
            "POST",
            path,
            body=body,
            headers=headers,
            redirect=False,
            assert_same_host=False,
            preload_content=True,
            decode_content=True,
            retries=_NO_RETRY,
            timeout=urllib3.Timeout(connect=timeout, read=timeout),
        )
        if r.status in _REDIRECTS and "location" in r.headers:
            raise redirect_refused(base + path)
        return _Reply(r.status, r.headers, r.data)

    def _pool(self, base: str) -> tuple[urllib3.HTTPConnectionPool, str] | None:
        """The pool ``requests`` sends requests to ``base`` through, with the TLS
        settings it would give them, and ``base``'s path; None if a proxy is set
        for ``base`` or it is not a plain http(s) URL (user info, query)."""
        parts = urlsplit(base)
        if (
            parts.scheme not in ("http", "https")
            or "@" in parts.netloc
            or parts.query
            or parts.fragment
        ):
            return None
        url = base + "/"
        settings = self.merge_environment_settings(url, {}, None, None, None)
        if requests.utils.select_proxy(url, settings["proxies"]) is not None:
            return None
        prepared = requests.PreparedRequest()
        prepared.prepare(method="POST", url=url)
        adapter = self.get_adapter(url)
        if not isinstance(adapter, requests.adapters.HTTPAdapter):
            return None
        pool = adapter.get_connection_with_tls_context(
            prepared, settings["verify"], settings["proxies"], settings["cert"]
        )
        if not isinstance(pool, urllib3.HTTPConnectionPool):
            return None
        self._pools[base] = (pool, parts.path.rstrip("/"))
        return self._pools[base]


#: Headers of every request :meth:`_Session.post_signed` sends, besides the
#: signature's, ``Content-Length``, ``Host`` and ``Accept-Encoding: identity``
#: (``http.client`` adds those two). HTTP/1.1 keeps the connection open unasked.
_FIXED_HEADERS = {"Content-Type": "application/json", "User-Agent": "childvault"}
#: As ``requests`` asks ``urllib3``: no retry of a request that may have been sent.
_NO_RETRY = urllib3.Retry(0, read=False)


#: What a request that got no answer raises: ``urllib3``'s and the socket's
#: errors by :meth:`_Session.post_signed`, ``requests``' otherwise.
TRANSPORT_ERRORS = (requests.RequestException, urllib3.exceptions.HTTPError, OSError)

#: The answers ``requests`` counts as redirects (``Response.is_redirect``).
_REDIRECTS = frozenset({301, 302, 303, 307, 308})


class _Reply:
    """The parts of an answer :meth:`RemoteBackend._answer` reads, as a
    ``requests.Response`` has them."""

    def __init__(self, status: int, headers: Any, content: bytes) -> None:
        self.status_code = status
        self.headers = headers
        self.content = content

    def json(self) -> Any:
        """The body as JSON (``ValueError`` if it is not)."""
        return json.loads(self.content)

    @property
    def text(self) -> str:
        """The body as text."""
        return self.content.decode("utf-8", "replace")
