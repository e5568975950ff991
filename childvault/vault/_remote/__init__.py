"""The remote backend: the :class:`~childvault.vault._backend.Backend` protocol over
``childvault serve`` (docs/server.md).

Outside a transaction every repository call is one signed HTTP request
(``POST /v1/rpc``: repo, method, arguments in the JSON encoding of
:mod:`._codec`). Inside one, round trips are saved (issue 13's targets):
writes without a result are queued and sent, in order, with the next call
that needs an answer or with the commit, as one ``POST /v1/rpc/batch``; the
first batch also opens the transaction and the last commits it, so a
transaction of writes alone is one request. Reads inside a transaction are
answered once: the server holds the transaction's lock, so nobody else can
change what was read, and any write of ours empties the cache. The server
checks every call of a batch exactly as a single call (docs/server.md); it
holds one writer at a time and rolls back a transaction left idle.

Reads outside a transaction may be answered from what this client read a
moment before (:data:`CACHE_SECONDS`), never across a write or transaction of
its own (except one that only saved its own trust state, which no kept read
answers), and never once an answer shows the server has committed anything
since (every answer names the server's commit count, its generation). A read
of a record also fetches its key blob and field names in the same request: the
services read the three together. The trust sync (:meth:`RemoteBackend.prefetch_log`,
``audit.sync``) reads the log's head, the entries since the session's verified
point and their signatures in one request, under the same rules; the replay
checks them as ever.
All cryptography stays here, in the client: the server stores sealed values,
wrapped keys and signed entries, and never receives a plaintext value, a
data key, a private key or a passphrase.

What an embedded client reads from its home (config, schema, the user's own
key slot, the witness) comes from ``GET /v1/vault`` and is written to a
private temporary directory that :meth:`RemoteBackend.close` removes; the
workstation itself keeps only the person's identity file.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar, cast
from urllib.parse import urlsplit

import requests
import requests.adapters
import urllib3
import urllib3.connection
import urllib3.exceptions

from childvault import keys as _errors
from childvault._i18n import _t
from childvault.keys import (
    AccessDenied,
    ChildVaultError,
    ConfigError,
    Identity,
    IntegrityError,
    ProviderUnavailable,
    StorageError,
)
from childvault.keys._encoding import is_hex_id, unb64
from childvault.vault._backend import (
    AccessRepo,
    AuditRepo,
    AuditRow,
    CheckpointRepo,
    CustodianRepo,
    MetaRepo,
    RecordRepo,
    StatementRepo,
    UserRepo,
    request_basis_key,
)
from childvault.vault._httpsig import HTTPSignatureAuth, plain_headers, redirect_refused
from childvault.vault._note import Checkpoint, parse_note
from childvault.vault._remote._codec import decode, decode_twice, encode
from childvault.vault._remote._methods import (
    ACTIONS_AHEAD,
    BASIS_ACTIONS,
    COSIGN_ACTIONS,
    METHODS,
    QUEUED,
    READ,
    SETTINGS_AHEAD,
    WITNESS_REACH,
    WRITE,
)
from childvault.vault._remote._slots import RemoteSlots
from childvault.vault._statements import BatchMember, Envelope, pack_members
from childvault.vault._wire_messages import message_from, refusal_message

__all__ = ["Bootstrap", "RemoteBackend", "connect_parts"]

_R = TypeVar("_R")

#: Seconds to wait for the server to answer one call (an import batch is one call).
CALL_TIMEOUT = 120.0
#: How long ``begin`` keeps retrying while another writer holds the server.
BEGIN_PATIENCE = 300.0
#: Queued writes are sent once they reach this many calls or bytes (well under
#: the server's batch and body limits) ...
QUEUE_CALLS = 1000
QUEUE_BYTES = 4 * 1024 * 1024
#: ... or once the server has not heard from the transaction for this many
#: seconds, so that a long client-side step never lets the server's idle
#: timeout (30 s by default) roll the transaction back.
QUEUE_SECONDS = 5.0
#: Reads outside a transaction are answered again from memory for at most this
#: long (and at most :data:`CACHE_ENTRIES` of them) ...
CACHE_SECONDS = 2.0
CACHE_ENTRIES = 2000
#: ... except scans a page at a time, which are read once.
_UNCACHED = frozenset({("audit", "page"), ("records", "page"), ("records", "keyblob_page")})

#: The repositories: a write to one changes only its own rows (release and
#: slots are not repositories, and a write to them forgets every read).
_REPOSITORIES = frozenset(
    {"meta", "users", "custodians", "records", "access", "audit", "checkpoints", "statements"}
)
#: Reads of stored checkpoints, checked against a predicted head (:meth:`RemoteBackend.call`).
_CHECKPOINT_READS = frozenset(
    {("checkpoints", "all"), ("checkpoints", "since"), ("checkpoints", "latest_by")}
)
#: The ``_cache`` slot of the trust sync's log tail (not a serialised call).
_TAIL = "tail"
#: The most entries one ``audit.page`` (and ``audit.sync``) answers.
PAGE_MAX = 5000
#: A record write first checks that the vault accepts records (the meta row,
#: then the log's decommission entries: ``Session.accepting_records``), then
#: reads the settings: one request for all of them (an import, ``record add``).
_ACCEPTING = "accepting_records"
_DECOMMISSION = ("vault.decommission",)

#: Error classes a server may name; anything else becomes a plain ChildVaultError.
_ERRORS: dict[str, type[ChildVaultError]] = {
    name: cls
    for name in dir(_errors)
    if isinstance(cls := getattr(_errors, name), type) and issubclass(cls, ChildVaultError)
}


class _Busy(ProviderUnavailable):
    """Another client's transaction holds the server (503 ``busy``): try again."""


class _WitnessRefused(StorageError):
    """The server committed, but its HTTP witness did not cosign the checkpoint (502)."""


class _UnknownMethod(ChildVaultError):
    """The server does not know the method called (400 ``unknown_method``): an older server."""


class _RoleRefused(AccessDenied):
    """The server refused the call to the caller's role or user (403 ``role``)."""


class _Unverified(ChildVaultError):
    """The server refused what it could not verify, nothing stored (409
    ``unverified``): among others, log entries that do not link to its head."""


class _Moved(_Unverified):
    """A stored checkpoint read in an appending transaction covers more entries
    than the head it predicted: the log moved past the reads it predicted from
    (a commit through another replica, which this replica's generation does
    not count). Nothing of it is stored; it runs again from the real head."""


class _Redo(Exception):
    """The import batch in flight was refused for a moved head (409, nothing
    stored): it is written again from the real head, then the batch prepared
    behind it (:meth:`RemoteBackend.pipelined_appends`). Never leaves the backend."""

    def __init__(self, body: Callable[[], Any]) -> None:
        super().__init__()
        self.body = body


@dataclass
class _InFlight:
    """An appending transaction handed to the sender thread (one request: its
    writes, entries and commit): the answer to come, the transaction's body (to
    write it again if refused for a moved head), whether its entries linked to a
    predicted head, and how many calls the request holds."""

    answer: Future[Any]
    body: Callable[[], Any]
    speculated: bool
    calls: int


#: The only answers to an operation's inputs (``inputs.*``) after which the
#: operation reads call by call instead. An older server that has no
#: ``inputs`` methods (400 ``unknown_method``). And the designed refusal to the
#: role or user (403 ``role``: a staff member's approval, another user's
#: grant): the operation's own check then refuses it and logs the refusal in
#: the audit log, which raising the server's refusal here would skip.
_INPUTS_FALLBACK = (_UnknownMethod, _RoleRefused)


#: Writes answered True or False, by their ``_cas`` form (the server fails the
#: request where they would answer False): queued in an appending transaction.
_CAS_FORMS = {("access", "use_grant"): "use_grant_cas", ("access", "decide"): "decide_cas"}


class _Twice:
    """A kept answer still in the form an operation's inputs carry it, encoded
    twice (:meth:`RemoteBackend._keep_inputs`): :func:`_held` decodes it."""

    __slots__ = ("encoded",)

    def __init__(self, encoded: Any) -> None:
        self.encoded = encoded


def _held(value: Any) -> Any:
    """The value of a kept answer: encoded once (as every answer), or a :class:`_Twice`."""
    if type(value) is _Twice:
        return decode_twice(value.encoded)
    return decode(value)


class _Later:
    """The answer of a queued call, once the request carrying it was answered."""

    def __init__(self) -> None:
        self.value: Any = None


class _Repo:
    """One repository: each attribute is a remote call."""

    def __init__(self, backend: RemoteBackend, name: str) -> None:
        self._backend = backend
        self._name = name

    def __getattr__(self, method: str) -> Any:
        if method.startswith("_") or method not in METHODS[self._name]:
            raise AttributeError(method)

        def call(*args: Any, **kwargs: Any) -> Any:
            return self._backend.call(self._name, method, args, kwargs)

        call.__name__ = method
        return call


class _Checkpoints(_Repo):
    """The checkpoints repository; ``since`` of a server that lacks it is ``all``, filtered."""

    def since(self, size: int) -> Any:
        """See :meth:`~childvault.vault._backend.CheckpointRepo.since`."""
        if "checkpoints.since" in self._backend._server_methods:
            return self._backend.call("checkpoints", "since", (size,), {})
        # An older server (before round 2 session 11): the same rows, read wholesale.
        return [row for row in self._backend.call("checkpoints", "all", (), {}) if row.size >= size]


