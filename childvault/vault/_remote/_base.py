"""The shared state and the transport of the remote backend (:class:`RemoteBase`):
one signed request and its answer, the wait for the request in flight, the key
(the serialised call) reads are kept under. The layers of
:class:`~childvault.vault._remote.RemoteBackend` (:mod:`._readahead`,
:mod:`._txn`) build on it; it calls none of theirs."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import requests

from childvault._i18n import _t
from childvault.keys import (
    AccessDenied,
    ChildVaultError,
    Identity,
    IntegrityError,
    ProviderUnavailable,
    StorageError,
)
from childvault.vault._backend import (
    AccessRepo,
    AuditRepo,
    CheckpointRepo,
    CustodianRepo,
    MetaRepo,
    RecordRepo,
    StatementRepo,
    UserRepo,
)
from childvault.vault._httpsig import HTTPSignatureAuth
from childvault.vault._remote._codec import decode, encode
from childvault.vault._remote._http import TRANSPORT_ERRORS, _Reply, _Session
from childvault.vault._remote._refusals import (
    _ERRORS,
    _Busy,
    _Redo,
    _RoleRefused,
    _UnknownMethod,
    _Unverified,
    _WitnessRefused,
)
from childvault.vault._remote._repos import (
    RepoHost,
    _Audit,
    _Checkpoints,
    _Repo,
    _Statements,
)
from childvault.vault._remote._slots import RemoteSlots
from childvault.vault._wire_messages import message_from, refusal_message

#: Seconds to wait for the server to answer one call (an import batch is one call).
CALL_TIMEOUT = 120.0
#: How long ``begin`` keeps retrying while another writer holds the server.
BEGIN_PATIENCE = 300.0
#: Reads outside a transaction are answered again from memory for at most this
#: long (and at most :data:`CACHE_ENTRIES` of them) ...
CACHE_SECONDS = 2.0
CACHE_ENTRIES = 2000


@dataclass
class _InFlight:
    """An appending transaction handed to the sender thread (one request: its
    writes, entries and commit): the answer to come, the transaction's body (to
    write it again if refused for a moved head), whether its entries linked to a
    predicted head, how many calls the request holds, and how to write it again
    outside a transaction (:meth:`~childvault.vault._remote.RemoteBackend._append_now`,
    which the layer that hands it off knows)."""

    answer: Future[Any]
    body: Callable[[], Any]
    speculated: bool
    calls: int
    rewrite: Callable[[Callable[[], Any]], Any]


class _Later:
    """The answer of a queued call, once the request carrying it was answered."""

    def __init__(self) -> None:
        self.value: Any = None


class RemoteBase:
    """The state every layer of :class:`~childvault.vault._remote.RemoteBackend`
    shares, and what they all use: the transport (one signed request, its answer
    or its refusal), the wait for the request in flight (:meth:`_settle`), the
    key a call is kept under and the expiry of what was read outside transactions.
    """

    def __init__(
        self, url: str, identity: Identity, *, verify: bool | str = True, host: RepoHost
    ) -> None:
        """``url``, ``identity`` and ``verify`` as :class:`RemoteBackend` takes them;
        ``host`` is what the repositories call: the backend itself, whose layers
        above this one answer the calls (:class:`RemoteBackend` passes ``self``)."""
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
        self._meta = _Repo(host, "meta")
        self._users = _Repo(host, "users")
        self._custodians = _Repo(host, "custodians")
        self._records = _Repo(host, "records")
        self._access = _Repo(host, "access")
        self._audit = _Audit(host, "audit")
        self._checkpoints = _Checkpoints(host, "checkpoints")
        self._statements = _Statements(host, "statements")
        #: Release keys of grants (server mode only): ``new`` and ``redeem``.
        self.release: Any = _Repo(host, "release")
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
        if r.status_code == 503 and doc.get("reason") == "store_unavailable":
            # The server runs but its database is down or restarting: a storage
            # error (exit 1), as when the library reaches the database itself.
            raise StorageError(message)
        if r.status_code == 503:
            raise (_Busy if doc.get("reason") == "busy" else ProviderUnavailable)(message)
        if r.status_code == 502 and doc.get("reason") == "witness":
            raise _WitnessRefused(message)
        if r.status_code == 409 and doc.get("reason") in ("unverified", "stale"):
            raise _Unverified(message)
        cls = _ERRORS.get(str(doc.get("type")), ChildVaultError)
        raise cls(message)

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
            inflight.rewrite(inflight.body)
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

    def _head_key(self) -> str:
        return self._key("audit", "head", (), {})

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

    def take_witness_failure(self) -> str | None:
        """Why the witness did not cosign the last commit's checkpoint (once), or None."""
        failure, self.witness_failure = self.witness_failure, None
        return failure

    def compact(self) -> None:
        """Nothing to do here: the server compacts its own store."""
