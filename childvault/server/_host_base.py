"""The state a :class:`~childvault.server.VaultHost` keeps and the helpers over it:
the connection and its thread, the verified trust state, the refusal log. The
host's transactions and calls build on it (_vault.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import secrets
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from childvault._i18n import _t
from childvault.keys import ChildVaultError, ConfigError, Identity
from childvault.server._common import AuthRefusal
from childvault.server._host_common import (
    DEFAULT_TXN_IDLE,
    DEFAULT_TXN_MAX,
    DEFAULT_WAIT,
    HEADS_STEP,
    PRIVILEGED,
    Refused,
    _Txn,
    active_roles,
)
from childvault.server._refusals import CHAINED, RefusalLimiter
from childvault.server._submitted import ScanQuota
from childvault.server._witness import WitnessClient
from childvault.server._witnessing import leaf_hashes
from childvault.vault import _audit
from childvault.vault._backend import Backend
from childvault.vault._config import Config, Home
from childvault.vault._merkle import SubtreeHashes
from childvault.vault._record_trust import RecordHeads, advance_heads, latest_statement_seqs
from childvault.vault._registrations import Verified, replay
from childvault.vault._statements import Anchor, TrustState

logger = logging.getLogger("childvault.server")
T = TypeVar("T")


class _HostBase:
    """The served vault's state: its home, the connection on its one thread, the
    verified trust state and the refusal log (:class:`VaultHost` runs calls on it)."""

    def __init__(
        self,
        home: Path,
        db_key: bytes,
        anchor: Anchor,
        *,
        open_backend: Callable[[Home, Config, bytes], Backend] | None = None,
        txn_idle: float = DEFAULT_TXN_IDLE,
        txn_max: float = DEFAULT_TXN_MAX,
        wait: float = DEFAULT_WAIT,
        signer: Identity | None = None,
        limiter: RefusalLimiter | None = None,
        scan_quota: ScanQuota | None = None,
        witnesses: Sequence[WitnessClient] = (),
        witness: Path | None = None,
        release_secret: bytes | None = None,
    ) -> None:
        self.home = Home(Path(home))
        #: The secret the release keys are stored under (``_release_keys``); None:
        #: ``release.*`` calls are refused (serve always gives one).
        self.release_secret = release_secret
        #: HTTP witnesses that cosign every checkpoint a commit stores (serve --witness-url).
        self.witnesses = tuple(witnesses)
        self.config = Config.load(self.home)
        #: This replica's own witness file (``serve --witness-file``), or None: the
        #: home's configured witness, which every replica on the home appends to.
        self.own_witness = None if witness is None else Path(witness).absolute()
        self.anchor = anchor
        self.txn_idle = txn_idle
        #: The longest a transaction stays open while another client waits.
        self.txn_max = txn_max
        self.wait = wait
        #: Requests waiting for the vault (:meth:`VaultHost._wait_free`) right now.
        self._waiters = 0
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="childvault-db")
        opener = open_backend or _open_backend
        self.db: Backend = self._pool.submit(opener, self.home, self.config, db_key).result()
        self._verified = Verified(TrustState.start(anchor), 0, None)
        #: The records' latest statements over the verified log, kept up as it grows
        #: (DB thread): only to read ahead what approve and read ask (_inputs).
        self._heads = RecordHeads()
        # The log's aligned subtree hashes, computed once on the DB thread as the
        # log grows: a witness's consistency proof then reads O(log n) of them.
        self._subtrees = SubtreeHashes(functools.partial(leaf_hashes, self.db))
        #: What :meth:`VaultHost._catch_up_witness` has read of the checkpoints table (DB
        #: thread): (largest id read, how many rows had an id up to it, that row's
        #: note). None: nothing read yet; the next catch-up reads every row.
        self._witness_mark: tuple[int, int, str] | None = None
        #: How many notes the witness file held after the last catch-up and the
        #: digest of their bodies (:func:`notes_digest`): it must still begin
        #: with them, else it was cut short or replaced. Bounded, unlike the
        #: set of every body held it replaces.
        self._witness_held: tuple[int, bytes] | None = None
        #: The home's schema, loaded at the first approval checked (:meth:`_schema`).
        self._loaded_schema: Any = None
        self._keys: dict[str, tuple[bytes, bool]] = {}
        self._keys_lock = threading.Lock()
        self._txn: _Txn | None = None
        self._cond: asyncio.Condition | None = None
        #: Counts commits: sent with every answer, so a client knows whether what it
        #: read a moment ago may have changed since. It starts at a random number,
        #: so a restarted server does not repeat the numbers it gave before.
        self.generation = secrets.randbits(48)
        self._pool.submit(self._refresh).result()
        #: Signs the ``server.refuse`` entries (None: refusals stay in the refusal log).
        self._signer: Identity | None = None
        self._limiter = limiter or RefusalLimiter()
        #: Scanned entries appended without the action's role, per user (ScanQuota).
        self._scan_quota = scan_quota or ScanQuota()
        self._limiter_lock = threading.Lock()
        if signer is not None:
            self.sign_refusals_as(signer)

    def sign_refusals_as(self, signer: Identity) -> None:
        """Log refusals of verified users as ``server.refuse`` entries signed by ``signer``,
        an active user of the verified state without the admin or officer role (a
        server process must not hold a key that registers, decides or signs
        checkpoints: docs/server.md)."""
        roles = self.roles(signer.name)
        found = self._verified.state.users.get(signer.name)
        if not roles or roles & PRIVILEGED or found is None:
            raise ConfigError(
                _t(
                    "refusals are signed by an active staff-only user, not {name!r}",
                    name=signer.name,
                )
            )
        if found.sign_key != signer.public.signing_key:
            raise ConfigError(
                _t("the identity of {name!r} is not their verified key", name=signer.name)
            )
        self._signer = signer
        self.db.audit.signer = signer

    # -- the key resolver of the signature layer (verified statements only)

    def resolve(self, name: str) -> tuple[bytes, bool] | None:
        """:class:`~childvault.server.KeyResolver`: the verified signing key and whether active."""
        with self._keys_lock:
            return self._keys.get(name)

    def _refresh(self) -> None:
        """Replay the log entries committed since the last time (DB thread)."""
        self._verified = replay(self.db, self._copy())
        users = {
            n: (u.sign_key, u.active and bool(u.roles))
            for n, u in self._verified.state.users.items()
        }
        with self._keys_lock:
            self._keys = users

    def _copy(self) -> Verified:
        # replay() changes the state it is given: a refused batch must leave ours intact.
        v = self._verified
        return Verified(v.state.copy(), v.size, v.head)

    def recorded_witness_keys(self) -> list[str]:
        """The witness keys recorded in the vault: the verified signed ``witness_keys``
        setting (an admin's statement; a ``meta`` row is never read for it)."""
        from childvault.vault._settings import witness_keys

        return witness_keys(self._verified.state.setting("witness_keys"))

    def roles(self, user: str) -> frozenset[str]:
        """The verified roles of an active user (empty if disabled or unknown)."""
        return active_roles(self._verified.state, user)

    # -- refusals of verified users, in the hash-chained log (_refusals.py)

    def log_refusal(self, event: AuthRefusal) -> None:
        """Audit hook: queue a refusal of a verified user for a ``server.refuse`` entry."""
        user = event.claimed_user
        if self._signer is None or user is None or event.reason not in CHAINED:
            return
        if self.resolve(user) is None:
            return  # not a user of the verified state: nothing verified to name
        # The path is percent-decoded: U+0000 (which no log entry may hold,
        # _audit.holds_nul) would keep this refusal, and those logged with it, out.
        what = f"{event.method} {event.path}"[:100].replace("\x00", "\ufffd")
        with self._limiter_lock:
            queued = self._limiter.admit(user, event.reason, what)
        if queued:
            self._kick()

    def _kick(self) -> None:
        """Write queued refusals on the DB thread, after whatever runs there now."""
        if self._limiter.queue:
            with contextlib.suppress(RuntimeError):  # shutting down
                self._pool.submit(self._flush_refusals)

    def _flush_refusals(self) -> None:
        """(DB thread) Append the queued refusals, unless a client's transaction is open:
        its commit checks the entries it appends against the head, so ours wait for
        its end (:meth:`VaultHost.finish` kicks again)."""
        txn = self._txn
        if txn is not None and txn.context is not None:
            return
        with self._limiter_lock:
            refusals = self._limiter.take()
        if not refusals or self._signer is None:
            return
        actor = self._signer.name
        if not self.roles(actor):
            # Disabled since: entries in its name would no longer verify.
            logger.warning("%s is no longer active: refusals stay in the refusal log", actor)
            self._signer = None
            self.db.audit.signer = None
            return
        events = [
            _audit.Event(
                actor,
                "server.refuse",
                "denied",
                detail={
                    "user": r.user,
                    "reason": r.reason,
                    "request": r.what,
                    "suppressed": r.suppressed,
                },
            )
            for r in refusals
        ]
        try:
            with self.db.transaction():
                _audit.append(self.db.audit, events, datetime.now(UTC))
            # A commit like any other: reads made before it may be stale (the
            # cache rules and a batch's ``gen``, :meth:`VaultHost.batch`).
            self.generation += 1
        except ChildVaultError:
            logger.exception("could not log %d refusals in the audit log", len(events))
            with self._limiter_lock:
                self._limiter.put_back(refusals)

    # -- running on the DB thread, in turn

    async def _run(self, fn: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn)

    def _condition(self) -> asyncio.Condition:
        if self._cond is None:
            self._cond = asyncio.Condition()
        return self._cond

    def holds(self, user: str, txn_id: str) -> bool:
        """Whether ``txn_id`` is the open transaction of ``user`` (the rate limit lets
        the requests continuing it through: _routes.py)."""
        txn = self._txn
        return txn is not None and txn.id == txn_id and txn.user == user

    def _own(self, user: str, txn_id: str) -> _Txn:
        txn = self._txn
        if txn is None or txn.id != txn_id or txn.user != user:
            raise Refused(409, "no_transaction", _t("no such open transaction (rolled back?)"))
        return txn

    def _check_user(self, user: str) -> frozenset[str]:
        roles = self.roles(user)
        if not roles:
            raise Refused(
                403, "user_disabled", _t("{user} is not an active user of this vault", user=user)
            )
        return roles

    def _statement_seqs(self, ids: list[str]) -> list[int]:
        """(DB thread) The log positions of the latest statements of records ``ids``
        over the log this host verified (empty if the log does not scan: the
        client then reads them itself, and its checks name what is wrong)."""
        size = self._verified.size
        start = self._heads if self._heads.size <= size else RecordHeads()
        try:
            self._heads = advance_heads(
                self.db, self._verified.state, start, min(size, start.size + HEADS_STEP)
            )
        except (ChildVaultError, ValueError):
            self._heads = RecordHeads()
            return []
        if self._heads.size < size:
            return []  # still catching up (HEADS_STEP): the client reads them itself
        return latest_statement_seqs(self._heads, ids)

    def _states(self, txn: _Txn) -> Callable[[int], TrustState]:
        """Verified trust states by log position, for one release decision in ``txn``.

        Entries past the state this host verified (another replica's commits,
        or this transaction's own appends) are replayed into a copy, once: the
        host's own state only ever moves at a commit (:meth:`VaultHost._end`), never to
        entries that may still be rolled back.
        """
        later: list[TrustState] = []

        def at(seq: int) -> TrustState:
            if seq < self._verified.size:
                return self._verified.state
            if not later:
                try:
                    later.append(self._replayed(txn).state)
                except ChildVaultError:
                    # Entries that do not verify count for nothing (fail closed).
                    later.append(self._verified.state)
            return later[0]

        return at

    def _replayed(self, txn: _Txn) -> Verified:
        """(DB thread) The host's verified state replayed over the log as it is now in
        ``txn``, the signatures and canonical forms ``txn`` checked as its entries
        arrived not checked again (``replay(checked=..., canonical=...)``);
        :class:`IntegrityError` if it does not verify.

        A read's commit asked for it twice: its release decision (:meth:`_states`)
        and the commit's check (:meth:`VaultHost._end`), over the same entries. The result
        is kept on ``txn`` and used again only while the host's state is the
        same object and the log's size and head are what it covered; anything
        appended since (or another state) replays again. A replay that raised
        keeps nothing.
        """
        start, head = self._verified, self.db.audit.head()
        kept = txn.replayed
        if kept is not None and kept[0] is start and kept[1] == head:
            return kept[2]
        done = replay(self.db, self._copy(), checked=txn.checked, canonical=txn.canonical)
        txn.replayed = (start, head, done)
        return done

    def _schema(self) -> Any:
        """The served home's schema (loaded once; the purposes' field lists)."""
        if self._loaded_schema is None:
            from childvault.vault._schema import Schema

            self._loaded_schema = Schema.load(self.home.schema)
        return self._loaded_schema

    @property
    def witness_path(self) -> Path:
        """The witness file this process appends to and serves."""
        return self.own_witness or self.config.witness_path(self.home)


def _open_backend(home: Home, config: Config, key: bytes) -> Backend:
    from childvault.vault._facade import _open_store

    return _open_store(home, config.store_dsn(home), key)