class _Audit(_Repo):
    """The audit repository: pages are fetched one call at a time; rows convert locally."""

    #: The acting user's identity: :func:`childvault.vault._audit.append` signs with it.
    signer: Any = None

    def pages(self, start: int = 0, *, batch: int = 5000) -> Iterator[Sequence[Any]]:
        """Unconverted rows from ``start``, a page (one request) at a time.

        Answered from the trust sync's tail when it holds every entry from
        ``start`` to the head it read (:meth:`RemoteBackend.prefetch_log`).
        A page shorter than the server's page size is the last one: the log
        ended there when it was read, as an empty next page would say.
        """
        tail = self._backend.tail(start)
        if tail is not None:
            for i in range(0, len(tail), max(batch, 1)):
                yield tail[i : i + max(batch, 1)]
            return
        after = start
        while True:
            rows = self._backend.call("audit", "page", (after,), {"batch": batch})
            if not rows:
                return
            yield rows
            if len(rows) < min(max(batch, 1), PAGE_MAX):
                return
            after = int(rows[-1][0]) + 1

    def signatures(self, first: int, last: int) -> Any:
        """The actors' signatures of entries ``first`` to ``last``: from the trust
        sync's tail when it holds them, else one request."""
        held = self._backend.tail_signatures(first, last)
        if held is not None:
            return held
        return self._backend.call("audit", "signatures", (first, last), {})

    @staticmethod
    def row(raw: Any) -> AuditRow:
        """One row of :meth:`pages` as (seq, entry, hash), types checked."""
        seq, entry, digest = raw
        if type(seq) is not int or not isinstance(entry, bytes) or not isinstance(digest, bytes):
            raise IntegrityError(_t("the server sent a malformed log row"))
        return seq, entry, digest

    def entries(self, start: int = 0, *, batch: int = 5000) -> Iterator[AuditRow]:
        """Every entry from ``start``, streamed a page at a time."""
        for rows in self.pages(start, batch=batch):
            for raw in rows:
                yield self.row(raw)


class _Statements(_Repo):
    """The statements repository: an import's record statements go compactly."""

    def add_statements(self, items: Sequence[tuple[int, Envelope | BatchMember]]) -> None:
        """Keep each ``(seq, statement)`` beside its entry (as ``add(seq, bytes)``).

        The members of one batch statement go in one ``statements.add_members``
        call, the batch's envelope once (:func:`pack_members`); the server
        rebuilds each member's bytes, checks them against the entry naming
        them and stores exactly those bytes. Any other statement goes as ``add``.
        """
        groups: list[tuple[Envelope, list[tuple[int, BatchMember]]]] = []
        for seq, statement in items:
            if not isinstance(statement, BatchMember):
                self._backend.call("statements", "add", (seq, statement.to_bytes()), {})
            elif groups and groups[-1][0] is statement.batch:
                groups[-1][1].append((seq, statement))
            else:
                groups.append((statement.batch, [(seq, statement)]))
        for _, members in groups:
            envelope, indexes, lengths, proofs = pack_members([m for _, m in members])
            seqs = [seq for seq, _ in members]
            self._backend.call(
                "statements", "add_members", (seqs, envelope, indexes, lengths, proofs), {}
            )


class Bootstrap:
    """What a client needs besides the rows: config, schema, own key slot, witness."""

    def __init__(self, doc: dict[str, Any]) -> None:
        try:
            self.config = dict(doc["config"])
            self.schema = str(doc["schema"])
            self.slot = str(doc["slot"])
            self.witness = [str(n) for n in doc["witness"]]
            # The calls the server answers (absent from an older server: then
            # none of those added since is used).
            methods = doc.get("methods", [])
        except (KeyError, TypeError, ValueError) as exc:
            raise IntegrityError(_t("the server sent a malformed vault description")) from exc
        if not isinstance(methods, list):
            raise IntegrityError(_t("the server sent a malformed vault description"))
        self.methods = frozenset(str(m) for m in methods)


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


