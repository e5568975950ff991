"""Client failover across several ``childvault serve`` replicas of one vault.

``--server`` / ``CHILDVAULT_SERVER`` may list several URLs, comma-separated:
replicas in front of one PostgreSQL database (docs/scale.md). A
:class:`FailoverBackend` sends each request to the replica that answered last
and, when that one is down (connection refused or reset, no answer, 502, 503
other than ``busy``, 504), to the next, pausing 0.1 s doubling up to 2 s
between rounds, for at most :data:`FAILOVER_WAIT_S` in total. If replicas
were still saying that their database is down (503 ``store_unavailable``)
when that time is up, the caller gets :class:`~childvault.keys.StorageError`
(exit 1), as a client on the database itself would, not "no server answered".

What is retried, and why it is never applied twice:

- **Reads and** ``begin`` go to the next replica as they are: they change
  nothing (a ``begin`` left open on a replica that did answer is rolled back by
  its idle timeout, or at once when it died).
- **A write outside a transaction** is retried only if the connection was
  refused (the request never reached the replica); otherwise its outcome is
  unknown and the caller gets :class:`~childvault.keys.ProviderUnavailable`.
- **A transaction not yet committed** when its replica went down was rolled
  back by PostgreSQL (the replica's session ended, or the client rolls it back
  first if the replica still answers). The client kept a journal of its calls
  and their answers; it opens a new transaction on the next replica and
  replays the journal, checking that every call answers exactly as before. If
  anything differs (another writer changed what the transaction read, such as
  the log head), nothing is stored and the caller gets
  :class:`~childvault.keys.ProviderUnavailable` saying so; the services'
  resumable steps (an import) pick up from what is committed.
- **A commit whose answer was lost** may or may not have been applied. The
  client opens a transaction on another replica (which waits for the
  database's write lock, so the lost one has ended either way) and reads the
  log at the sequence number of the last entry its transaction appended: the
  same hash means it was committed (done, nothing re-sent); otherwise it was
  not, and the journal is replayed and committed there. A transaction that
  wrote without appending to the log has no such witness: its lost commit is
  reported as unknown instead of guessed. A commit found applied whose
  transaction stored a checkpoint leaves the HTTP witness's answer unknown
  (the lost answer may have been the 502 ``witness``): it counts as refused,
  so the approval is withdrawn (finding D-1).
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests

from childvault._i18n import _t
from childvault.keys import (
    ChildVaultError,
    Identity,
    IntegrityError,
    ProviderUnavailable,
    StorageError,
)
from childvault.vault._remote import (
    CALL_TIMEOUT,
    TRANSPORT_ERRORS,
    Bootstrap,
    RemoteBackend,
    _Reply,
    _WitnessRefused,
    check_ca,
    check_url,
    with_scratch_home,
)
from childvault.vault._remote import connect_parts as _connect_one
from childvault.vault._remote._codec import encode
from childvault.vault._remote._methods import METHODS, WRITE

__all__ = ["FAILOVER_WAIT_S", "FailoverBackend", "connect_parts", "split_urls"]

#: Upper bound on the time spent looking for a replica that answers, seconds.
FAILOVER_WAIT_S = 60.0
#: Timeout of the best-effort rollback sent to a replica that failed mid-transaction.
_ROLLBACK_TIMEOUT_S = 5.0


def split_urls(url: str) -> list[str]:
    """The URLs of a comma-separated ``--server`` value, blanks dropped."""
    return [u.strip().rstrip("/") for u in url.split(",") if u.strip()]


#: Writes that only keep a signed cache (a verifier's saved trust state): if
#: the commit of a transaction holding nothing else is lost, the next
#: verification starts from an older state; nothing is lost or repeated.
_CACHE_ONLY = frozenset({("statements", "save_state")})


class _Down(Exception):
    """The replica did not answer usefully; ``refused``: the request never reached it
    (or was refused before it was served); ``store``: the replica runs but said
    its database cannot be reached (503 ``store_unavailable``)."""

    def __init__(self, url: str, why: str, *, refused: bool, store: bool = False) -> None:
        super().__init__(f"{url}: {why}")
        self.url = url
        self.refused = refused
        self.store = store


class _Lost(Exception):
    """The open transaction's replica went down before the commit."""


@dataclass
class _Call:
    repo: str
    method: str
    args: list[Any]
    kwargs: dict[str, Any]
    answer: str  # the result, encoded: what a replay must answer again


