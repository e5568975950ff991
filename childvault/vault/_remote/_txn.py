"""Transactions of the remote backend (:class:`Transactions`): calls inside one
(writes queued, reads answered once, reads sent ahead with the writes), the
batches that open and commit it, an appending transaction answered before it
returns (or handed to the sender thread), and what is kept across a commit."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from childvault._i18n import _t
from childvault.keys import ChildVaultError, IntegrityError
from childvault.vault._remote._base import _InFlight, _Later
from childvault.vault._remote._codec import decode, encode
from childvault.vault._remote._methods import METHODS, QUEUED, WRITE
from childvault.vault._remote._own_log import check_predicted, own_log_read
from childvault.vault._remote._readahead import _TAIL, ReadAhead, _held
from childvault.vault._remote._refusals import _Moved, _Unverified, _WitnessRefused
from childvault.vault._remote._repos import PAGE_MAX

_R = TypeVar("_R")

#: Queued writes are sent once they reach this many calls or bytes (well under
#: the server's batch and body limits) ...
QUEUE_CALLS = 1000
QUEUE_BYTES = 4 * 1024 * 1024
#: ... or once the server has not heard from the transaction for this many
#: seconds, so that a long client-side step never lets the server's idle
#: timeout (30 s by default) roll the transaction back.
QUEUE_SECONDS = 5.0

#: The repositories: a write to one changes only its own rows (release and
#: slots are not repositories, and a write to them forgets every read).
_REPOSITORIES = frozenset(
    {"meta", "users", "custodians", "records", "access", "audit", "checkpoints", "statements"}
)
#: Reads of stored checkpoints, checked against a predicted head (:meth:`RemoteBackend.call`).
_CHECKPOINT_READS = frozenset(
    {("checkpoints", "all"), ("checkpoints", "since"), ("checkpoints", "latest_by")}
)

#: Writes answered True or False, by their ``_cas`` form (the server fails the
#: request where they would answer False): queued in an appending transaction.
_CAS_FORMS = {("access", "use_grant"): "use_grant_cas", ("access", "decide"): "decide_cas"}


class Transactions(ReadAhead):
    """The transactions of :class:`~childvault.vault._remote.RemoteBackend` and the
    calls made in them (see the module doc)."""

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
        head this appending transaction predicted (see :func:`._own_log.check_predicted`)."""
        check_predicted(self._speculate[0] if self._speculate is not None else None, stored)

    def _call(self, repo: str, method: str, args: Sequence[Any], kwargs: dict[str, Any]) -> Any:
        if (
            (repo, method) == ("statements", "saved_state")
            and args
            and str(args[0]).endswith("#records")
        ):
            self._heads_read = True
        if not self._depth:
            if (
                self._deferred
                and (repo, method) == ("statements", "saved_state")
                and args
                and args[0] in self._deferred_names
            ):
                # A saved state put off (_transaction) is read back: commit it first.
                self.flush_deferred()
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
        return own_log_read(held, self._own_rows, repo, method, args, kwargs)

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

    def _hand_off(self, handed: Callable[[], Any], body: bytes, calls: int) -> None:
        """Send the one request (``body``: begin, calls, commit) of the appending
        transaction ``handed`` on the sender thread, once the request in flight
        is answered."""
        self._settle()  # in order: raises _Redo or the failure, and nothing is sent
        if self._sender is None:
            self._sender = ThreadPoolExecutor(max_workers=1, thread_name_prefix="childvault-send")
        future = self._sender.submit(self._send_handed, body)
        self._inflight = _InFlight(future, handed, True, calls, self._append_now)

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

    def transaction(self) -> contextlib.AbstractContextManager[Any]:
        """A server-side transaction: all or nothing; nested use joins the outer one."""
        return self._transaction()