class RemoteBackend:
    """A :class:`~childvault.vault._backend.Backend` whose rows live behind ``childvault serve``.

    ``url`` is the server's base URL; ``identity`` signs every request;
    ``verify`` is passed to ``requests`` (a CA bundle path, or True).
    """

    #: The server commits every read entry before it releases any key and keeps
    #: the witness itself, so clients do not append read heads (issue 12 attack 7
    #: is the embedded mode's; docs/server.md).
    witnessed_by_server = True
    #: Whether :meth:`pipelined_appends` hands requests to a sender thread (a
    #: subclass that commits its own way says no).
    _pipelines = True

    def __init__(self, url: str, identity: Identity, *, verify: bool | str = True) -> None:
        self.url = url.rstrip("/")
        self.where = self.url
        self._http = _Session()
        self._http.auth = HTTPSignatureAuth(identity)
        self._http.verify = verify
        self._identity = identity
        self._txn: str | None = None
        self._depth = 0
        #: Inside a transaction: not yet opened on the server (the first batch opens it).
        self._unopened = False
        #: Queued writes (serialised call documents) and their size in bytes.
        self._queue: list[str] = []
        self._queued_bytes = 0
        #: Reads answered in this transaction: serialised call -> raw result.
        self._reads: dict[str, Any] = {}
        #: The calls (repo, method) made in this transaction (see _own_state_only).
        self._txn_calls: set[tuple[str, str]] = set()
        #: The saved-state names this transaction wrote (``statements.save_state``).
        self._saved_names: set[Any] = set()
        #: When the server last heard from this transaction (monotonic seconds).
        self._contact = 0.0
        #: Reads outside transactions: serialised call -> raw result, the server
        #: generation they were read in, and when the first of them was read.
        self._cache: dict[str, Any] = {}
        self._generation: int | None = None
        #: Why the server's HTTP witness did not cosign the last commit's checkpoint.
        self.witness_failure: str | None = None
        self._cache_since = 0.0
        #: The log's head as this client expects it: ``(size, head hash, last
        #: entry as entry_at answers it)``, from its last trust sync or its own
        #: last committed append (:meth:`appending_transaction`).
        self._predicted: tuple[int, bytes | None, Any] | None = None
        #: In an appending transaction: the head answered from the prediction
        #: (None: read from the server), and whether it was.
        self._speculate: tuple[int, bytes | None, Any] | None = None
        self._speculated = False
        #: In an appending transaction: whether a ``_cas`` form was queued for a
        #: write answered True (a 409 then runs the transaction again, plainly).
        self._cas_sent = False
        #: In an appending transaction: what was read outside transactions before
        #: it and the generation it was read in; its reads are answered from
        #: there (the repositories it has not written), and its first request
        #: carries the generation, which the server refuses (409 ``stale``) if
        #: it committed anything since (docs/server.md).
        self._outside: dict[str, Any] | None = None
        self._outside_gen: int | None = None
        self._written: set[str] = set()
        #: The rows this appending transaction appended (seq, entry, hash), in
        #: order; None once one was not of that shape (:meth:`_own_log_read`).
        self._own_rows: list[tuple[int, bytes, bytes]] | None = []
        #: The last row this transaction appended (seq, entry, hash), if any.
        self._appended: tuple[int, bytes, bytes] | None = None
        #: Inside :meth:`pipelined_appends` (how deep): an appending transaction's
        #: request goes on the sender thread while the caller prepares the next.
        self._pipelining = 0
        #: The appending transaction whose request is on the sender thread, if any.
        self._inflight: _InFlight | None = None
        #: The body of the appending transaction whose commit is to be handed off.
        self._handoff: Callable[[], Any] | None = None
        #: The one thread that sends handed-off requests (started when first needed),
        #: and a flag only that thread sees set.
        self._sender: ThreadPoolExecutor | None = None
        self._local = threading.local()
        #: An operation announced by :meth:`expect_operation` whose inputs are not yet read.
        self._expected: tuple[str, str] | None = None
        #: The kind of the operation last announced (its transaction reads ahead).
        self._operation: tuple[str, str] | None = None
        #: The grant whose use this transaction consumed (``access.use_grant`` True).
        self._used_grant: str | None = None
        #: Saved trust states put off to the next transaction (serialised
        #: ``statements.save_state`` calls) and the names they save (_transaction).
        self._deferred: list[str] = []
        self._deferred_names: set[Any] = set()
        #: Commit even a transaction of saved states alone (flushing the put-off ones).
        self._no_defer = False
        #: Whether this session has read its saved record heads (``NAME#records``):
        #: until then an operation's inputs bring them (``_inputs_args``).
        self._heads_read = False
        #: The calls the server answers (``repo.method``, from its vault description).
        self._server_methods: frozenset[str] = frozenset()
        #: Answers awaited for queued calls (``release.new``): queue index -> holder,
        #: filled by the flush that sends them (:meth:`release_later`).
        self._later: dict[int, _Later] = {}
        #: Release keys answered with the commit of a read's use, by grant id:
        #: handed out once, to the ``release.redeem`` that asks next (_after_commit).
        self._released: dict[str, Any] = {}
        self._scratch: Path | None = None
        self._meta = _Repo(self, "meta")
        self._users = _Repo(self, "users")
        self._custodians = _Repo(self, "custodians")
        self._records = _Repo(self, "records")
        self._access = _Repo(self, "access")
        self._audit = _Audit(self, "audit")
        self._checkpoints = _Checkpoints(self, "checkpoints")
        self._statements = _Statements(self, "statements")
        #: Release keys of grants (server mode only): ``new`` and ``redeem``.
        self.release: Any = _Repo(self, "release")
        #: The server's key slots as the services write them (``Session.key_slots``).
        self.key_slots: RemoteSlots | None = None

    # -- repositories (typed as the protocols the services expect)

    @property
    def meta(self) -> MetaRepo:
        """See :class:`~childvault.vault._backend.Backend`."""
        return cast(MetaRepo, self._meta)

    @property
    def users(self) -> UserRepo:
        """See :class:`~childvault.vault._backend.Backend`."""
        return cast(UserRepo, self._users)

    @property
    def custodians(self) -> CustodianRepo:
        """See :class:`~childvault.vault._backend.Backend`."""
        return cast(CustodianRepo, self._custodians)

    @property
    def records(self) -> RecordRepo:
        """See :class:`~childvault.vault._backend.Backend`."""
        return cast(RecordRepo, self._records)

    @property
    def access(self) -> AccessRepo:
        """See :class:`~childvault.vault._backend.Backend`."""
        return cast(AccessRepo, self._access)

    @property
    def audit(self) -> AuditRepo:
        """See :class:`~childvault.vault._backend.Backend`."""
        return cast(AuditRepo, self._audit)

    @property
    def checkpoints(self) -> CheckpointRepo:
        """See :class:`~childvault.vault._backend.Backend`."""
        return cast(CheckpointRepo, self._checkpoints)

    @property
    def statements(self) -> StatementRepo:
        """See :class:`~childvault.vault._backend.Backend`."""
        return cast(StatementRepo, self._statements)

    # -- transport

    def _post(self, path: str, doc: dict[str, Any], *, raw: bool = False) -> Any:
        body = json.dumps(doc, separators=(",", ":")).encode()
        return self._send(path, body, raw=raw)

    def _send(self, path: str, body: bytes, *, raw: bool = False) -> Any:
        if self._inflight is not None and not getattr(self._local, "sender", False):
            # One connection, one thread at a time: the request in flight is
            # answered (and its failure raised) before this one is sent.
            self._settle()
        try:
            r = self._post_to(self.url, path, body, CALL_TIMEOUT)
        except TRANSPORT_ERRORS as exc:
            raise ProviderUnavailable(
                _t("the childvault server {url} did not answer", url=self.url)
            ) from exc
        return self._answer(r, raw=raw)

    def _post_to(
        self, base: str, path: str, body: bytes, timeout: float
    ) -> requests.Response | _Reply:
        """POST ``body`` (JSON) to ``base + path``, signed: straight through the
        connection pool (:meth:`_Session.post_signed`) or, where that way does not
        send it, through ``requests``. A transport failure raises one of
        :data:`TRANSPORT_ERRORS`."""
        r: requests.Response | _Reply | None = self._http.post_signed(
            base, path, body, self._identity, timeout
        )
        if r is None:
            r = self._http.post(
                base + path,
                data=body,
                headers={"Content-Type": "application/json"},
                timeout=timeout,
                allow_redirects=False,
            )
        return r

    def _answer(self, r: requests.Response | _Reply, *, raw: bool = False) -> Any:
        try:
            doc = r.json()
        except ValueError:
            doc = None
        if r.status_code == 200 and isinstance(doc, dict) and "result" in doc:
            generation = doc.get("gen")
            if generation != self._generation:
                # The server committed something since: what was read may be stale.
                self._cache.clear()
                self._generation = generation if type(generation) is int else None
            return doc["result"] if raw else decode(doc["result"])
        if not isinstance(doc, dict):
            raise ProviderUnavailable(
                _t("the childvault server answered {status_code}", status_code=r.status_code)
            )
        # In the reader's language where the answer allows it (_wire_messages).
        message = (
            message_from(doc) if "type" in doc else refusal_message(r.status_code, doc)
        ) or _t("the server refused ({status})", status=r.status_code)
        if r.status_code == 429 and doc.get("reason") == "rate_limited":
            # Over the per-user rate: refused, nothing done; the person waits.
            wait = r.headers.get("Retry-After", "")
            raise AccessDenied(
                _t(
                    "the childvault server limits how many requests each user makes: "
                    "try again in {seconds} s",
                    seconds=wait if wait.isdigit() else "?",
                )
            )
        if r.status_code in (401, 403) and "type" not in doc:
            refused = _RoleRefused if doc.get("reason") == "role" else AccessDenied
            raise refused(_t("the childvault server refused the request: {why}", why=message))
        if r.status_code == 400 and doc.get("reason") == "unknown_method":
            raise _UnknownMethod(message)
        if r.status_code == 503:
            raise (_Busy if doc.get("reason") == "busy" else ProviderUnavailable)(message)
        if r.status_code == 502 and doc.get("reason") == "witness":
            raise _WitnessRefused(message)
        if r.status_code == 409 and doc.get("reason") in ("unverified", "stale"):
            raise _Unverified(message)
        cls = _ERRORS.get(str(doc.get("type")), ChildVaultError)
        raise cls(message)

    def bootstrap(self) -> Bootstrap:
        """Fetch the vault's description (``GET /v1/vault``)."""
        self._settle()
        try:
            r = self._http.get(self.url + "/v1/vault", timeout=CALL_TIMEOUT, allow_redirects=False)
        except requests.RequestException as exc:
            raise ProviderUnavailable(
                _t("the childvault server {url} did not answer", url=self.url)
            ) from exc
        boot = Bootstrap(self._answer(r))
        self._server_methods = boot.methods
        return boot

    def call(self, repo: str, method: str, args: Sequence[Any], kwargs: dict[str, Any]) -> Any:
        """Run ``repo.method(*args, **kwargs)`` on the server (in the open transaction, if any).

        Outside a transaction a call waits its turn, as opening a transaction does.
        Inside one, a write without a result is queued (None is its result),
        and a read already answered in this transaction is answered again
        from memory (see the module doc).
        """
        answer = self._call(repo, method, args, kwargs)
        if self._speculate is not None and self._depth and (repo, method) in _CHECKPOINT_READS:
            self._check_predicted(answer if method != "latest_by" else [answer])
        return answer

    def _check_predicted(self, stored: Sequence[Any]) -> None:
        """Raise :class:`_Moved` if a stored checkpoint covers more entries than the
        head this appending transaction predicted.

        The transaction's log is the trust sync's tail, then its own entries
        linked to that head. A checkpoint stored over a longer log was read
        later than that tail (on replicas the reads of one answer, or two
        answers of one generation, may straddle another replica's commit):
        compared with the predicted entries it reads as "diverged" though the
        stored log is sound. So the prediction is dropped and the transaction
        runs again reading the log from the server, which compares every
        checkpoint with the stored entries exactly as before (a forged size
        only costs that second run)."""
        predicted = self._speculate[0] if self._speculate is not None else None
        for row in stored:
            size = getattr(row, "size", None)
            if isinstance(row, tuple | list) and row and isinstance(row[0], str):
                size = _claimed_size(row[0])  # latest_by: (note, resume state)
            if type(predicted) is int and type(size) is int and size > predicted:
                raise _Moved(_t("the audit log moved since it was read: nothing was stored"))

    def _call(self, repo: str, method: str, args: Sequence[Any], kwargs: dict[str, Any]) -> Any:
        if (
            (repo, method) == ("statements", "saved_state")
            and args
            and str(args[0]).endswith("#records")
        ):
            self._heads_read = True
        if not self._depth:
            return self._call_alone(repo, method, args, kwargs)
        if (
            repo,
            method,
        ) == (
            "checkpoints",
            "add_at_head",
        ) and "checkpoints.add_at_head_cas" in self._server_methods:
            # Queued with the commit: the server fails the whole request, committing
            # nothing, if the log is not at the head signed (a failed compare-and-
            # set), so the checkpoint is stored when the commit succeeds. The
            # caller only tests for None (AuditService.sign_checkpoint); the row id
            # is not known before the commit.
            self.call(repo, "add_at_head_cas", args, kwargs)
            return 0
        if (
            self._speculate is not None
            and (repo, method) in _CAS_FORMS
            and f"{repo}.{_CAS_FORMS[repo, method]}" in self._server_methods
        ):
            # Queued with the commit as its _cas form, answered True: the server
            # fails the whole request (409, nothing stored) where the call would
            # answer False, and appending_transaction then runs the transaction
            # again with the plain call, which answers False as ever.
            self._cas_sent = True
            self.call(repo, _CAS_FORMS[repo, method], args, kwargs)
            if (repo, method) == ("access", "use_grant") and args and isinstance(args[0], str):
                self._used_grant = args[0]
            return True
        self._txn_calls.add((repo, method))
        if (repo, method) == ("audit", "append"):
            self._note_append(args)
        elif (
            (repo, method) == ("audit", "head")
            and self._speculate is not None
            and not (self._speculated or args or kwargs or self._appended)
        ):
            # Answered as the server's head is expected to be: the server refuses
            # entries that do not link to its real head (409), and
            # appending_transaction then runs the transaction again.
            size, head, entry = self._speculate
            self._speculated = True
            self._reads[self._head_key()] = encode((size, head))
            if size:
                self._reads[self._key("audit", "entry_at", (size - 1,), {})] = encode(entry)
        if (repo, method) == ("statements", "save_state") and args:
            self._saved_names.add(args[0])
        one = json.dumps(
            {
                "repo": repo,
                "method": method,
                "args": encode(list(args)),
                "kwargs": encode(dict(kwargs)),
            },
            separators=(",", ":"),
        )
        if METHODS.get(repo, {}).get(method) == WRITE:
            # What was read from this repository may change now: read it again
            # from the server. A repository's writes change only its own rows;
            # release and slots are not repositories: forget everything.
            self._forget(repo)
            if (repo, method) in QUEUED:
                if (
                    len(self._queue) >= QUEUE_CALLS
                    or self._queued_bytes + len(one) > QUEUE_BYTES
                    or time.monotonic() - self._contact > QUEUE_SECONDS
                ):
                    self._flush()
                self._queue.append(one)
                self._queued_bytes += len(one)
                return None
            ahead = self._txn_ahead(repo, method, args)
            result, *more = self._flush(one, also=ahead)
            self._keep_reads(ahead, more)
            answer = decode(result)
            if (repo, method) == ("access", "use_grant") and answer is True and args:
                self._used_grant = args[0] if isinstance(args[0], str) else None
            return answer
        if one in self._reads:
            return _held(self._reads[one])
        if self._outside is not None and one in self._outside and repo not in self._written:
            # Read before the transaction, in the generation its first request
            # names: exact unless someone committed since, which the server refuses.
            self._reads[one] = self._outside[one]
            return _held(self._reads[one])
        own = self._own_log_read(repo, method, args, kwargs)
        if own is not None:
            self._reads[one] = own
            return decode(own)
        last = self._key("audit", "last", (), {})
        if (repo, method) == ("audit", "head") and not args and not kwargs:
            # An append reads the head, then the last entry (its time): both at once.
            self._keep_reads([last], self._flush(last))
            return _held(self._reads[one])
        if (
            (repo, method) == ("audit", "page")
            and len(args) == 1
            and type(args[0]) is int
            and args[0] >= 0
            and kwargs == {"batch": PAGE_MAX}
        ):
            # A replay reads a page, then its signatures: the trust sync answers
            # both (and the head) at once, as outside a transaction.
            self._keep_sync_read(args[0], one, self._flush(self._key("audit", "sync", args, {}))[0])
            return _held(self._reads[one])
        ahead = []
        if (
            (repo, method) == ("users", "all")
            and not args
            and not kwargs
            and not self._resumes_checkpoints()
        ):
            # Signing a checkpoint reads the signers, then the stored checkpoints
            # (all of them, except an approval's resumed check: see there).
            ahead.append(self._key("checkpoints", "all", (), {}))
        if (repo, method) == ("audit", "entry_at") and len(args) == 1 and type(args[0]) is int:
            # A checkpoint's check resumes at an entry, then reads the log after it.
            ahead.append(self._key("audit", "page", (args[0] + 1,), {"batch": PAGE_MAX}))
        if repo != "audit" and self._head_key() not in self._reads:
            # Nearly every transaction appends, which reads the head first.
            ahead.append(last)
        if self._operation_kind() == "approval":
            # Its decision queued (decide_cas), an approval's first read is its
            # checkpoint's: the signers, checkpoints and witness reach come with it.
            ahead += [k for k in self._txn_ahead("access", "decide", ()) if k != last]
        ahead = [
            key
            for key in dict.fromkeys(ahead)
            if key not in self._reads
            and key != one
            and not (
                self._outside is not None
                and key in self._outside
                and json.loads(key)["repo"] not in self._written
            )
        ]
        result, *more = self._flush(one, also=ahead)
        self._reads[one] = result
        self._keep_reads(ahead, more)
        return decode(result)

    def release_later(self, grant_id: str) -> _Later | None:
        """``release.new(grant_id)`` queued with the transaction's next request (its
        commit, as an approval's is) instead of sent on its own: the holder
        answers the key once that request was answered. None outside a
        transaction (the caller asks at once)."""
        if not self._depth:
            return None
        self._txn_calls.add(("release", "new"))
        # It writes only the server's own row of the key (server/release/...),
        # which no read of a client answers (403 server_only): nothing to forget.
        one = self._key("release", "new", (grant_id,), {})
        self._queue.append(one)
        self._queued_bytes += len(one)
        holder = _Later()
        self._later[len(self._queue) - 1] = holder
        return holder

    def _own_log_read(
        self, repo: str, method: str, args: Sequence[Any], kwargs: dict[str, Any]
    ) -> Any:
        """In an appending transaction answered from what was read before it: the
        log as the server holds it inside this transaction (the trust sync's
        tail, complete to the head of that generation, then this transaction's
        own appended rows), for ``audit.entry_at``, a page and the head (an
        approval's checkpoint reads them after its append). Encoded as the
        server answers them; None where that does not hold the answer."""
        held = self._outside.get(_TAIL) if self._outside is not None else None
        if not isinstance(held, tuple) or self._own_rows is None or repo != "audit":
            return None
        start, rows, _, complete = held
        log = [(int(r[0]), r[1], r[2]) for r in rows] + self._own_rows
        if not complete or not log or [r[0] for r in log] != list(range(start, start + len(log))):
            return None
        end = log[-1][0] + 1
        if (repo, method) == ("audit", "head") and not args and not kwargs:
            return encode((end, log[-1][2]))
        if not (len(args) == 1 and type(args[0]) is int and args[0] >= start):
            return None
        at = args[0]
        if method == "entry_at" and not kwargs and at < end:
            return encode((log[at - start][1], log[at - start][2]))
        if method == "page" and kwargs == {"batch": PAGE_MAX} and end - at <= PAGE_MAX:
            return encode([list(r) for r in log[at - start :]])
        return None

    def _note_append(self, args: Sequence[Any]) -> None:
        """Note the rows an ``audit.append`` of this transaction appends."""
        rows = args[0] if args else None
        if (
            self._own_rows is not None
            and isinstance(rows, list | tuple)
            and all(
                isinstance(r, tuple | list)
                and len(r) == 4
                and type(r[0]) is int
                and isinstance(r[1], bytes)
                and isinstance(r[2], bytes)
                for r in rows
            )
        ):
            self._own_rows += [(r[0], r[1], r[2]) for r in rows]
        else:
            self._own_rows = None
        last = rows[-1] if isinstance(rows, list | tuple) and rows else None
        if (
            isinstance(last, tuple | list)
            and len(last) == 4
            and type(last[0]) is int
            and isinstance(last[1], bytes)
            and isinstance(last[2], bytes)
        ):
            self._appended = (last[0], last[1], last[2])
        else:
            self._appended = None
            self._predicted = None

    def _prediction(self) -> tuple[int, bytes | None, Any] | None:
        """The head this client expects the log to have (see ``_predicted``): its own
        last committed append, else the head and last entry of its trust sync."""
        # A trust sync held now was read after this client's last commit (the
        # cache is emptied by every transaction): the newer of the two.
        held = self._cache.get(_TAIL)
        head = self._cache.get(self._head_key())
        if not isinstance(held, tuple) or head is None:
            return self._predicted
        _, rows, _, complete = held
        size, digest = _held(head)
        if not complete or not rows or rows[-1][0] != size - 1 or rows[-1][2] != digest:
            return self._predicted
        return size, digest, (rows[-1][1], rows[-1][2])

    def appending_transaction(self, body: Callable[[], _R]) -> _R:
        """``body()`` in a transaction whose log append links to the head this client
        expects (its own last append, or its trust sync) without reading it first:
        the transaction's writes and its commit are then one request.

        The server checks every entry against its real head as ever and refuses
        (409, nothing stored) entries that do not link to it; the transaction
        is then run again, reading the head from the server. ``body`` must be
        safe to run twice (everything it wrote the first time was rolled back).

        Inside :meth:`pipelined_appends` the request goes on the sender thread
        and this returns before the server answers (see there).
        """
        if self._pipelining and not self._depth:
            return self._append_pipelined(body)
        return self._append_now(body)

    def _append_now(self, body: Callable[[], _R]) -> _R:
        """:meth:`appending_transaction`, answered before it returns."""
        if not self._depth:
            self._settle()  # the head to expect is the one the request in flight leaves
        predicted = None if self._depth else self._prediction()
        if predicted is not None:
            self._speculate, self._speculated, self._cas_sent = predicted, False, False
            gen_checked = (
                self._generation is not None and "access.use_grant_cas" in self._server_methods
            )
            try:
                with self._transaction():
                    return body()
            except _Unverified as exc:
                if not (self._speculated or self._cas_sent or gen_checked or type(exc) is _Moved):
                    raise
                # Someone else appended since (or the prediction was stale), or a
                # _cas write did not apply: again, from the server's real head and
                # with the plain calls (which answer False where it failed).
                self._predicted = None
            finally:
                self._speculate, self._speculated, self._cas_sent = None, False, False
        with self._transaction():
            return body()

    def _append_pipelined(self, body: Callable[[], _R]) -> _R:
        """:meth:`appending_transaction` inside :meth:`pipelined_appends`: ``body``
        runs now, its entries chained on the head the request in flight (if
        any) will leave; its request is sent once that one is answered, on the
        sender thread, and this returns without waiting for the answer."""
        while True:
            # With a request in flight, only its own predicted head will do: the
            # trust sync's is older.
            predicted = self._prediction() if self._inflight is None else self._predicted
            if predicted is None:
                return self._append_now(body)
            redo: Callable[[], Any] | None = None
            self._speculate, self._speculated = predicted, False
            self._handoff = body
            try:
                with self._transaction():
                    return body()
            except _Redo as refused:
                # The request in flight was refused for a moved head, and this
                # body was chained on it: it again from the real head, then this.
                redo = refused.body
            except _Unverified as exc:
                # This transaction's own request, sent here (not handed off).
                if not (self._speculated or type(exc) is _Moved):
                    raise
                self._predicted = None
            finally:
                self._speculate, self._speculated = None, False
                self._handoff = None
            if redo is not None:
                self._append_now(redo)

    def pipelined_appends(self) -> contextlib.AbstractContextManager[None]:
        """Within: :meth:`appending_transaction` overlaps the server and this client
        (an import's batches, docs/server.md "Import: client and server overlap").

        Each appending transaction runs its body at once, its log entries linked
        to the head the previous one leaves (predicted, as for one request per
        batch); its one request (writes, entries, commit) is sent, once the
        previous request is answered, on a sender thread, and the call returns
        while the server checks and stores it: the caller prepares the next
        batch meanwhile. Requests are sent and answered in order, one at a time,
        on one connection: any other request first waits for the one in flight.
        A failure of a request in flight is raised by the next call that needs
        the server, by :meth:`settle_appends` or on leaving: the transaction
        prepared behind it is then discarded (nothing of it was sent). A request
        refused for a moved head (409) is written again from the real head, and
        the one prepared behind it after it. Leaving waits for the last answer.
        """
        return self._pipelined()

    @contextlib.contextmanager
    def _pipelined(self) -> Iterator[None]:
        if not self._pipelines:
            yield
            return
        self._pipelining += 1
        try:
            yield
        finally:
            self._pipelining -= 1
            if not self._pipelining:
                self._settle()

    @property
    def overlaps_appends(self) -> bool:
        """Whether :meth:`pipelined_appends` overlaps this client and the server
        (one server; not a ``FailoverBackend``, which commits in turn): an
        import then writes smaller batches (docs/server.md, "Import: client and
        server overlap")."""
        return self._pipelines

    @property
    def appends_in_flight(self) -> int:
        """How many appending transactions were handed off and are not yet answered
        (:meth:`pipelined_appends`): 0 or 1."""
        return 0 if self._inflight is None else 1

    def settle_appends(self) -> None:
        """Wait for the appending transaction in flight, if any, and raise its failure
        (:meth:`pipelined_appends`). Outside a transaction only."""
        if not self._depth:
            self._settle()

    def _settle(self) -> None:
        """Take the answer of the request in flight (:meth:`pipelined_appends`).

        A refusal for a moved head (409) writes its transaction again from the
        real head, here outside a transaction, or raises :class:`_Redo` inside
        one (the transaction prepared behind it, which the caller discards).
        Any other failure is raised as the server or the connection gave it."""
        inflight = self._inflight
        if inflight is None:
            return
        try:
            answer = inflight.answer.result()
        except _WitnessRefused as exc:
            # Committed; only the witness did not cosign (as in _transaction).
            self._inflight = None
            self.witness_failure = str(exc)
            return
        except _Unverified:
            self._inflight = None
            self._predicted = None
            if self._depth:
                raise _Redo(inflight.body) from None
            self._append_now(inflight.body)
            return
        except BaseException:
            if inflight.answer.done():
                # The request's own failure (not an interrupted wait): whatever the
                # log's head is now, ask.
                self._inflight = None
                self._predicted = None
            raise
        self._inflight = None
        self._contact = time.monotonic()
        if not (
            isinstance(answer, list)
            and len(answer) == 2
            and answer[0] is None
            and isinstance(answer[1], list)
            and len(answer[1]) == inflight.calls
        ):
            self._predicted = None
            raise IntegrityError(_t("the server sent a malformed batch answer"))

    def _hand_off(self, handed: Callable[[], Any], body: bytes, calls: int) -> None:
        """Send the one request (``body``: begin, calls, commit) of the appending
        transaction ``handed`` on the sender thread, once the request in flight
        is answered."""
        self._settle()  # in order: raises _Redo or the failure, and nothing is sent
        if self._sender is None:
            self._sender = ThreadPoolExecutor(max_workers=1, thread_name_prefix="childvault-send")
        future = self._sender.submit(self._send_handed, body)
        self._inflight = _InFlight(future, handed, True, calls)

    def _send_handed(self, body: bytes) -> Any:
        """On the sender thread: one handed-off request, waiting its turn if busy."""
        self._local.sender = True
        return self._patiently(lambda: self._send("/v1/rpc/batch", body, raw=True))

    def _keep_sync_read(self, start: int, page_key: str, raw: Any) -> None:
        """Keep an ``audit.sync`` read in this transaction as the page it stands for
        (``page_key``), the head, and the signatures of that page's entries."""
        answer = decode(raw)
        if not (
            isinstance(answer, list)
            and len(answer) == 4
            and isinstance(answer[2], list)
            and isinstance(answer[3], dict)
            and all(isinstance(r, list) and len(r) == 3 and type(r[0]) is int for r in answer[2])
        ):
            raise IntegrityError(_t("the server sent a malformed batch answer"))
        size, head, rows, sigs = answer
        self._reads[page_key] = encode(rows)
        self._reads[self._head_key()] = encode((size, head))
        if rows:
            first, last = rows[0][0], rows[-1][0]
            self._reads[self._key("audit", "signatures", (first, last), {})] = encode(sigs)

    def _operation_kind(self) -> str | None:
        return self._operation[0] if self._operation is not None else None

    def _head_key(self) -> str:
        return self._key("audit", "head", (), {})

    def _forget(self, repo: str) -> None:
        """Forget the reads of this transaction that a write to ``repo`` may change."""
        if repo not in _REPOSITORIES:
            self._reads.clear()
            self._written.update(_REPOSITORIES)
            return
        self._written.add(repo)
        prefix = json.dumps({"repo": repo}, separators=(",", ":"))[:-1] + ","
        for key in [k for k in self._reads if k.startswith(prefix)]:
            del self._reads[key]

    def _txn_ahead(self, repo: str, method: str, args: Sequence[Any]) -> list[str]:
        """Reads sent with a write that has a result, inside a transaction: what
        the transactions of approve and read read next (the head and last
        entry for their append; the signers, checkpoints and this officer's
        latest checkpoint for the approval's checkpoint)."""
        ahead = []
        if (repo, method) in {("access", "decide"), ("access", "use_grant")}:
            ahead.append(self._key("audit", "last", (), {}))
        if (repo, method) == ("access", "decide") and self._operation_kind() == "approval":
            signer = getattr(self._audit.signer, "name", None)
            ahead.append(self._key("users", "all", (), {}))
            if not self._resumes_checkpoints():
                ahead.append(self._key("checkpoints", "all", (), {}))
            if isinstance(signer, str):
                ahead.append(self._key("checkpoints", "latest_by", (signer,), {}))
            # The witness reach its checkpoint's commit raises (AuditService.signed).
            ahead.append(self._key("meta", "get", (WITNESS_REACH,), {}))
        return [key for key in ahead if key not in self._reads]

    def _resumes_checkpoints(self) -> bool:
        """Whether this is an approval whose checkpoint reads only the stored
        checkpoints its officer's latest one does not cover (``checkpoints.since``,
        answered with its inputs by a server that knows it), not all of them:
        then they are not read ahead."""
        return self._operation_kind() == "approval" and "checkpoints.since" in self._server_methods

    def _keep_reads(self, keys: Sequence[str], results: Sequence[Any]) -> None:
        """Keep reads answered in this transaction (``audit.last`` as the head and
        the last entry, as an append asks for them)."""
        for key, result in zip(keys, results, strict=True):
            if key != self._key("audit", "last", (), {}):
                self._reads[key] = result
                continue
            last = decode(result)
            if not (isinstance(last, list) and len(last) == 3 and type(last[0]) is int):
                raise IntegrityError(_t("the server sent a malformed batch answer"))
            size, head, entry = last
            self._reads[self._head_key()] = encode((size, head))
            if size:
                self._reads[self._key("audit", "entry_at", (size - 1,), {})] = encode(entry)

    def _call_alone(
        self, repo: str, method: str, args: Sequence[Any], kwargs: dict[str, Any]
    ) -> Any:
        """A call outside a transaction: a write at once, a read perhaps from the cache."""
        if (
            self._deferred
            and (repo, method) == ("statements", "saved_state")
            and args
            and args[0] in self._deferred_names
        ):
            # A saved state put off (_transaction) is read back: commit it first.
            self.flush_deferred()
        if (repo, method) == ("release", "redeem") and len(args) == 1 and not kwargs:
            released = self._released.pop(args[0], None) if isinstance(args[0], str) else None
            if released is not None:
                # Answered with the commit of this read's use (_after_commit).
                return decode(released)
        doc = {"repo": repo, "method": method, "args": encode(list(args))}
        doc["kwargs"] = encode(dict(kwargs))
        if METHODS.get(repo, {}).get(method) == WRITE or (repo, method) in _UNCACHED:
            if METHODS.get(repo, {}).get(method) == WRITE:
                self._cache.clear()
            return self._patiently(lambda: self._post("/v1/rpc", {"txn": None, **doc}))
        if self._expected is not None:
            # An announced operation whose inputs no trust sync brought: fetch them first.
            self._fetch_inputs()
        one = json.dumps(doc, separators=(",", ":"))
        self._expire()
        if one in self._cache:
            return _held(self._cache[one])
        calls = [one]
        if (repo, method) == ("records", "get_many") and len(args) == 1 and not kwargs:
            # The services read a set of records' key blobs and sealed fields with
            # their rows (_record_trust.fetch): one request for the three.
            for also in ("keyblob_many", "fields_many"):
                calls.append(
                    json.dumps(
                        {"repo": repo, "method": also, "args": doc["args"], "kwargs": {"$o": []}},
                        separators=(",", ":"),
                    )
                )
        elif (
            not kwargs
            and (
                (
                    (repo, method) == ("meta", "get")
                    and len(args) == 1
                    and (args[0] in SETTINGS_AHEAD or args[0] == _ACCEPTING)
                )
                or (
                    (repo, method) == ("audit", "entries_by_action")
                    and len(args) == 1
                    and isinstance(args[0], tuple | list)
                    and tuple(args[0]) in ACTIONS_AHEAD
                )
                or ((repo, method) == ("access", "request") and len(args) == 1)
            )
        ) or self._basis_lookup(repo, method, args, kwargs) is not None:
            # Approve and read look these up one after another: one request for all
            # (a request's basis row and its indexed log entry with the request).
            for ahead_key in self._ahead(repo, method, args, kwargs):
                if ahead_key != one and ahead_key not in self._cache:
                    calls.append(ahead_key)
        elif (repo, method) == ("records", "get") and len(args) == 1 and not kwargs:
            for also in ("keyblob", "field_names", "fields_all"):
                calls.append(
                    json.dumps(
                        {
                            "repo": repo,
                            "method": also,
                            "args": doc["args"],
                            "kwargs": doc["kwargs"],
                        },
                        separators=(",", ":"),
                    )
                )
        if len(calls) == 1:
            raw = self._patiently(lambda: self._post("/v1/rpc", {"txn": None, **doc}, raw=True))
            results = [raw]
        else:
            body = '{"txn":null,"begin":false,"commit":false,"calls":[' + ",".join(calls) + "]}"
            answer = self._patiently(lambda: self._send("/v1/rpc/batch", body.encode(), raw=True))
            if not (
                isinstance(answer, list)
                and len(answer) == 2
                and isinstance(answer[1], list)
                and len(answer[1]) == len(calls)
            ):
                raise IntegrityError(_t("the server sent a malformed batch answer"))
            results = answer[1]
        if not self._cache:
            self._cache_since = time.monotonic()
        self._cache.update(zip(calls, results, strict=True))
        if (repo, method) == ("records", "get") and len(calls) == 4:
            # fields_all answers fields(id, names) for the names field_names gave,
            # which is how the services ask (_record_trust.stored_fields).
            names = decode(results[2])
            if isinstance(names, list):
                key = {"repo": repo, "method": "fields", "args": encode([args[0], names])}
                key["kwargs"] = doc["kwargs"]
                self._cache[json.dumps(key, separators=(",", ":"))] = results[3]
        elif (repo, method) == ("records", "get_many") and len(calls) == 3:
            self._cache_singles(args[0], results)
        return decode(results[0])

    @staticmethod
    def _basis_lookup(
        repo: str, method: str, args: Sequence[Any], kwargs: dict[str, Any]
    ) -> str | None:
        """The request id of the indexed basis lookup ``basis_of`` makes
        (``entries_by_ref(("request.create",), request=ID)``), else None."""
        if (
            (repo, method) == ("audit", "entries_by_ref")
            and len(args) == 1
            and isinstance(args[0], tuple | list)
            and tuple(args[0]) == BASIS_ACTIONS
            and set(kwargs) == {"request"}
            and isinstance(kwargs["request"], str)
        ):
            return kwargs["request"]
        return None

    def _ahead(
        self, repo: str, method: str, args: Sequence[Any], kwargs: dict[str, Any]
    ) -> list[str]:
        """The reads fetched with one of approve's and read's look-ups (serialised):
        the settings and log scans they read (with the accepting-records row, also
        the decommission entries a record write checks next), and, for a request (or its basis
        lookup), the request, its basis row, its indexed ``request.create``
        entry and its indexed co-signatures (read for a legal obligation)."""
        ahead = [self._key("meta", "get", (setting,), {}) for setting in SETTINGS_AHEAD]
        ahead += [
            self._key("audit", "entries_by_action", (actions,), {}) for actions in ACTIONS_AHEAD
        ]
        if (repo, method, tuple(args)) == ("meta", "get", (_ACCEPTING,)):
            ahead.append(self._key("audit", "entries_by_action", (_DECOMMISSION,), {}))
        request_id = self._basis_lookup(repo, method, args, kwargs)
        if (repo, method) == ("access", "request") and isinstance(args[0], str):
            request_id = args[0]
        if request_id is not None:
            ahead += [
                self._key("access", "request", (request_id,), {}),
                self._key("meta", "get", (request_basis_key(request_id),), {}),
                self._key("audit", "entries_by_ref", (BASIS_ACTIONS,), {"request": request_id}),
                self._key("audit", "entries_by_ref", (COSIGN_ACTIONS,), {"request": request_id}),
            ]
        return ahead

    @staticmethod
    def _key(repo: str, method: str, args: Sequence[Any], kwargs: dict[str, Any]) -> str:
        """The serialised call ``_call_alone`` caches under."""
        doc = {"repo": repo, "method": method, "args": encode(list(args))}
        doc["kwargs"] = encode(dict(kwargs))
        return json.dumps(doc, separators=(",", ":"))

    def _expire(self) -> None:
        """Forget what was read outside transactions once it is too old (or too much)."""
        if self._cache and (
            time.monotonic() - self._cache_since > CACHE_SECONDS
            or len(self._cache) >= CACHE_ENTRIES
        ):
            self._cache.clear()

    def prefetch_log(self, start: int) -> None:
        """The trust sync: the log's head, its entries from ``start`` (one page) and
        their signatures in one request (``audit.sync``), kept as the reads
        ``audit.head``, ``audit.pages(n)`` (n >= ``start``) and
        ``audit.signatures`` would answer them, under the rules of every read
        outside a transaction (:data:`CACHE_SECONDS`, the server's generation).

        Nothing is verified here: the replay and the record scans check every
        row and signature they take from it as from the server. A no-op inside
        a transaction (the server's lock makes those reads exact; they are
        answered once anyway).
        """
        if self._depth or type(start) is not int or start < 0:
            return  # in a transaction
        if self.tail(start) is not None:
            # Already read a moment ago; an operation's inputs may still be due.
            if self._expected is not None:
                self._fetch_inputs()
            return
        sync = self._key("audit", "sync", (start,), {})
        expected, self._expected = self._expected, None
        if expected is not None:
            # The operation announced (expect_operation): its inputs come in the
            # same request, read in the same snapshot as the sync.
            inputs = self._key("inputs", expected[0], self._inputs_args(expected[1], False), {})
            extra = self._operation_ahead(expected[0])
            body = (
                '{"txn":null,"begin":false,"commit":false,"calls":['
                + ",".join([sync, inputs, *extra])
                + "]}"
            )
            try:
                answer = self._patiently(
                    lambda: self._send("/v1/rpc/batch", body.encode(), raw=True)
                )
            except _INPUTS_FALLBACK:
                # See _INPUTS_FALLBACK: the operation reads call by call. Any other
                # refusal or server error is raised, as for every other call.
                answer = None
            if answer is not None:
                if not (isinstance(answer, list) and len(answer) == 2):
                    raise IntegrityError(_t("the server sent a malformed batch answer"))
                results = answer[1]
                if not (isinstance(results, list) and len(results) == 2 + len(extra)):
                    raise IntegrityError(_t("the server sent a malformed batch answer"))
                self._keep_sync(start, decode(results[0]))
                self._keep_inputs(results[1])
                self._cache.update(zip(extra, results[2:], strict=True))
                return
        raw = self._patiently(
            lambda: self._post("/v1/rpc", {"txn": None, **json.loads(sync)}, raw=True)
        )
        self._keep_sync(start, decode(raw))

    def _keep_sync(self, start: int, answer: Any) -> None:
        """Keep a trust sync's answer as :meth:`prefetch_log` describes."""
        if not (
            isinstance(answer, list)
            and len(answer) == 4
            and type(answer[0]) is int
            and (answer[1] is None or isinstance(answer[1], bytes))
            and isinstance(answer[2], list)
            and all(isinstance(r, list) and len(r) == 3 and type(r[0]) is int for r in answer[2])
            and isinstance(answer[3], dict)
        ):
            raise IntegrityError(_t("the server sent a malformed batch answer"))
        size, head, rows, sigs = answer
        seqs = [r[0] for r in rows]
        if seqs != list(range(start, start + len(rows))):
            # Not the contiguous run from start asked for: the replay's own checks
            # would refuse it; keep nothing and let the ordinary reads ask.
            return
        self._expire()
        if not self._cache:
            self._cache_since = time.monotonic()
        self._cache[self._key("audit", "head", (), {})] = encode((size, head))
        complete = start + len(rows) >= size
        self._cache[_TAIL] = (start, rows, sigs, complete)

    def expect_operation(self, kind: str, ident: str) -> None:
        """Announce an operation about to run outside a transaction: ``approval``
        of request ``ident`` or ``read`` with grant ``ident``. Its inputs (the
        reads it makes, answered by ``inputs.<kind>`` in one snapshot) are then
        fetched with the next trust sync, or with the next read, in one request
        (docs/server.md "Operation inputs"). Only a hint: the operation makes
        the same calls, verifies the same rows and signatures, and a read not
        answered ahead goes to the server as before."""
        if self._depth or kind not in METHODS["inputs"] or not is_hex_id(ident):
            return
        self._expected = (kind, ident)
        self._operation = (kind, ident)

    def _fetch_inputs(self) -> None:
        """The announced operation's inputs alone (no trust sync was due)."""
        expected, self._expected = self._expected, None
        if expected is None:
            return
        # A session that has not synced yet reads its saved state first: ask
        # for it, and for the sync from it, in the same request.
        fresh = self._cache.get(_TAIL) is None
        args = self._inputs_args(expected[1], fresh)
        inputs = self._key("inputs", expected[0], args, {})
        extra = [key for key in self._operation_ahead(expected[0]) if key not in self._cache]
        body = '{"txn":null,"begin":false,"commit":false,"calls":[' + ",".join([inputs, *extra])
        try:
            answer = self._patiently(
                lambda: self._send("/v1/rpc/batch", (body + "]}").encode(), raw=True)
            )
        except _INPUTS_FALLBACK:
            return  # the operation reads call by call (see _INPUTS_FALLBACK)
        if not (
            isinstance(answer, list)
            and len(answer) == 2
            and isinstance(answer[1], list)
            and len(answer[1]) == 1 + len(extra)
        ):
            raise IntegrityError(_t("the server sent a malformed batch answer"))
        self._keep_inputs(answer[1][0])
        self._cache.update(zip(extra, answer[1][1:], strict=True))

    def _operation_ahead(self, kind: str) -> list[str]:
        """Reads an operation's transaction makes, fetched with its inputs: an
        approval's checkpoint reads the signers, the stored checkpoints, the
        officer's latest one and the witness reach (answered in the transaction
        from there, under the generation it names: :meth:`appending_transaction`)."""
        if kind != "approval":
            return []
        last = self._key("audit", "last", (), {})
        return [key for key in self._txn_ahead("access", "decide", ()) if key != last]

    def _inputs_args(self, ident: str, fresh: bool) -> tuple[Any, ...]:
        """The arguments of ``inputs.X``: the id; whether the session has not synced
        yet; whether it has not read its saved record heads (a session-8 server,
        one that answers ``add_at_head_cas``, takes that flag: then the heads and
        the sync from the older saved point come with the inputs)."""
        if not self._heads_read and "checkpoints.add_at_head_cas" in self._server_methods:
            return (ident, fresh, True)
        return (ident, fresh) if fresh else (ident,)

    def _keep_inputs(self, raw: Any) -> None:
        """Keep an ``inputs.*`` answer: each ``[repo, method, args, kwargs, result]``
        as the read it answers, under the rules of every read outside a
        transaction. Only plain reads are kept (never a sync, a scan a page at a
        time, or another operation's inputs); anything malformed is refused.

        The server sends the list as it is, each call and result encoded twice
        (:func:`encode_twice`). The calls are decoded here; each result is kept
        in that form (:class:`_Twice`) and decoded, both layers in one pass and
        with every check of the two (:func:`decode_twice`), when it is read:
        decoding it here to keep its once-encoded form walked and built every
        answer twice.
        """
        if type(raw) is not list or not all(type(r) is list and len(r) == 5 for r in raw):
            raise IntegrityError(_t("the server sent a malformed batch answer"))
        keep: dict[str, Any] = {}
        sync: tuple[int, Any] | None = None
        for repo, method, args, kwargs, result in raw:
            if (repo, method) == ("audit", "sync"):
                start = decode_twice(args)
                if not (isinstance(start, list) and len(start) == 1 and type(start[0]) is int):
                    raise IntegrityError(_t("the server sent a malformed batch answer"))
                sync = (start[0], decode_twice(result))
                continue
            if (
                not isinstance(repo, str)
                or not isinstance(method, str)
                or METHODS.get(repo, {}).get(method) != READ
                or repo == "inputs"
                or (repo, method) in _UNCACHED
                or (repo, method) in {("audit", "sync"), ("audit", "last")}
            ):
                raise IntegrityError(_t("the server sent a malformed batch answer"))
            a, kw = decode_twice(args), decode_twice(kwargs)
            if not isinstance(a, list) or not isinstance(kw, dict):
                raise IntegrityError(_t("the server sent a malformed batch answer"))
            keep[self._key(repo, method, a, kw)] = _Twice(result)
        self._expire()
        if not self._cache:
            self._cache_since = time.monotonic()
        self._cache.update(keep)
        if sync is not None and sync[0] >= 0:
            self._keep_sync(*sync)

    def _tail(self) -> tuple[int, list[Any], dict[Any, Any], bool] | None:
        if self._depth:
            return None
        self._expire()
        held = self._cache.get(_TAIL)
        return cast("tuple[int, list[Any], dict[Any, Any], bool] | None", held)

    def tail(self, start: int) -> list[Any] | None:
        """The log's rows from ``start`` to the head the trust sync read, if it read
        them all (None: ask the server)."""
        held = self._tail()
        if held is None:
            return None
        first, rows, _, complete = held
        if not complete or start < first:
            return None
        return rows[start - first :]

    def tail_signatures(self, first: int, last: int) -> dict[Any, Any] | None:
        """``audit.signatures(first, last)`` from the trust sync, if it read those entries."""
        held = self._tail()
        if held is None:
            return None
        begin, rows, sigs, _ = held
        if not rows or first < begin or last > rows[-1][0]:
            return None
        return {s: sig for s, sig in sigs.items() if type(s) is int and first <= s <= last}

    def _cache_singles(self, record_ids: Any, results: Sequence[Any]) -> None:
        """Answer the one-record reads of what ``records.get_many`` read ahead
        (``get``, ``keyblob``, ``field_names``, ``fields`` of those names) from
        the same answer, as the read-ahead of ``records.get`` does: code that
        still asks record by record after a batched read makes no round trip."""
        rows, blobs, fields = (decode(r) for r in results)
        if not (
            isinstance(record_ids, list | tuple)
            and isinstance(rows, dict)
            and isinstance(blobs, dict)
            and isinstance(fields, dict)
        ):
            return

        def put(method: str, call_args: list[Any], result: Any) -> None:
            key = {"repo": "records", "method": method, "args": encode(call_args)}
            key["kwargs"] = {"$o": []}
            self._cache[json.dumps(key, separators=(",", ":"))] = encode(result)

        for rid in record_ids:
            stored = fields.get(rid)
            if not isinstance(rid, str) or not isinstance(stored, dict):
                continue  # not a record id the server answered for: ask it alone
            names = sorted(stored)
            put("get", [rid], rows.get(rid))
            put("keyblob", [rid], blobs.get(rid))
            put("field_names", [rid], names)
            put("fields", [rid, names], stored)
            put("fields_all", [rid], stored)

    def _flush(
        self, one: str | None = None, *, commit: bool = False, also: Sequence[str] = ()
    ) -> Any:
        """Send the queued writes (and ``one`` call, then the reads ``also``) in one
        batch; with ``commit``, commit the transaction after them. Returns the raw
        results of ``one`` and ``also``, in order (None without ``one``).

        If the batch fails, the server has rolled back a transaction the batch
        opened or was to commit; otherwise the transaction stays open and the
        caller's :meth:`transaction` rolls it back, as after a failed single call.
        """
        calls = self._queue + ([one, *also] if one is not None else list(also))
        queued = len(self._queue)
        self._queue, self._queued_bytes = [], 0
        later, self._later = self._later, {}
        begin = self._unopened
        if not calls and (begin or not commit):
            return None  # nothing reached the server: nothing to open, send or commit
        head: dict[str, Any] = {"txn": self._txn, "begin": begin, "commit": commit}
        if begin and self._outside_gen is not None:
            head["gen"] = self._outside_gen
        body = (json.dumps(head, separators=(",", ":"))[:-1] + ',"calls":[').encode()
        body += ",".join(calls).encode() + b"]}"
        handed = self._handoff
        if (
            commit
            and begin
            and handed is not None
            and self._speculated
            and self._depth == 1
            and one is None
            and not also
        ):
            # The whole appending transaction in one request, its entries linked
            # to a predicted head: on the sender thread (pipelined_appends).
            self._unopened, self._txn = False, None
            self._hand_off(handed, body, len(calls))
            return None
        try:
            if begin:
                # Another writer may hold the server (503 "busy"): wait our turn.
                answer = self._patiently(lambda: self._send("/v1/rpc/batch", body, raw=True))
            else:
                answer = self._send("/v1/rpc/batch", body, raw=True)
        except BaseException:
            if begin or commit:
                self._unopened, self._txn = False, None
            raise
        self._contact = time.monotonic()
        if not (isinstance(answer, list) and len(answer) == 2 and isinstance(answer[1], list)):
            raise IntegrityError(_t("the server sent a malformed batch answer"))
        txn, results = answer
        if len(results) != len(calls) or not (txn is None if commit else isinstance(txn, str)):
            raise IntegrityError(_t("the server sent a malformed batch answer"))
        self._unopened, self._txn = False, txn
        for index, holder in later.items():
            holder.value = decode(results[index])
        return results[queued:] if one is not None or also else None

    @staticmethod
    def _patiently(send: Callable[[], Any]) -> Any:
        """``send()``, again while the server answers busy (up to :data:`BEGIN_PATIENCE`)."""
        deadline = time.monotonic() + BEGIN_PATIENCE
        pause = 0.05
        while True:
            try:
                return send()
            except _Busy:
                if time.monotonic() > deadline:
                    raise
                time.sleep(pause)
                pause = min(pause * 2, 1.0)

    # -- transactions

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[None]:
        if self._depth:
            self._depth += 1
            try:
                yield
            finally:
                self._depth -= 1
            return
        if self._handoff is None:
            # A transaction reads and writes after what is in flight is answered.
            self._settle()
        # Opened on the server by the first batch (see _flush), not here.
        self._unopened, self._txn = True, None
        # What was read outside, in case this transaction only saves the
        # session's own trust state (_keep_across_own_save).
        before = (self._cache, self._cache_since, self._generation, self._expected)
        operation = self._operation
        self._expected = None  # a refusal is being logged, or the reads are done
        held = self._cache.get(_TAIL)
        synced_from = held[0] if isinstance(held, tuple) else None
        after: list[str] = []
        kept: list[Any] | None = None
        own_state_only = False
        self.witness_failure = None
        self._contact = time.monotonic()
        if (
            self._speculate is not None
            and self._handoff is None
            and self._generation is not None
            and "access.use_grant_cas" in self._server_methods  # one that checks "gen"
        ):
            # Not for a pipelined append (an import's batch): the answer of the
            # request in flight sets the generation on the sender thread, so the
            # one read here may be from before that commit and the batch would be
            # refused as stale and sent again; its reads all go to the server.
            self._outside, self._outside_gen = self._cache, self._generation
        self._written, self._own_rows = set(), []
        self._cache = {}
        self._txn_calls, self._saved_names = set(), set()
        self._appended = None
        self._used_grant = None
        self._released.clear()  # a key not asked for by now belongs to no read
        self._depth = 1
        deferred = False
        if self._deferred:
            # Saved states put off by an earlier transaction (below): first in this one.
            self._queue, self._deferred = self._deferred, []
            self._queued_bytes = sum(len(one) for one in self._queue)
            self._txn_calls.add(("statements", "save_state"))
            self._saved_names, self._deferred_names = self._deferred_names, set()
        if self.key_slots is not None:
            self.key_slots.discarding = False
        try:
            yield
            self._send_slots()
            own_state_only = self._txn_calls == {("statements", "save_state")}
            # A read's after-commit reads belong to its use's transaction, not
            # to the saved state a fresh session commits before it.
            after = [] if own_state_only else self._after_commit(synced_from)
            if own_state_only and self._unopened and not self._no_defer:
                # Only this session's own saved trust state, nothing sent yet: put
                # off to the next transaction (the operation's own, which writes
                # anyway), or to close. It only spares a later verification work:
                # lost with a transaction rolled back, it is saved another time.
                self._deferred, self._queue, self._queued_bytes = self._queue, [], 0
                self._deferred_names = set(self._saved_names)
                deferred = True
            else:
                try:
                    kept = self._flush(commit=True, also=after)
                except _WitnessRefused as exc:
                    # Committed; only the witness did not cosign. The service's witness
                    # step (AuditService.witness) reports it and fails closed.
                    own_state_only = False
                    self.witness_failure = str(exc)
                if not own_state_only:
                    # Our commit moved the server past the generation its answer
                    # named (read before it ran): what is kept now is labelled with
                    # none, so no batch names it (``gen``: the next transaction would
                    # be refused), and the next answer empties it as before.
                    self._generation = None
        except BaseException:
            own_state_only = False
            if self._appended is not None:
                self._predicted = None  # whatever the log's head is now, ask
            if self.key_slots is not None:
                self.key_slots.take()
                self.key_slots.discarding = True
            self._discard()
            raise
        finally:
            self._depth = 0
            self._unopened, self._txn = False, None
            self._outside, self._outside_gen = None, None
            self._reads.clear()
            self._txn_calls, saved_names, self._saved_names = set(), self._saved_names, set()
            self._cache.clear()  # what we wrote, or others while we waited
            self._operation = None
            self._used_grant = None
        if self._appended is not None:
            # Committed: the log's head is now this transaction's last entry
            # (unless someone appends after it: the server then refuses ours).
            seq, entry, digest = self._appended
            self._predicted = (seq + 1, digest, (entry, digest))
        if own_state_only:
            self._keep_across_own_save(*before, operation, saved_names, committed=not deferred)
        if kept:
            self._keep_after_commit(after, kept, synced_from)

    def _keep_across_own_save(
        self,
        cache: dict[str, Any],
        since: float,
        generation: int | None,
        expected: tuple[str, str] | None,
        operation: tuple[str, str] | None,
        saved_names: set[Any],
        *,
        committed: bool = True,
    ) -> None:
        """After a committed transaction that wrote only this session's own saved
        trust state (``statements.save_state``: the verifier's ``trust_states``
        rows, which only ``statements.saved_state`` reads), keep what was read outside transactions
        before it (the trust sync, an operation's inputs), as if that commit had
        not been made, and the operation announced before it.

        Only if every answer of the transaction named the generation those reads
        were made in (nobody else committed before ours): the server's count is
        then one more, so any later answer naming another shows a commit by
        someone else and empties the cache, as ever. The reads of the saved
        states written (``saved_names``) are dropped. Without this, a fresh
        session's first verification, which saves its state, would empty the
        cache and its operation would read call by call (docs/server.md).
        """
        if generation is None or self._generation != generation:
            return
        if not all(isinstance(name, str) for name in saved_names):
            return
        written = {self._key("statements", "saved_state", (name,), {}) for name in saved_names}
        self._cache = {k: v for k, v in cache.items() if k not in written}
        self._cache_since = since
        # Put off (``committed`` False), nothing reached the server: the same count.
        self._generation = generation + 1 if committed else generation
        self._expected, self._operation = expected, operation

    def _after_commit(self, synced_from: int | None) -> list[str]:
        """Reads a read with a grant makes right after its use's transaction (the
        grant, the custodian keys, the trust sync from where this client last
        synced): sent with the commit, after the transaction's writes, so they
        answer exactly what the committed state holds (the server's lock is
        still held). And, once the transaction consumed a use of the grant, its
        redemption (``release.redeem_at_commit``): the server releases the key
        only in the answer of the commit that stores the logged use, after every
        check of ``redeem`` (docs/server.md "Release after logging"). Nothing
        for any other transaction."""
        operation = self._operation
        if operation is None or operation[0] != "read":
            return []
        after = [
            self._key("access", "grant", (operation[1],), {}),
            self._key("custodians", "all", (), {}),
        ]
        if synced_from is not None:
            after.append(self._key("audit", "sync", (synced_from,), {}))
        if (
            self._used_grant is not None
            and ("audit", "append") in self._txn_calls
            and "release.redeem_at_commit" in self._server_methods
        ):
            after.append(self._key("release", "redeem_at_commit", (self._used_grant,), {}))
        return after

    def _keep_after_commit(
        self, keys: Sequence[str], results: Sequence[Any], synced_from: int | None
    ) -> None:
        """Keep what :meth:`_after_commit` read as reads outside a transaction,
        read in the generation the commit answered with."""
        self._cache_since = time.monotonic()
        for key, raw in zip(keys, results, strict=True):
            if synced_from is not None and key == self._key("audit", "sync", (synced_from,), {}):
                self._keep_sync(synced_from, decode(raw))
            elif json.loads(key)["method"] == "redeem_at_commit":
                grant_id = decode(json.loads(key)["args"])[0]
                if isinstance(decode(raw), bytes):
                    self._released[grant_id] = raw
                # None: refused; the read's ``release.redeem`` asks alone and is
                # refused (and logged) as ever.
            else:
                self._cache[key] = raw

    def flush_deferred(self) -> None:
        """Commit the saved trust states put off to the next transaction, if any."""
        if not self._deferred or self._depth:
            return
        self._no_defer = True
        try:
            with self._transaction():
                pass
        finally:
            self._no_defer = False

    def _discard(self) -> None:
        """Drop the queued writes and roll back the transaction if the server has it open."""
        self._queue, self._queued_bytes = [], 0
        self._later = {}
        self._unopened = False
        txn, self._txn = self._txn, None
        if txn is not None:
            with contextlib.suppress(ChildVaultError):
                self._post("/v1/txn/rollback", {"txn": txn})

    def _send_slots(self) -> None:
        """Send the key slots the services wrote since the last transaction (_slots.py)."""
        if self.key_slots is None:
            return
        for name, sealed in sorted(self.key_slots.take().items()):
            self.call("slots", "put", (name, sealed), {})

    def take_witness_failure(self) -> str | None:
        """Why the witness did not cosign the last commit's checkpoint (once), or None."""
        failure, self.witness_failure = self.witness_failure, None
        return failure

    def transaction(self) -> contextlib.AbstractContextManager[Any]:
        """A server-side transaction: all or nothing; nested use joins the outer one."""
        return self._transaction()

    def compact(self) -> None:
        """Nothing to do here: the server compacts its own store."""

    # -- the private scratch home

    def scratch_home(self, boot: Bootstrap, identity: Identity) -> Path:
        """A private temporary home holding what :class:`Session` reads from files."""
        path = Path(tempfile.mkdtemp(prefix="childvault-remote-"))
        self._scratch = path
        os.chmod(path, 0o700)
        (path / "identities").mkdir(mode=0o700)
        config = dict(boot.config)
        config["witness"] = str(path / "witness.jsonl")
        config.pop("store", None)
        (path / "config.json").write_text(json.dumps(config), encoding="utf-8")
        (path / "schema.toml").write_text(boot.schema, encoding="utf-8")
        unb64(boot.slot)  # malformed base64 is refused here, not deep in KeySlots
        slots = {
            "format": "childvault-keyslots/1",
            "vault": config.get("vault_id"),
            "slots": {identity.name: boot.slot},
        }
        (path / "keyslots.json").write_text(json.dumps(slots), encoding="utf-8")
        self.key_slots = RemoteSlots(path / "keyslots.json", self, identity.name)
        with (path / "witness.jsonl").open("w", encoding="utf-8") as fh:
            for note in boot.witness:
                fh.write(json.dumps({"note": note}, ensure_ascii=False) + "\n")
        return path

    def close(self) -> None:
        """Roll back an open transaction, send key slots still queued, close the
        connection, remove the scratch home."""
        slots = self.key_slots
        try:
            inflight, self._inflight = self._inflight, None
            if inflight is not None:
                # Left behind by an interrupted caller: its outcome is the server's
                # (an import resumes from what is committed); only wait for it.
                inflight.answer.exception()
            if self._deferred and self._txn is None and not self._queue:
                # Saved states put off to an operation that did not come: a speed-up
                # for the next session only, so a failure here changes nothing.
                with contextlib.suppress(ChildVaultError):
                    self.flush_deferred()
            if slots is not None and (self._txn is not None or self._queue):
                slots.take()  # they belonged to what is rolled back
            self._discard()
            if slots is not None and slots.pending and not slots.discarding:
                # Written after the last transaction (the end of `keys rotate`): they
                # go in one of their own, checked against the committed trust state.
                with self._transaction():
                    pass
        finally:
            self._reads.clear()
            self._cache.clear()
            self._released.clear()
            self._deferred, self._deferred_names = [], set()
            if self._sender is not None:
                self._sender.shutdown(wait=True)
                self._sender = None
            self._http.close()
            if self._scratch is not None:
                shutil.rmtree(self._scratch, ignore_errors=True)
                self._scratch = None


