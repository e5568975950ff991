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

The class is built in layers, each a module of its own over the one below:
:mod:`._base` (shared state, the transport), :mod:`._readahead` (reads outside
a transaction), :mod:`._txn` (transactions), and here the pipelined appends,
the vault's description, the scratch home and closing. :mod:`._http`,
:mod:`._repos` and :mod:`._refusals` hold the HTTP session, the repositories
and the refusals.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import requests

from childvault._i18n import _t
from childvault.keys import ChildVaultError, ConfigError, Identity, ProviderUnavailable
from childvault.keys._encoding import unb64

# Moved to the modules below and imported from here by other code (_failover.py,
# tests). Only those: a constant read at run time is patched where it is read.
from childvault.vault._remote._base import CALL_TIMEOUT as CALL_TIMEOUT
from childvault.vault._remote._http import TRANSPORT_ERRORS as TRANSPORT_ERRORS
from childvault.vault._remote._http import _Reply as _Reply
from childvault.vault._remote._http import _Session as _Session
from childvault.vault._remote._readahead import _TAIL as _TAIL
from childvault.vault._remote._refusals import _Moved, _Redo, _Unverified
from childvault.vault._remote._refusals import _WitnessRefused as _WitnessRefused
from childvault.vault._remote._repos import Bootstrap as Bootstrap
from childvault.vault._remote._slots import RemoteSlots
from childvault.vault._remote._txn import Transactions

__all__ = ["Bootstrap", "RemoteBackend", "connect_parts"]

_R = TypeVar("_R")


class RemoteBackend(Transactions):
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
        super().__init__(url, identity, verify=verify, host=self)

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