def _refused(exc: BaseException) -> bool:
    """Whether the connection was refused outright (nothing was sent): in
    ``requests``' error or ``urllib3``'s (:data:`TRANSPORT_ERRORS`)."""
    seen: set[int] = set()
    stack: list[BaseException] = [exc]
    while stack:
        e = stack.pop()
        if id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, ConnectionRefusedError):
            return True
        if type(e).__name__ == "NewConnectionError":
            return True
        stack.extend(a for a in getattr(e, "args", ()) if isinstance(a, BaseException))
        for nxt in (e.__cause__, e.__context__, getattr(e, "reason", None)):
            if isinstance(nxt, BaseException):
                stack.append(nxt)
    return False


class FailoverBackend(RemoteBackend):
    """A :class:`RemoteBackend` over several replicas of one vault (see the module doc)."""

    #: Each commit is journalled and recovered on another replica (_commit): in turn.
    _pipelines = False

    def __init__(
        self, urls: Sequence[str], identity: Identity, *, verify: bool | str = True
    ) -> None:
        if not urls:
            raise ValueError(_t("no server URL"))
        super().__init__(urls[0], identity, verify=verify)
        self.urls = [u.rstrip("/") for u in urls]
        self.where = ",".join(self.urls)
        #: The calls of the open transaction and their answers.
        self._journal: list[_Call] = []

    # -- one request to one replica

    def _once(self, url: str, path: str, doc: dict[str, Any] | None, *, timeout: float) -> Any:
        try:
            r: requests.Response | _Reply
            if doc is None:
                r = self._http.get(url + path, timeout=timeout, allow_redirects=False)
            else:
                body = json.dumps(doc, separators=(",", ":")).encode()
                r = self._post_to(url, path, body, timeout)
        except TRANSPORT_ERRORS as exc:
            raise _Down(url, type(exc).__name__, refused=_refused(exc)) from exc
        if r.status_code == 502 and _witness_refusal(r):
            # Not a replica down: it committed and its witness refused the
            # checkpoint. _answer raises _WitnessRefused, which the commit
            # keeps for the service's fail-closed witness step.
            return self._answer(r)
        if r.status_code in (502, 504):
            raise _Down(url, f"answered {r.status_code}", refused=False)
        if r.status_code == 503:
            try:
                reason = r.json().get("reason")
            except (ValueError, AttributeError):
                reason = None
            if reason == "store_unavailable":
                # Refused by the signature layer before serving (nothing was
                # done); the database every replica shares may be restarting.
                raise _Down(url, "its database is unreachable", refused=True, store=True)
            if reason != "busy":
                raise _Down(url, "answered 503", refused=False)
        return self._answer(r)

    def _anywhere(
        self, path: str, doc: dict[str, Any] | None, *, only_if_refused: bool = False
    ) -> Any:
        """Send to the current replica, else the next ones, within :data:`FAILOVER_WAIT_S`.

        With ``only_if_refused`` a replica is passed over only when it refused
        the connection; any other failure leaves the outcome unknown.
        """
        deadline = time.monotonic() + FAILOVER_WAIT_S
        pause = 0.1
        last: _Down | None = None
        while True:
            start = self.urls.index(self.url) if self.url in self.urls else 0
            store = False  # whether a replica of this round said its database is down
            for url in self.urls[start:] + self.urls[:start]:
                try:
                    result = self._once(url, path, doc, timeout=CALL_TIMEOUT)
                except _Down as down:
                    if only_if_refused and not down.refused:
                        raise ProviderUnavailable(
                            _t(
                                "the childvault server {url} failed during a write; "
                                "its outcome is unknown: check, then retry",
                                url=url,
                            )
                        ) from down
                    last = down
                    store = store or down.store
                    continue
                self.url = url
                return result
            if time.monotonic() + pause > deadline and store:
                # The replicas run; the database they share does not answer.
                # Said as the library says it of a database it reaches itself
                # (StorageError, exit 1), not as servers that did not answer.
                raise StorageError(
                    _t(
                        "the childvault servers {servers} could not reach their database "
                        "for {seconds} s (it is down or restarting): retry when it is back "
                        "(what was not committed was rolled back; an import resumes where "
                        "it stopped)",
                        servers=self.where,
                        seconds=round(FAILOVER_WAIT_S),
                    )
                ) from last
            if time.monotonic() + pause > deadline:
                raise ProviderUnavailable(
                    _t(
                        "no childvault server of {servers} answered for {seconds} s",
                        servers=self.where,
                        seconds=round(FAILOVER_WAIT_S),
                    )
                ) from last
            time.sleep(pause)
            pause = min(pause * 2, 2.0)

    # -- the overridden transport of RemoteBackend

    def bootstrap(self) -> Bootstrap:
        """Fetch the vault's description from the first replica that answers."""
        return Bootstrap(self._anywhere("/v1/vault", None))

    def call(self, repo: str, method: str, args: Sequence[Any], kwargs: dict[str, Any]) -> Any:
        """Run ``repo.method`` on a replica; inside a transaction, journal it (module doc)."""
        a, kw = list(args), dict(kwargs)
        if self._txn is None:
            doc = {"txn": None, "repo": repo, "method": method, "args": encode(a)}
            doc["kwargs"] = encode(kw)
            write = METHODS.get(repo, {}).get(method) == WRITE
            return self._patiently(lambda: self._anywhere("/v1/rpc", doc, only_if_refused=write))
        try:
            result = self._in_txn(repo, method, a, kw)
        except _Lost:
            self._recover()
            result = self._in_txn(repo, method, a, kw)
        self._journal.append(_Call(repo, method, a, kw, _canonical(result)))
        return result

    def release_later(self, grant_id: str) -> None:
        """None: ``release.new`` is asked at once. A failover transaction sends
        each call on its own and journals it (module doc); it has no queue that
        its commit would send, so a key queued there was never asked for and
        the approval failed with "no release key" (found by the replica tests)."""
        return None

    def prefetch_log(self, start: int) -> None:
        """No trust sync read-ahead across replicas: every read goes through
        :meth:`call` (and its failover), one request each."""

    def _in_txn(self, repo: str, method: str, a: list[Any], kw: dict[str, Any]) -> Any:
        doc = {"txn": self._txn, "repo": repo, "method": method}
        doc.update(args=encode(a), kwargs=encode(kw))
        try:
            return self._once(self.url, "/v1/rpc", doc, timeout=CALL_TIMEOUT)
        except _Down as down:
            raise _Lost(str(down)) from down

    def _begin(self) -> str:
        txn = self._patiently(lambda: self._anywhere("/v1/txn/begin", {}))
        if not isinstance(txn, str):
            raise IntegrityError(_t("the server sent a malformed transaction id"))
        return txn

    def _recover(self) -> None:
        """Open the transaction again on a replica that answers and replay the journal."""
        old, self._txn = self._txn, None
        # The replica may still answer (a proxy's 502): end the lost transaction
        # there so it does not hold the database's write lock until it idles out.
        with contextlib.suppress(_Down, ChildVaultError):
            self._once(self.url, "/v1/txn/rollback", {"txn": old}, timeout=_ROLLBACK_TIMEOUT_S)
        self._move_on()
        self._txn = self._begin()
        self._replay()

    def _move_on(self) -> None:
        """Start the next search from the replica after the one that failed."""
        if self.url in self.urls and len(self.urls) > 1:
            self.url = self.urls[(self.urls.index(self.url) + 1) % len(self.urls)]

    def _replay(self) -> None:
        for done in self._journal:
            try:
                again = self._in_txn(done.repo, done.method, done.args, done.kwargs)
            except _Lost as exc:
                raise ProviderUnavailable(
                    _t(
                        "the childvault servers failed twice during one transaction; "
                        "nothing of it was stored: retry"
                    )
                ) from exc
            if _canonical(again) != done.answer:
                with contextlib.suppress(_Down, ChildVaultError):
                    self._once(self.url, "/v1/txn/rollback", {"txn": self._txn}, timeout=10)
                self._txn = None
                raise ProviderUnavailable(
                    _t(
                        "a childvault server failed during a transaction and the vault "
                        "changed before it could be repeated on another; nothing of it was "
                        "stored: retry"
                    )
                )

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
        self._journal = []
        self._txn = self._begin()
        self._depth = 1
        if self.key_slots is not None:
            self.key_slots.discarding = False
        try:
            yield
            # The key slots the services wrote go in this transaction, as with
            # one server (RemoteBackend._transaction): journaled like any call.
            self._send_slots()
        except BaseException:
            if self.key_slots is not None:
                self.key_slots.take()
                self.key_slots.discarding = True
            txn, self._txn = self._txn, None
            with contextlib.suppress(_Down, ChildVaultError):
                self._once(self.url, "/v1/txn/rollback", {"txn": txn}, timeout=CALL_TIMEOUT)
            self._journal = []
            raise
        finally:
            self._depth = 0
        try:
            self._commit()
        finally:
            self._txn = None
            self._journal = []

    def _commit(self) -> None:
        self.witness_failure = None
        try:
            self._once(self.url, "/v1/txn/commit", {"txn": self._txn}, timeout=CALL_TIMEOUT)
            return
        except _WitnessRefused as exc:
            # Committed; only the witness did not cosign. As with one server
            # (RemoteBackend._transaction), AuditService.witness reports it and
            # the approval is withdrawn: its grant revoked, the revocation logged.
            self.witness_failure = str(exc)
            return
        except _Down as down:
            failed = down
        # No answer to the commit: find out whether it was applied (module doc).
        self._txn = None
        appended = self._last_appended()
        if appended is None:
            writes = {
                (c.repo, c.method) for c in self._journal if METHODS[c.repo][c.method] == WRITE
            }
            if writes <= _CACHE_ONLY:
                return  # nothing, or only a cache, was written: nothing to lose or repeat
            raise ProviderUnavailable(
                _t(
                    "the childvault server {url} did not confirm a commit; "
                    "its outcome is unknown: check, then retry",
                    url=failed.url,
                )
            ) from failed
        seq, digest = appended
        self._move_on()
        self._txn = self._begin()  # waits for the write lock: the lost commit has ended
        at = self._in_txn_or_fail("audit", "entry_at", [seq], {})
        if at is not None and bytes(at[1]) == digest:
            self._end_quietly(commit=False)  # it was committed; send nothing again
            if self._stored_checkpoint():
                # The lost answer may have been the server's 502 ``witness``: that
                # the commit applied says nothing of the witness's cosignature.
                # Unknown counts as refused (fail closed): the service withdraws
                # the approval as for the 502 itself (finding D-1).
                self.witness_failure = _t(
                    "the answer to the commit was lost, so whether the witness cosigned "
                    "its checkpoint is unknown: check the witness with `childvault audit "
                    "checkpoint`; an approval withdrawn for this needs a new request"
                )
            return
        self._replay()
        try:
            self._once(self.url, "/v1/txn/commit", {"txn": self._txn}, timeout=CALL_TIMEOUT)
        except _WitnessRefused as exc:
            self.witness_failure = str(exc)  # committed here: as above
        except _Down as again:
            raise ProviderUnavailable(
                _t(
                    "the childvault server {url} did not confirm a commit; "
                    "its outcome is unknown: check, then retry",
                    url=again.url,
                )
            ) from again

    def _in_txn_or_fail(self, repo: str, method: str, a: list[Any], kw: dict[str, Any]) -> Any:
        try:
            return self._in_txn(repo, method, a, kw)
        except _Lost as exc:
            raise ProviderUnavailable(
                _t(
                    "the childvault servers failed while a commit was being confirmed; "
                    "its outcome is unknown: check, then retry"
                )
            ) from exc

    def _end_quietly(self, *, commit: bool) -> None:
        path = "/v1/txn/commit" if commit else "/v1/txn/rollback"
        with contextlib.suppress(_Down, ChildVaultError):
            self._once(self.url, path, {"txn": self._txn}, timeout=CALL_TIMEOUT)
        self._txn = None

    def _stored_checkpoint(self) -> bool:
        """Whether the open transaction stored a checkpoint (which the server
        has its witnesses cosign when the commit applies)."""
        return any(
            c.repo == "checkpoints" and METHODS[c.repo][c.method] == WRITE for c in self._journal
        )

    def _last_appended(self) -> tuple[int, bytes] | None:
        """(sequence number, hash) of the last log row the open transaction appended."""
        last: tuple[int, bytes] | None = None
        for c in self._journal:
            if (c.repo, c.method) == ("audit", "append"):
                rows = c.args[0] if c.args else c.kwargs.get("rows")
                for row in rows or ():
                    last = (int(row[0]), bytes(row[2]))
        return last


def _witness_refusal(r: requests.Response | _Reply) -> bool:
    """Whether ``r`` is the server's 502 ``witness``: committed, checkpoint not cosigned."""
    try:
        doc = r.json()
    except ValueError:
        return False
    return isinstance(doc, dict) and doc.get("reason") == "witness"


def _canonical(result: Any) -> str:
    """A result as comparable text (the wire encoding, keys sorted)."""
    return json.dumps(encode(result), sort_keys=True, separators=(",", ":"))


def connect_parts(
    url: str, identity: Identity, *, verify: bool | str = True
) -> tuple[RemoteBackend, Path]:
    """:func:`childvault.vault._remote.connect_parts`, for one URL or several, comma-separated.

    One URL keeps the plain :class:`RemoteBackend` (no failover, as before);
    several give a :class:`FailoverBackend` over them. Every URL is checked.
    """
    check_ca(verify)
    urls = split_urls(url)
    if len(urls) <= 1:
        return _connect_one(urls[0] if urls else url, identity, verify=verify)
    for one in urls:
        check_url(one)
    return with_scratch_home(FailoverBackend(urls, identity, verify=verify), identity)