def _claimed_size(note: str) -> int | None:
    """The tree size a checkpoint note claims (unverified: it only decides whether
    to read the log again), or None if it is not one."""
    try:
        return Checkpoint.parse_body(parse_note(note)[0]).size
    except IntegrityError:
        return None


def check_url(url: str) -> None:
    """:class:`ConfigError` unless ``url`` is an https URL, or an http URL of a
    loopback address: the server's answers are not signed, TLS is their
    integrity (docs/server.md, review RV10-2)."""
    try:
        parts = urlsplit(url)
        host = parts.hostname
    except ValueError:
        host = None
    secure = url.startswith("https://") and bool(host)
    loopback = url.startswith("http://") and host is not None and _loopback(host)
    if not (secure or loopback):
        raise ConfigError(
            _t("the server URL {url!r} must start with https:// (or http:// on loopback)", url=url)
        )


def check_ca(verify: bool | str) -> None:
    """:class:`ConfigError` unless ``verify`` is a bool or names a readable file:
    a CA bundle that cannot be read (``CHILDVAULT_SERVER_CA`` mistyped) is the
    user's to fix, not an internal error at the first request."""
    if isinstance(verify, bool):
        return
    try:
        with open(verify, "rb"):
            pass
    except OSError as exc:
        raise ConfigError(
            _t(
                "cannot read the server's CA certificates {path}: {why} "
                "(check CHILDVAULT_SERVER_CA: a PEM file, or unset it for the system's)",
                path=verify,
                why=exc.strerror or type(exc).__name__,
            )
        ) from exc


def _loopback(host: str) -> bool:
    """Whether ``host`` names this machine's loopback interface (``localhost``, or
    an address in 127.0.0.0/8 or ::1)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


_B = TypeVar("_B", bound=RemoteBackend)


def with_scratch_home(backend: _B, identity: Identity) -> tuple[_B, Path]:
    """``backend`` bootstrapped, with its scratch home; closed again if that fails."""
    try:
        path = backend.scratch_home(backend.bootstrap(), identity)
    except BaseException:
        backend.close()
        raise
    return backend, path


def connect_parts(
    url: str, identity: Identity, *, verify: bool | str = True
) -> tuple[RemoteBackend, Path]:
    """A connected backend and its scratch home; :class:`ConfigError` if the URL or
    the CA bundle is unusable."""
    check_url(url)
    check_ca(verify)
    return with_scratch_home(RemoteBackend(url, identity, verify=verify), identity)
