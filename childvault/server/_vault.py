"""The vault behind ``childvault serve``: remote backend calls, checked and serialised.

One :class:`VaultHost` owns the home's database connection on one thread
(SQLite connections are single-threaded; one thread also gives "one writer at
a time"). A client's transaction (``begin`` -> calls -> ``commit`` or
``rollback``) holds the host until it ends or stays idle longer than
``txn_idle`` seconds, when it is rolled back. Other clients wait for it, up to
``wait`` seconds, then get 503 ``busy`` (the client retries ``begin``).

Checks, in addition to the signature layer in front (docs/server.md):

- the caller is an active user of the *verified* trust state (registration
  statements replayed from the anchor, never the ``users`` table alone);
- each write is allowed for one of the caller's roles (:data:`ROLE_WRITES`)
  and names the caller where a row records who acted;
- every appended log entry is in the caller's name, signed by the caller's
  verified key and links to the head; at commit the whole batch is replayed
  (chain, actors' signatures, signed statements applied to the trust state)
  before ``COMMIT``, so nothing unverifiable is stored;
- a checkpoint note must verify with the caller's key; after the commit the
  server appends it to the witness file.

Refusals go to the audit hook (with reason ``role``, ``binding``,
``unverified`` ...) and the access log, like the signature layer's.

This module holds the transactions and calls; the host's state is in
_host_base.py, and each group of checks in a module of its own that does not
import the host: _calls.py (before a call runs), _bindings.py and
_submitted.py (writes, entries, slots, renewals), _grants.py (approvals and
release keys), _reads.py (sync, inputs), _witnessing.py (the witness file).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
import time
from pathlib import Path
from typing import Any

from childvault._i18n import _t
from childvault.keys import (
    ChildVaultError,
    ConfigError,
    Identity,
    IntegrityError,
    KeySlots,
    UsageError,
)
from childvault.server._bindings import bind, bind_own, check_refunds, note_done
from childvault.server._calls import ROLE_WRITES as ROLE_WRITES
from childvault.server._calls import check_call, check_work
from childvault.server._grants import check_issued, release
from childvault.server._host_base import _HostBase
from childvault.server._host_common import DEFAULT_TXN_IDLE as DEFAULT_TXN_IDLE
from childvault.server._host_common import DEFAULT_TXN_MAX as DEFAULT_TXN_MAX
from childvault.server._host_common import DEFAULT_WAIT as DEFAULT_WAIT
from childvault.server._host_common import HEADS_STEP as HEADS_STEP
from childvault.server._host_common import MAX_BATCH as MAX_BATCH
from childvault.server._host_common import MAX_BATCH_ENTRIES as MAX_BATCH_ENTRIES
from childvault.server._host_common import MAX_BATCH_ROWS as MAX_BATCH_ROWS
from childvault.server._host_common import MAX_MANY as MAX_MANY
from childvault.server._host_common import MAX_SLOT as MAX_SLOT
from childvault.server._host_common import PRIVILEGED as PRIVILEGED
from childvault.server._host_common import SCAN_COST as SCAN_COST
from childvault.server._host_common import SERVER_ONLY as SERVER_ONLY
from childvault.server._host_common import SYNC_PAGE as SYNC_PAGE
from childvault.server._host_common import Refused as Refused
from childvault.server._host_common import _Txn
from childvault.server._reads import inputs, requests_of, sync
from childvault.server._submitted import SCAN_BURST as SCAN_BURST
from childvault.server._submitted import SCAN_PER_HOUR as SCAN_PER_HOUR
from childvault.server._submitted import ScanQuota as ScanQuota
from childvault.server._submitted import check_renewals, check_slots, slots_call, store_slots
from childvault.server._witnessfile import WitnessRead
from childvault.server._witnessing import catch_up, consistency_proof, cosign_and_append
from childvault.vault import _audit
from childvault.vault._config import Config, Home
from childvault.vault._registrations import anchor_of
from childvault.vault._remote._codec import encode
from childvault.vault._remote._methods import METHODS, WRITE
from childvault.vault._statements import Anchor
from childvault.vault._wire_messages import message_of

logger = logging.getLogger("childvault.server")


#: Writes with a boolean answer whose ``_cas`` form answers None or fails the
#: request (409 ``unverified``, so a transaction the batch opened or was to
#: commit is rolled back, nothing stored) where the plain call answers False:
#: the client queues them with its commit instead of waiting for the answer
#: (docs/server.md "Approve and read in two round trips"). Each is checked,
#: bound and noted exactly as the plain call (:meth:`VaultHost._invoke`).
_CAS = {
    ("access", "use_grant_cas"): "use_grant",
    ("access", "decide_cas"): "decide",
}


def unlock_home(home: Path, user: str, passphrase: str) -> tuple[bytes, Anchor]:
    """The database key (from ``user``'s key slot) and the anchor in ``user``'s identity."""
    key, anchor, _ = unlock_home_as(home, user, passphrase)
    return key, anchor


def unlock_home_as(home: Path, user: str, passphrase: str) -> tuple[bytes, Anchor, Identity]:
    """:func:`unlock_home`, and ``user``'s identity: the server signs the log entries
    of refusals with it (``server.refuse``, _refusals.py)."""
    h = Home(Path(home))
    config = Config.load(h)
    identity = Identity.load(h.identity(user), passphrase)
    anchor = anchor_of(identity)
    if anchor is None or anchor.vault_id != config.vault_id:
        raise ConfigError(
            _t(
                "the identity of {user!r} holds no anchor of this vault: run `childvault upgrade`",
                user=user,
            )
        )
    secrets_ = KeySlots(h.keyslots).open(identity, config.vault_id)
    return secrets_["db"], anchor, identity


class VaultHost(_HostBase):
    """The served vault: one connection on one thread, transactions, trust, policy."""

    async def _wait_free(self) -> None:
        """Wait until no transaction holds the host; roll back one left idle, or one
        open longer than :attr:`txn_max` (someone, this request, waits for it)."""
        cond = self._condition()
        deadline = time.monotonic() + self.wait
        self._waiters += 1
        try:
            while self._txn is not None:
                txn = self._txn
                if self._overdue(txn, waited=True):
                    self._txn = None
                    await self._run(lambda t=txn: self._end(t, commit=False))  # type: ignore[misc]
                    cond.notify_all()
                    self._kick()
                    break
                now = time.monotonic()
                # Woken when the holder's lifetime runs out, not only at the deadline.
                remaining = min(deadline - now, self.txn_idle, txn.started + self.txn_max - now)
                if deadline - now <= 0:
                    raise Refused(503, "busy", _t("another client's transaction holds the vault"))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(cond.wait(), max(remaining, 0.01))
        finally:
            self._waiters -= 1

    def _overdue(self, txn: _Txn, *, waited: bool) -> bool:
        """Whether ``txn`` is to be rolled back now: idle longer than :attr:`txn_idle`,
        or (``waited``: another request waits for the vault) open longer than
        :attr:`txn_max`. Logs the rollback with the user; a lifetime rollback
        also becomes a ``server.refuse`` entry (reason ``txn_lifetime``)."""
        now = time.monotonic()
        if now - txn.last > self.txn_idle:
            logger.warning("rolling back transaction of %s left idle", txn.user)
            return True
        if not waited or now - txn.started <= self.txn_max:
            return False
        logger.warning(
            "rolling back transaction of %s: open longer than %g s while others wait "
            "(txn_lifetime)",
            txn.user,
            self.txn_max,
        )
        if self._signer is not None and self.resolve(txn.user) is not None:
            with self._limiter_lock:
                self._limiter.admit(txn.user, "txn_lifetime", "POST /v1/txn")
        return True

    async def begin(self, user: str) -> str:
        """Open a transaction for ``user``; its id."""
        self._check_user(user)
        cond = self._condition()
        async with cond:
            txn = await self._open(user, cond)
        self._schedule_reap(txn, self.txn_idle)
        return txn.id

    async def _open(self, user: str, cond: asyncio.Condition, *, enter: bool = True) -> _Txn:
        """Wait until no transaction is open, then open one for ``user`` (``cond`` held).

        ``enter`` False: the caller enters the database transaction itself, first
        thing on the DB thread (:meth:`batch`: one hand-over to that thread, not two).
        """
        await self._wait_free()
        txn = _Txn(secrets.token_hex(16), user, None, time.monotonic())
        self._txn = txn
        if not enter:
            return txn
        try:
            await self._run(lambda: self._enter(txn))
        except BaseException:
            self._txn = None
            cond.notify_all()
            raise
        return txn

    def _schedule_reap(self, txn: _Txn, delay: float) -> None:
        """Check ``txn`` again after ``delay`` seconds: a client that died must not hold
        the vault (nor SQLite's write lock) until someone else happens to wait."""
        loop = asyncio.get_running_loop()
        loop.call_later(delay, lambda: loop.create_task(self._reap(txn)))

    async def _reap(self, txn: _Txn) -> None:
        cond = self._condition()
        async with cond:
            if self._txn is not txn:
                return
            if not self._overdue(txn, waited=self._waiters > 0):
                now = time.monotonic()
                again = self.txn_idle - (now - txn.last)
                if self._waiters:
                    again = min(again, txn.started + self.txn_max - now)
                self._schedule_reap(txn, max(again, 0.0) + 0.5)
                return
            self._txn = None
            try:
                await self._run(lambda: self._end(txn, commit=False))
            finally:
                cond.notify_all()
                self._kick()

    async def finish(self, user: str, txn_id: str, *, commit: bool) -> None:
        """Commit (after verifying everything appended) or roll back ``txn_id``."""
        cond = self._condition()
        async with cond:
            txn = self._own(user, txn_id)
            self._txn = None
            try:
                await self._run(lambda: self._end(txn, commit=commit))
            finally:
                cond.notify_all()
                self._kick()

    async def call(
        self, user: str, txn_id: str | None, repo: str, method: str, args: Any, kwargs: Any
    ) -> Any:
        """Run one repository call for ``user`` (inside ``txn_id`` if given)."""
        kind = METHODS.get(repo, {}).get(method)
        if kind is None:
            raise Refused(
                400,
                "unknown_method",
                _t("no backend method {repo}.{method}", repo=repo, method=method),
            )
        roles = self._check_user(user)
        a, kw = check_call(roles, repo, method, args, kwargs)
        check_work([(repo, method, a, kw)])
        cond = self._condition()
        async with cond:
            if txn_id is not None:
                txn = self._own(user, txn_id)
                txn.last = time.monotonic()
                txn.commits = False
                try:
                    return await self._run(lambda: self._invoke(txn, repo, method, a, kw))
                finally:
                    txn.last = time.monotonic()  # idle time counts from the end of a call
            await self._wait_free()
            if kind != WRITE:
                return await self._run(lambda: self._invoke(None, repo, method, a, kw, user=user))
            # A write outside a transaction runs in one of its own, with the same checks.
            txn = _Txn(secrets.token_hex(16), user, None, time.monotonic())
            self._txn = txn
            try:

                def once() -> Any:
                    txn.commits = True
                    self._enter(txn)
                    try:
                        result = self._invoke(txn, repo, method, a, kw)
                    except BaseException:
                        self._end(txn, commit=False)
                        raise
                    self._end(txn, commit=True)
                    return result

                return await self._run(once)
            finally:
                self._txn = None
                cond.notify_all()
                self._kick()

    async def batch(
        self,
        user: str,
        txn_id: str | None,
        calls: list[tuple[str, str, Any, Any]],
        *,
        begin: bool,
        commit: bool,
        gen: int | None = None,
    ) -> tuple[str | None, list[Any]]:
        """Run ``calls`` (repo, method, args, kwargs) in order in one transaction.

        The transaction is ``txn_id`` (open, the caller's) or, with ``begin``, a
        new one; with ``commit`` it is committed after the last call. With
        neither, the calls must all be reads: they run together between
        transactions, like single reads. Each call
        is checked exactly as :meth:`call` checks it, and every call is checked
        for method, arguments and role before the first one runs, so a batch
        holding one forbidden call runs none. A call that fails stops the batch;
        the transaction is then rolled back if the batch began or was to commit
        it (its client cannot roll back what it has no id of, or what it meant
        to end), and left open otherwise, exactly as after a failed single call.
        Returns the transaction id (None once committed) and each call's result.

        ``gen`` (with ``begin``): the generation an earlier answer named; if the
        server has committed anything since, nothing runs and the request is
        refused (409 ``stale``): the client answered this transaction's reads
        from what it read then, and runs it again reading them. A precondition
        only: every check of every call is as without it.
        """
        if begin and txn_id is not None:
            raise Refused(400, "malformed", _t("a batch begins a transaction or names an open one"))
        if not isinstance(calls, list) or len(calls) > MAX_BATCH:
            raise Refused(
                400, "malformed", _t("a batch holds a list of at most {n} calls", n=MAX_BATCH)
            )
        roles = self._check_user(user)
        # All checked before any runs: a batch with one forbidden call stores nothing.
        checked = [
            (repo, method, *check_call(roles, repo, method, args, kwargs))
            for repo, method, args, kwargs in calls
        ]
        check_work(checked)
        cond = self._condition()
        if not begin and txn_id is None:
            # Reads alone, outside a transaction: run together between transactions,
            # so they see one state.
            if commit or any(METHODS[c[0]][c[1]] == WRITE for c in checked):
                raise Refused(
                    400, "malformed", _t("a batch that writes begins or names a transaction")
                )
            async with cond:
                await self._wait_free()
                return None, await self._run(
                    lambda: [self._invoke(None, r, m, a, kw, user=user) for r, m, a, kw in checked]
                )
        async with cond:
            if begin:
                # Entered on the DB thread by run() below, with the calls.
                txn = await self._open(user, cond, enter=False)
                if gen is not None and gen != self.generation:
                    self._txn = None
                    cond.notify_all()
                    raise Refused(
                        409, "stale", _t("the vault changed since it was read: nothing was run")
                    )
            else:
                txn = self._own(user, str(txn_id))
            txn.last = time.monotonic()
            txn.commits = commit
            ends = begin or commit

            def run() -> list[Any]:
                results = []
                try:
                    if begin:
                        self._enter(txn)
                    for repo, method, a, kw in checked:
                        results.append(self._invoke(txn, repo, method, a, kw))
                except BaseException:
                    if ends:
                        self._end(txn, commit=False)
                    raise
                if commit:
                    self._end(txn, commit=True)
                return results

            done = False
            try:
                results = await self._run(run)
                done = commit
            except BaseException:
                done = ends
                raise
            finally:
                txn.last = time.monotonic()
                if done and self._txn is txn:
                    self._txn = None
                    cond.notify_all()
        if done:
            return None, results
        if begin:
            self._schedule_reap(txn, self.txn_idle)
        return txn.id, results

    # -- DB thread

    def _enter(self, txn: _Txn) -> None:
        context = self.db.transaction()
        context.__enter__()
        txn.context = context

    def _end(self, txn: _Txn, *, commit: bool) -> None:
        context, txn.context = txn.context, None
        if context is None:
            return
        if not commit:
            context.__exit__(UsageError, UsageError(_t("rolled back")), None)
            return
        try:
            unlogged = txn.used - txn.logged_reads
            if unlogged:
                raise IntegrityError(
                    _t(
                        "a use of grant {grant_id} was consumed without its read entry",
                        grant_id=sorted(unlogged)[0],
                    )
                )
            check_refunds(txn)
            checked = self._replayed(txn) if txn.appended else None
            if txn.issued.grants or txn.issued.decided or txn.issued.logged:
                check_issued(self.db, txn, (checked or self._verified).state, self._schema)
            renewed: dict[str, str] = {}
            if txn.keys_set or txn.renewals:
                renewed = check_renewals(
                    self.db, self._verified.state, txn, (checked or self._verified).state
                )
            if txn.slots:
                state = (checked or self._verified).state
                check_slots(self.db, self.home.keyslots, txn.user, state, txn.slots, renewed)
                store_slots(self.home.keyslots, self.config.vault_id, txn.slots)
        except IntegrityError as exc:
            context.__exit__(IntegrityError, exc, None)
            raise Refused(
                409,
                "unverified",
                _t("refused, nothing stored: {error}", error=message_of(exc)),
            ) from exc
        except BaseException as exc:
            context.__exit__(type(exc), exc, None)
            raise
        context.__exit__(None, None, None)
        self.generation += 1
        if checked is not None:
            self._verified = checked
            self._refresh()
        failures = [f for f in (self._witness(note) for note in txn.notes) if f is not None]
        if failures:
            # Committed, but not cosigned: the client's witness step fails closed
            # (an approval is withdrawn, `audit checkpoint` reports the failure).
            raise Refused(
                502,
                "witness",
                _t(
                    "committed, but the checkpoint was not witnessed: {error}",
                    error=failures[0],
                ),
            )

    def _invoke(
        self,
        txn: _Txn | None,
        repo: str,
        method: str,
        a: list[Any],
        kw: Any,
        *,
        user: str | None = None,
    ) -> Any:
        base = _CAS.get((repo, method))
        if base is not None:
            # Checked, bound and noted as the plain call; only its False fails.
            if txn is None:
                raise Refused(400, "malformed", _t("this call runs in a transaction"))
            if self._invoke(txn, repo, base, a, kw) is not True:
                # Not logged as a refusal: the plain call's False is an answer (the
                # client then runs it plainly, and logs a denied read itself).
                raise Refused(
                    409,
                    "stale",
                    _t(
                        "{repo}.{method} did not apply (no use left, or decided meanwhile): "
                        "nothing stored",
                        repo=repo,
                        method=base,
                    ),
                )
            return encode(None)
        if txn is not None and METHODS[repo][method] == WRITE:
            bind(
                self.db,
                txn,
                repo,
                method,
                a,
                kw,
                verified=self._verified,
                vault_id=self.config.vault_id,
                quota=self._scan_quota,
                subtrees=self._subtrees,
            )
            bind_own(self.db, txn, repo, method, a, kw)
        if repo == "inputs":
            if txn is not None or user is None:
                raise Refused(400, "malformed", _t("inputs are read outside a transaction"))
            fresh, records = len(a) >= 2 and a[1], len(a) == 3 and a[2]
            # Already the call's encoded result (the answers encoded twice: _inputs).
            return inputs(
                self.db,
                user,
                method,
                str(a[0]),
                fresh=fresh,
                records=records,
                statement_seqs=self._statement_seqs,
            )
        if repo == "release":
            if txn is None:
                raise Refused(400, "malformed", _t("release calls run in a transaction"))
            return encode(
                release(
                    self.db,
                    txn,
                    method,
                    a,
                    secret=self.release_secret,
                    vault_id=self.config.vault_id,
                    states=self._states(txn),
                )
            )
        if repo == "slots":
            return encode(slots_call(self.home.keyslots, txn, method, a))
        if repo == "meta" and str(a[0] if a else kw.get("key", "")).startswith(SERVER_ONLY):
            raise Refused(403, "server_only", _t("this setting is the server's own"))
        target = getattr(self.db, repo)
        if (repo, method) == ("statements", "add_members") and txn is not None:
            # Checked and rebuilt by _bind_own: stored as ``add`` of each would.
            members, txn.members = txn.members, []
            add_many = getattr(self.db.statements, "add_many", None)
            if add_many is not None:
                add_many(members)
            else:
                for seq, data in members:
                    self.db.statements.add(seq, data)
            return encode(None)
        if (repo, method) == ("audit", "page"):
            start = int(a[0])
            batch = max(1, min(int(kw.get("batch", 5000)), 5000))
            rows = next(iter(self.db.audit.pages(start, batch=batch)), [])
            return encode([list(self.db.audit.row(r)) for r in rows])
        if (repo, method) == ("audit", "sync"):
            return encode(sync(self.db, int(a[0])))
        if (repo, method) == ("audit", "last"):
            # What head() and entry_at(size - 1) answer, read together.
            size, head = self.db.audit.head()
            return encode([size, head, self.db.audit.entry_at(size - 1) if size else None])
        if (repo, method) == ("checkpoints", "add_at_head_cas"):
            # add_at_head whose compare-and-set failure fails the request (and so
            # the commit it is queued with) instead of answering None: the client
            # queues it with its commit (docs/server.md). Checked as add_at_head.
            if self.db.checkpoints.add_at_head(*a, **kw) is None:
                raise IntegrityError(
                    _t(
                        "the audit log changed while its checkpoint was being signed; nothing "
                        "was stored: try again"
                    )
                )
            return encode(None)
        if (repo, method) == ("records", "fields_all"):
            rid = str(a[0]) if a else ""
            return encode(self.db.records.fields(rid, self.db.records.field_names(rid)))
        if (repo, method) in {("access", "request"), ("access", "requests")}:
            who = txn.user if txn is not None else user
            if who is None:
                raise Refused(400, "malformed", _t("a request is read by a user"))
            return encode(requests_of(self.db, self.roles(who), who, method, a, kw))
        result = getattr(target, method)(*a, **kw)
        if txn is not None and METHODS[repo][method] == WRITE:
            note_done(self.db, txn, repo, method, a, kw)
        if (repo, method) == ("access", "use_grant") and result is True and txn is not None:
            txn.used.add(str(a[0] if a else kw.get("grant_id")))
        return encode(result)

    # -- the witness (_witnessing.py)

    def _witness(self, note: str) -> str | None:
        """Have the HTTP witnesses cosign ``note``, then append it to the witness file;
        why a witness did not cosign (:func:`cosign_and_append`)."""
        return cosign_and_append(
            self.witnesses,
            self.witness_path,
            note,
            lambda old, signed: consistency_proof(self._subtrees, old, signed),
        )

    def _catch_up_witness(self) -> WitnessRead:
        """(DB thread) Copy into this replica's own witness the verified stored
        checkpoints it lacks (:func:`catch_up`); the witness file's notes after."""
        self._refresh()
        after, self._witness_mark, self._witness_held = catch_up(
            self.db,
            self._verified.state,
            self.config.vault_id,
            self.witness_path,
            self._witness_mark,
            self._witness_held,
        )
        return after

    # -- what a client reads instead of files

    async def describe(self, user: str) -> dict[str, Any]:
        """Config, schema, the caller's own sealed key slot and the witness notes."""
        self._check_user(user)
        witness: list[str] | None = None
        if self.own_witness is not None:
            # Between transactions, so no uncommitted checkpoint is copied. A
            # bootstrap is not refused when the wait runs out: it gets the file
            # as it is, and the next bootstrap catches up.
            cond = self._condition()
            async with cond:
                try:
                    await self._wait_free()
                except Refused:
                    logger.warning("the witness was not caught up: a transaction holds the vault")
                else:
                    try:
                        witness = (await self._run(self._catch_up_witness)).notes
                    except ChildVaultError:
                        # A log that no longer verifies, a damaged witness: the
                        # client's own `audit verify` must still get to say so.
                        logger.exception("the witness was not caught up")
        doc = json.loads(self.home.config.read_text(encoding="utf-8"))
        doc.pop("store", None)
        slots = json.loads(self.home.keyslots.read_text(encoding="utf-8"))
        slot = slots.get("slots", {}).get(user)
        if slot is None:
            raise Refused(403, "no_key_slot", _t("{user} has no key slot in this vault", user=user))
        if witness is None:
            # No catch-up (the home's witness, or it did not run): read here.
            witness = _audit.read_witness(self.witness_path)
        return {
            "config": doc,
            "schema": self.home.schema.read_text(encoding="utf-8"),
            "slot": slot,
            "witness": witness,
            # What this server answers: a client uses a newer call only if it is here.
            "methods": sorted(f"{repo}.{m}" for repo, ms in METHODS.items() for m in ms),
        }

    def close(self) -> None:
        """Roll back what is open and close the database."""

        def shut() -> None:
            if self._txn is not None:
                self._end(self._txn, commit=False)
                self._txn = None
            self.db.close()

        with contextlib.suppress(ChildVaultError):
            self._pool.submit(shut).result()
        self._pool.shutdown(wait=True)


__all__ = [
    "PRIVILEGED",
    "ROLE_WRITES",
    "Refused",
    "ScanQuota",
    "VaultHost",
    "unlock_home",
    "unlock_home_as",
]
