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
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import secrets
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, NoReturn, TypeVar

from childvault._i18n import Message, _t, join
from childvault.keys import (
    ChildVaultError,
    ConfigError,
    Identity,
    IntegrityError,
    KeySlots,
    UsageError,
    check_user_name,
)
from childvault.keys._encoding import is_hex_id, unb64
from childvault.server._common import AuthRefusal
from childvault.server._refusals import CHAINED, RefusalLimiter
from childvault.server._release_keys import (
    RowRefused,
    logged_terms,
    open_key,
    seal_key,
    verifies,
)
from childvault.server._witness import WitnessClient, WitnessFailed
from childvault.server._witnessfile import (
    WitnessRead,
    append_missing,
    append_notes,
    notes_digest,
    read_notes,
)
from childvault.vault import _audit, _note
from childvault.vault._action_roles import ROLE_ACTIONS, reserved_roles, role_at
from childvault.vault._backend import (
    REQUEST_BASIS_PREFIX,
    Backend,
    GrantRow,
    NewRecord,
    RequestRow,
    UserRow,
    request_basis_key,
)
from childvault.vault._config import Config, Home
from childvault.vault._merkle import EMPTY_ROOT, SubtreeHashes, leaf_hash
from childvault.vault._policy import RecordState, basis_fields, issued_grant_refusal
from childvault.vault._policy import Refusal as PolicyRefusal
from childvault.vault._record_trust import (
    RECORD_STATEMENT,
    RecordHeads,
    advance_heads,
    latest_statement_seqs,
)
from childvault.vault._registrations import PENDING, STATEMENT, Verified, anchor_of, replay
from childvault.vault._remote._codec import decode, encode, encode_twice
from childvault.vault._remote._methods import (
    ACTIONS_AHEAD,
    BASIS_ACTIONS,
    METHODS,
    SCANNED_ACTIONS,
    SETTINGS_AHEAD,
    WRITE,
)
from childvault.vault._session import log_origin, signer_name
from childvault.vault._statements import Anchor, Envelope, TrustState, unpack_members
from childvault.vault._time import parse_iso
from childvault.vault._wire_messages import message_of

logger = logging.getLogger("childvault.server")
T = TypeVar("T")

#: Roles whose key the server process never keeps (it would sign their statements).
PRIVILEGED = frozenset({"admin", "officer"})
#: Settings no client may read or write: the server's release keys live under it.
SERVER_ONLY = "server/"
#: The largest sealed key slot accepted (a slot of a few custodian generations is ~1 KiB).
MAX_SLOT = 16384
#: A transaction idle longer than this (seconds) is rolled back.
DEFAULT_TXN_IDLE = 30.0
#: A transaction open longer than this (seconds) is rolled back once another
#: client waits for the vault: kept busy with cheap reads, it would otherwise
#: hold the only writer for ever (finding A-7). An honest one (an approval with
#: its witness, an import batch) takes a few seconds.
DEFAULT_TXN_MAX = 60.0
#: How long a request waits for another client's transaction before 503 busy.
DEFAULT_WAIT = 10.0
#: Calls one ``/v1/rpc/batch`` request may carry (the body limit bounds the bytes).
MAX_BATCH = 2000
#: Log entries one ``audit.sync`` answers (as one ``audit.page``).
SYNC_PAGE = 5000
#: Record ids one ``records.get_many`` / ``keyblob_many`` / ``fields_many`` may name.
MAX_MANY = 5000
#: The most log entries one operation-inputs request scans on for the records'
#: latest statements (:meth:`VaultHost._statement_seqs`): a large log is caught
#: up over several requests, never in one long stop of the DB thread.
HEADS_STEP = 20000
#: Log entries one request (a batch or a single call) may read or append, counted
#: from its arguments before anything runs (page sizes, signature ranges, rows
#: appended; a log scan counts :data:`SCAN_COST`): the answer of a batch of
#: reads is built in memory on the one DB thread (finding A-12).
MAX_BATCH_ENTRIES = 20000
#: Other rows one request may name or read the same way (record ids, blind-index
#: tags, records inserted, page limits; a table scan counts :data:`SCAN_COST`).
MAX_BATCH_ROWS = 20000
#: What a scan whose size its arguments do not give counts towards those budgets.
SCAN_COST = 1000
#: Detail members of a log entry naming the statement stored beside it (its digest):
#: a trust statement, one still pending, a record statement.
_NAMING = (STATEMENT, PENDING, RECORD_STATEMENT)
#: The batched record reads (approve, read, record verification: docs/server.md).
_MANY = frozenset(
    {("records", "get_many"), ("records", "keyblob_many"), ("records", "fields_many")}
)

#: The writes an approval is made of, noted for the check at commit
#: (:meth:`VaultHost._stage_issue`, :meth:`VaultHost._check_issued`).
_ISSUING = frozenset(
    {("access", "decide"), ("access", "add_grant"), ("release", "new"), ("audit", "append")}
)

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

_STAFF = {
    ("records", "insert"),
    ("records", "add_index_tags"),
    ("records", "set_import_progress"),
    ("access", "add_request"),
    ("access", "use_grant"),
    ("access", "use_grant_cas"),
    ("access", "refund_use"),
    ("access", "set_grant_cache"),
    ("audit", "append"),
    ("statements", "add"),
    ("statements", "add_members"),
    ("statements", "save_state"),
    ("release", "redeem"),
    ("release", "redeem_at_commit"),
}
_SIGNERS = {
    ("checkpoints", "add"),
    ("checkpoints", "add_at_head"),
    ("checkpoints", "add_at_head_cas"),
    ("meta", "set"),
    ("meta", "delete"),
    ("records", "delete"),
    ("records", "mark_key_destroyed"),
    ("records", "update"),
    ("access", "revoke_grant"),
}
#: Writes allowed per role. Staff write records and requests but cannot decide,
#: revoke, delete or sign checkpoints. Registering users, sharing and rotating
#: the custodian key and disabling users also put key slots (``slots.put``):
#: the server stores a slot only if the transaction's verified entries allow
#: it (:meth:`VaultHost._check_slots`).
ROLE_WRITES: dict[str, set[tuple[str, str]]] = {
    "staff": _STAFF,
    "officer": _STAFF
    | _SIGNERS
    | {
        ("records", "put_field"),
        ("records", "replace_keyblob"),
        ("records", "put_keyblob_if_version"),
        ("records", "drop_index_tags"),
        ("access", "decide"),
        ("access", "decide_cas"),
        ("access", "add_grant"),
        ("release", "new"),
        # keys share and keys rotate (the custodian key's generations and holders).
        ("custodians", "add"),
        ("custodians", "set_state"),
        ("custodians", "add_holder"),
        ("custodians", "delete"),
        ("slots", "put"),
    },
    "admin": _SIGNERS
    | {
        ("audit", "append"),
        ("statements", "add"),
        ("statements", "save_state"),
        # user add --request and user disable.
        ("users", "add"),
        ("slots", "put"),
        # keys renew --approve: stored only if the batch's verified user.renew names
        # the same keys (:meth:`VaultHost._check_renewals`).
        ("users", "set_keys"),
    },
}


class Refused(Exception):
    """A call the server will not run: HTTP status, stable reason code, message."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason
        self.message = message


@dataclass
class _Issued:
    """What a transaction's officer writes issue, checked at commit (findings A-4, A-5):
    a grant row and its release key are stored only with the caller's logged,
    valid approval of the request (:meth:`VaultHost._check_issued`)."""

    #: Grant rows added (``access.add_grant``), by grant id.
    grants: dict[str, GrantRow] = field(default_factory=dict)
    #: Requests that were pending when this transaction decided them: id -> status.
    decided: dict[str, str] = field(default_factory=dict)
    #: The caller's verified ``request.approve`` entries (outcome ok), by grant id.
    logged: dict[str, dict[str, Any]] = field(default_factory=dict)


@dataclass
class _Txn:
    id: str
    user: str
    context: Any
    last: float
    notes: list[str] = field(default_factory=list)
    appended: bool = False
    #: Grants whose use this transaction consumed, and those it logged a read of.
    used: set[str] = field(default_factory=set)
    logged_reads: set[str] = field(default_factory=set)
    #: (key, signed message, signature) of each signature verified as it arrived
    #: (:meth:`VaultHost._check_entries`): the replay at commit does not verify
    #: the same signature again (``replay(checked=...)``).
    checked: set[tuple[bytes, bytes, bytes]] = field(default_factory=set)
    #: The entry bytes found canonical as they arrived: the replay at commit does
    #: not encode those exact bytes again (``replay(canonical=...)``).
    canonical: set[bytes] = field(default_factory=set)
    #: Key slots put in this transaction (name -> sealed text, None: remove),
    #: stored at commit if the verified state allows them.
    slots: dict[str, str | None] = field(default_factory=dict)
    #: ``users.set_keys`` calls (name -> (enc key, sign key)): at commit they must
    #: be the keys the verified state holds after the batch (a key renewal).
    keys_set: dict[str, tuple[bytes, bytes]] = field(default_factory=dict)
    #: Key renewals this transaction approves: name -> entry number of the
    #: person's pending ``user.renew`` request (whose slot the admin installs).
    renewals: dict[str, int] = field(default_factory=dict)
    #: Whether the request running now ends by committing this transaction: only
    #: then may it answer a release key (a rolled-back release count would let
    #: the key out again).
    commits: bool = False
    #: When it began (its lifetime is bounded: :data:`DEFAULT_TXN_MAX`).
    started: float = field(default_factory=time.monotonic)
    #: Grants whose use this transaction gave back, and those whose failed read
    #: (a ``grant.read`` entry with outcome ``error``) it logged.
    refunded: set[str] = field(default_factory=set)
    logged_failures: set[str] = field(default_factory=set)
    #: Entry number -> digests of the statements its entry names (appended in
    #: this transaction): the only ``statements.add`` calls allowed.
    named: dict[int, set[str]] = field(default_factory=dict)
    #: ``statements.add_members``: the members rebuilt and checked by
    #: :meth:`VaultHost._bind_own`, ``(seq, bytes)``, stored by the call itself.
    members: list[tuple[int, bytes]] = field(default_factory=list)
    #: The entries of the ``audit.append`` being checked, decoded once (:meth:`VaultHost._bind`).
    decoded: list[dict[str, Any]] = field(default_factory=list)
    #: Records inserted in this transaction, and (record, field) pairs whose
    #: blind-index tags it dropped (a correction): the only ones it may tag.
    inserted: set[str] = field(default_factory=set)
    #: Requests this transaction added (in the caller's name, :meth:`_bind`).
    requests_added: set[str] = field(default_factory=set)
    retagged: set[tuple[str, str]] = field(default_factory=set)
    #: Grants, decisions and approval entries of this transaction (checked at commit).
    issued: _Issued = field(default_factory=_Issued)
    #: The last replay over this transaction's appends (:meth:`VaultHost._replayed`):
    #: the state it started from, the log's (size, head) it covered, its result.
    replayed: tuple[Verified, tuple[int, bytes | None], Verified] | None = None


def _basis_index_write(repo: str, method: str, a: list[Any], kw: Any) -> bool:
    """Whether the call sets a request's basis index (``meta.set`` of
    :func:`request_basis_key`): the one ``meta`` write a requester makes, for a
    legal-obligation or vital-interests request (bound in ``_bind_own``)."""
    if (repo, method) != ("meta", "set"):
        return False
    key = a[0] if a else kw.get("key")
    return (
        isinstance(key, str)
        and is_hex_id(key[len(REQUEST_BASIS_PREFIX) :])
        and (key.startswith(REQUEST_BASIS_PREFIX))
    )


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


#: Entries of :data:`SCANNED_ACTIONS` a user may append through the server without
#: holding the action's role (:class:`ScanQuota`): at most this many at once ...
SCAN_BURST = 20
#: ... and then this many an hour.
SCAN_PER_HOUR = 20.0


class ScanQuota:
    """How many entries of :data:`SCANNED_ACTIONS` each user may append without the
    action's role: a token bucket per user (issue 12, left alone in session 10).

    Every such entry is read by every later scan of its action (the notice register
    at each approval and read, the rights and incident registers, the settings),
    so appending many made every later scan slower for everyone. A role's holder
    logs their role's entries freely; anyone else may log such an entry for a
    reason (a denied attempt of a role's command, the link and closing of a
    subject report, their own registration or renewal request), a few at a time:
    :data:`SCAN_BURST` at once, then :data:`SCAN_PER_HOUR` an hour, so one user
    adds at most 480 a day to the scans (docs/server.md, "Limits").
    """

    def __init__(
        self,
        *,
        burst: int = SCAN_BURST,
        per_hour: float = SCAN_PER_HOUR,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.burst = int(burst)
        self.per_hour = float(per_hour)
        self.clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def take(self, user: str, count: int) -> bool:
        """Take ``count`` entries of ``user``'s quota: all of them, or none (False)."""
        if count <= 0:
            return True
        now = self.clock()
        with self._lock:
            tokens, at = self._buckets.get(user, (float(self.burst), now))
            tokens = min(float(self.burst), tokens + max(0.0, now - at) * self.per_hour / 3600)
            if tokens < count:
                self._buckets[user] = (tokens, now)
                return False
            self._buckets[user] = (tokens - count, now)
            return True


class VaultHost:
    """The served vault: one connection on one thread, transactions, trust, policy."""

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
        #: Requests waiting for the vault (:meth:`_wait_free`) right now.
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
        self._subtrees = SubtreeHashes(self._leaf_hashes)
        #: What :meth:`_catch_up_witness` has read of the checkpoints table (DB
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
        found = self._verified.state.users.get(user)
        return frozenset(found.roles) if found is not None and found.active else frozenset()

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
        its end (:meth:`finish` kicks again)."""
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
            # cache rules and a batch's ``gen``, :meth:`batch`).
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
        a, kw = self._checked(roles, repo, method, args, kwargs)
        _check_work([(repo, method, a, kw)])
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

    def _checked(
        self, roles: frozenset[str], repo: str, method: str, args: Any, kwargs: Any
    ) -> tuple[list[Any], dict[Any, Any]]:
        """The decoded arguments of one call, once it is known and allowed for ``roles``."""
        kind = METHODS.get(repo, {}).get(method)
        if kind is None:
            raise Refused(
                400,
                "unknown_method",
                _t("no backend method {repo}.{method}", repo=repo, method=method),
            )
        try:
            a = decode(args)
            kw = decode(kwargs)
        except IntegrityError as exc:
            raise Refused(400, "malformed", message_of(exc)) from exc
        if not isinstance(a, list) or not isinstance(kw, dict):
            raise Refused(400, "malformed", _t("args must be a list and kwargs a mapping"))
        if (
            kind == WRITE
            and not any((repo, method) in ROLE_WRITES.get(r, set()) for r in roles)
            and not _basis_index_write(repo, method, a, kw)
        ):
            raise Refused(
                403,
                "role",
                _t(
                    "{roles} may not call {repo}.{method}",
                    roles=join(", ", sorted(roles)),
                    repo=repo,
                    method=method,
                ),
            )
        if (repo, method) in _MANY:
            _check_many(method, a, kw)
        if (repo, method) == ("audit", "sync") and (
            kw or len(a) != 1 or type(a[0]) is not int or a[0] < 0
        ):
            raise Refused(400, "malformed", _t("audit.sync takes one entry number (0 or more)"))
        if (repo, method) in _PAGED and "limit" in kw and not _count(kw["limit"]):
            # Counted in the request's budget as given: SQLite would read LIMIT -1,
            # a float or a numeric text as no or another limit (review RV10-6).
            raise Refused(
                400,
                "malformed",
                _t(
                    "{repo}.{method}: the limit is a number of rows (an integer, 0 or more)",
                    repo=repo,
                    method=method,
                ),
            )
        if (repo, method) == ("audit", "signatures") and not (
            len(a) + len(kw) == 2
            and all(
                _count(a[i] if len(a) > i else kw.get(n)) for i, n in enumerate(("first", "last"))
            )
        ):
            raise Refused(
                400, "malformed", _t("audit.signatures takes two entry numbers (0 or more)")
            )
        if (repo, method) == ("checkpoints", "since") and not (
            len(a) == 1 and not kw and _count(a[0])
        ):
            raise Refused(400, "malformed", _t("checkpoints.since takes one tree size (0 or more)"))
        if (repo, method) == ("audit", "last") and (a or kw):
            raise Refused(400, "malformed", _t("audit.last takes no arguments"))
        if repo == "inputs":
            if (
                kw
                or len(a) not in (1, 2, 3)
                or not is_hex_id(a[0])
                or any(type(flag) is not bool for flag in a[1:])
            ):
                raise Refused(
                    400,
                    "malformed",
                    _t(
                        "inputs.{method} takes one id (32 hex characters) and whether to sync",
                        method=method,
                    ),
                )
            if method == "approval" and "officer" not in roles:
                raise Refused(403, "role", _t("only an officer reads an approval's inputs"))
        return a, kw

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
            (repo, method, *self._checked(roles, repo, method, args, kwargs))
            for repo, method, args, kwargs in calls
        ]
        _check_work(checked)
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
            self._check_refunds(txn)
            checked = self._replayed(txn) if txn.appended else None
            if txn.issued.grants or txn.issued.decided or txn.issued.logged:
                self._check_issued(txn, (checked or self._verified).state)
            renewed: dict[str, str] = {}
            if txn.keys_set or txn.renewals:
                renewed = self._check_renewals(txn, (checked or self._verified).state)
            if txn.slots:
                state = (checked or self._verified).state
                self._check_slots(txn.user, state, txn.slots, renewed)
                self._store_slots(txn.slots)
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
            self._bind(txn, repo, method, a, kw)
            self._bind_own(txn, repo, method, a, kw)
        if repo == "inputs":
            if txn is not None or user is None:
                raise Refused(400, "malformed", _t("inputs are read outside a transaction"))
            fresh, records = len(a) >= 2 and a[1], len(a) == 3 and a[2]
            # Already the call's encoded result (the answers encoded twice: _inputs).
            return self._inputs(user, method, str(a[0]), fresh=fresh, records=records)
        if repo == "release":
            if txn is None:
                raise Refused(400, "malformed", _t("release calls run in a transaction"))
            return encode(self._release(txn, method, a))
        if repo == "slots":
            return encode(self._slots(txn, method, a))
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
            return encode(self._sync(int(a[0])))
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
            return encode(self._requests_of(who, method, a, kw))
        result = getattr(target, method)(*a, **kw)
        if txn is not None and METHODS[repo][method] == WRITE:
            self._note_done(txn, repo, method, a, kw)
        if (repo, method) == ("access", "use_grant") and result is True and txn is not None:
            txn.used.add(str(a[0] if a else kw.get("grant_id")))
        return encode(result)

    def _requests_of(self, user: str, method: str, a: list[Any], kw: Any) -> Any:
        """``access.request`` / ``access.requests`` as ``user`` may read them (finding
        A-11): officers and admins every request; anyone else only their own, as
        the library shows them (docs/decisions.md, "Staff see their own
        requests"). Another's request is refused (403 ``binding``); a list
        leaves others' out. An unknown id answers None, as before."""
        found = getattr(self.db.access, method)(*a, **kw)
        if self.roles(user) & PRIVILEGED:
            return found
        if method == "requests":
            return [r for r in found if r.requester == user]
        if found is not None and found.requester != user:
            raise Refused(
                403,
                "binding",
                _t("access.request: request {id} is not {user}'s", id=found.id, user=user),
            )
        return found

    def _sync(self, start: int) -> list[Any]:
        """The trust sync: ``[size, head hash, rows, signatures]``, read together.

        ``rows`` is one page (at most :data:`SYNC_PAGE` entries) from entry
        ``start`` as ``audit.page`` answers it, ``signatures`` what
        ``audit.signatures`` answers for those rows. Exactly what the three
        reads answer one after another, in one snapshot: the client verifies
        every row and signature as before (docs/server.md).
        """
        size, head = self.db.audit.head()
        rows = next(iter(self.db.audit.pages(start, batch=SYNC_PAGE)), [])
        out = [self.db.audit.row(r) for r in rows]
        sigs = self.db.audit.signatures(out[0][0], out[-1][0]) if out else {}
        return [size, head, [list(r) for r in out], sigs]

    def _inputs(
        self,
        user: str,
        method: str,
        ident: str,
        *,
        fresh: bool = False,
        records: bool = False,
    ) -> list[list[Any]]:
        """An operation's inputs (docs/server.md "Operation inputs"): the answers of
        the reads an approval of request ``ident`` (``approval``) or a read with
        grant ``ident`` (``read``) makes, as ``[repo, method, args, kwargs,
        result]`` in the wire encoding, read together in one snapshot. Returned
        as the call's encoded result (each of those encoded twice,
        :func:`encode_twice`: the list is not encoded again).

        Each answer is exactly what that read alone answers (the client keeps
        them as it keeps read-ahead answers and verifies every row it uses as
        before); nothing is answered that the caller could not read call by
        call. A read's inputs are its grant's requester's only: another user's
        grant id is refused (403), an unknown one answers the grant as None.

        ``fresh`` (a session that has not verified the log yet): also the
        caller's own saved trust state and record heads, the entry the saved
        state ends at, and the trust sync from there (``audit.sync``), which
        the session reads first (it checks their signatures with its own key).
        ``records`` (a session that has not scanned the records yet): its saved
        record heads. The sync starts at the older of the two points when one
        page from there reaches the head, so that it also serves the record scan.
        """
        out: list[list[Any]] = []

        def put(repo: str, name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
            result = getattr(getattr(self.db, repo), name)(*args, **kwargs)
            out.append(
                [
                    repo,
                    name,
                    encode_twice(list(args)),
                    encode_twice(dict(kwargs)),
                    encode_twice(result),
                ]
            )
            return result

        if fresh or records:
            # The points a session resumes from: its trust state (fresh) and its
            # record heads (fresh, or a session that has not scanned records
            # yet, ``records``); the sync from the older, which serves both.
            points = []
            if fresh:
                saved = put("statements", "saved_state", (user,), {})
                if saved is not None and saved[0] > 0:
                    put("audit", "entry_at", (saved[0] - 1,), {})
                    points.append(saved[0] - 1)
            heads = put("statements", "saved_state", (user + "#records",), {})
            size = self.db.audit.head()[0]
            # The record scan starts one entry before its saved point (none saved:
            # at the first entry).
            scan = max(heads[0] - 1, 0) if heads is not None else 0
            if (points or records) and size - scan <= SYNC_PAGE:
                # Only if one page from there reaches the head: else the trust
                # sync alone (the record scan pages on as before).
                points.append(scan)
            if points:
                start = min(points)
                synced = encode_twice(self._sync(start))
                out.append(["audit", "sync", encode_twice([start]), encode_twice({}), synced])

        request_id = ident
        if method == "read":
            grant = put("access", "grant", (ident,), {})
            if grant is None:
                return out
            if grant.requester != user:
                raise Refused(403, "role", _t("grant {id} is issued to another user", id=ident))
            request_id = grant.request_id
        req = put("access", "request", (request_id,), {})
        put("meta", "get", (request_basis_key(request_id),), {})
        put("audit", "entries_by_ref", (BASIS_ACTIONS,), {"request": request_id})
        for setting in SETTINGS_AHEAD:
            put("meta", "get", (setting,), {})
        for actions in ACTIONS_AHEAD:
            put("audit", "entries_by_action", (actions,), {})
        if req is not None and 0 < len(req.records) <= MAX_MANY:
            # The list the services pass (record_trust.fetch, the grant check).
            ids = list(dict.fromkeys(req.records))
            for name in ("get_many", "keyblob_many", "fields_many"):
                put("records", name, (ids,), {})
            # Their latest statements, as the client's record check asks for them
            # (latest_statements): only a read ahead; the client verifies each
            # envelope against its own record heads and asks for any that differ.
            seqs = self._statement_seqs(ids)
            if seqs:
                put("statements", "get_many", (seqs,), {})
        if req is not None and method == "approval":
            put("users", "get", (req.requester,), {})
        put("custodians", "all", (), {})
        if method == "approval":
            # The approval's checkpoint: the officer's latest, then the stored
            # checkpoints it does not cover (from the size its note claims; the
            # client verifies the note and asks again if it claims another), or
            # all of them without one. Not every checkpoint: an approval's cost
            # does not grow with them (docs/decisions.md).
            latest = put("checkpoints", "latest_by", (user,), {})
            claimed = _claimed_size(latest[0]) if latest is not None else None
            if claimed is not None:
                put("checkpoints", "since", (claimed,), {})
            else:
                put("checkpoints", "all", (), {})
        return out

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

    def _release(self, txn: _Txn, method: str, a: list[Any]) -> bytes | None:
        """Release after logging: make a grant's release key, or hand it out once per use.

        The key is stored under the serving process's release secret, bound to
        the vault, grant, officer and release count (``_release_keys``); the
        decision reads the grant's signed log entries, never the ``grants``
        row alone (findings A-9, A-10).
        """
        if method == "redeem_at_commit":
            # A read's redemption sent with the commit of its logged use (one
            # request, docs/server.md "Release after logging"): every check of
            # ``redeem``, but a refusal answers None instead of rolling back the
            # use and its log entry (nothing is written before a refusal); the
            # client then asks ``redeem`` alone, which refuses and logs as ever.
            try:
                return self._release(txn, "redeem", a)
            except Refused as exc:
                if exc.reason != "release_refused":
                    raise
                return None
        grant_id = str(a[0]) if a else ""
        if not is_hex_id(grant_id):
            raise Refused(400, "malformed", _t("a grant id is 32 hex characters"))
        if self.release_secret is None:
            raise Refused(
                503, "release_refused", _t("this server holds no release secret (serve --as)")
            )
        secret, vault_id = self.release_secret, self.config.vault_id
        where = SERVER_ONLY + "release/" + grant_id
        stored = self.db.meta.get(where)
        if method == "new":
            if stored is not None:
                raise Refused(
                    409,
                    "release_refused",
                    _t("grant {grant_id} has a release key", grant_id=grant_id),
                )
            key = secrets.token_bytes(32)
            self.db.meta.set(where, seal_key(secret, vault_id, grant_id, txn.user, 0, key))
            return key

        def refuse(why: str) -> NoReturn:
            raise Refused(
                403, "release_refused", _t("grant {grant_id}: {why}", grant_id=grant_id, why=why)
            )

        if not txn.commits:
            # The count below must be committed with the answer that carries the key.
            refuse(_t("a release is answered only in a request that commits it"))
        grant = self.db.access.grant(grant_id)
        if grant is None or stored is None:
            refuse(_t("unknown grant"))
        try:
            held = open_key(secret, vault_id, grant_id, stored)
        except RowRefused as exc:
            refuse(str(exc))
        terms = logged_terms(self.db, self._states(txn), grant_id)
        if isinstance(terms, str):
            refuse(terms)
        if terms.officer != held.officer:
            refuse(_t("the release key was made by another officer"))
        if terms.requester != txn.user:
            refuse(
                _t("issued to {requester}, not {user}", requester=terms.requester, user=txn.user)
            )
        # The row can only add a refusal (it is revoked in the same transaction
        # as the log entry); the log entry is what an insider cannot take back.
        if terms.revoked or grant.revoked_at is not None:
            refuse(_t("revoked"))
        if terms.expires <= datetime.now(UTC):
            refuse(_t("expired"))
        # One release per use the requester logged, up to the uses the officer signed.
        if held.redeemed >= min(terms.reads, terms.max_uses):
            refuse(_t("no logged use left to redeem"))
        after = seal_key(secret, vault_id, grant_id, held.officer, held.redeemed + 1, held.key)
        # Compare-and-set: of two replicas releasing on one count, one wins.
        if not self.db.meta.replace(where, stored, after):
            refuse(_t("released meanwhile; try again"))
        return held.key

    def _states(self, txn: _Txn) -> Callable[[int], TrustState]:
        """Verified trust states by log position, for one release decision in ``txn``.

        Entries past the state this host verified (another replica's commits,
        or this transaction's own appends) are replayed into a copy, once: the
        host's own state only ever moves at a commit (:meth:`_end`), never to
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
        and the commit's check (:meth:`_end`), over the same entries. The result
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

    def _slots(self, txn: _Txn | None, method: str, a: list[Any]) -> Any:
        """``slots.users`` (names only) or ``slots.put`` (staged until commit)."""
        if method == "users":
            return KeySlots(self.home.keyslots).users()
        if txn is None:
            raise Refused(400, "malformed", _t("slots.put runs in a transaction"))
        if len(a) != 2 or not isinstance(a[0], str) or not (a[1] is None or isinstance(a[1], str)):
            raise Refused(400, "malformed", _t("slots.put takes a user name and a sealed slot"))
        name, sealed = a
        try:
            check_user_name(name)
            if sealed is not None:
                if len(sealed) > MAX_SLOT:
                    raise UsageError(_t("the key slot is too large"))
                unb64(sealed)
        except (UsageError, ValueError) as exc:
            raise Refused(
                400, "malformed", _t("slots.put: {error}", error=message_of(exc))
            ) from exc
        txn.slots[name] = sealed
        return None

    def _check_renewals(self, txn: _Txn, state: TrustState) -> dict[str, str]:
        """Key renewals approved in ``txn``, checked against the verified state after it.

        Each ``users.set_keys`` must name the keys the verified state holds
        for that user after the batch (only a verified ``user.renew``, signed
        by the old key, the new key and an admin, changes them). For each
        approval entry, the pending request it names must be the person's own
        ``user.renew`` request entry, signed by their key before the batch, whose
        statement names the keys the state now holds. Returns name -> the
        sealed slot that request carries: the only slot an admin may install
        for the renewed user (:meth:`_check_slots`). Anything else: 403
        ``binding``, nothing stored.
        """

        def refuse(name: str, why: Message) -> NoReturn:
            raise Refused(
                403, "binding", _t("the key renewal of {name}: {why}", name=name, why=why)
            )

        for name, (enc, sign) in sorted(txn.keys_set.items()):
            after = state.users.get(name)
            if after is None or (after.enc_key, after.sign_key) != (enc, sign):
                refuse(name, _t("users.set_keys names keys no verified user.renew gave"))
        renewed: dict[str, str] = {}
        for name, seq in sorted(txn.renewals.items()):
            before = self._verified.state.users.get(name)
            after = state.users.get(name)
            found = self.db.audit.entry_at(seq)
            stored = self.db.statements.get(seq)
            if before is None or after is None or found is None or stored is None:
                refuse(name, _t("no pending request at entry {seq}", seq=seq))
            entry, digest = found
            obj = _audit.decode_entry(entry)
            detail = obj.get("detail")
            sig = self.db.audit.signatures(seq, seq).get(seq)
            if (
                not isinstance(detail, dict)
                or obj.get("actor") != name
                or obj.get("action") != "user.renew"
                or obj.get("outcome") != "ok"
                or detail.get("phase") != "request"
                or not isinstance(detail.get("slot"), str)
                or leaf_hash(entry) != digest
                or not isinstance(sig, bytes)
                or not verifies(before.sign_key, _audit.entry_message(digest), sig)
            ):
                refuse(name, _t("entry {seq} is not their own signed request", seq=seq))
            try:
                pending = Envelope.from_bytes(stored)
                statement = pending.statement()
            except (IntegrityError, ValueError) as exc:
                refuse(
                    name,
                    _t("the statement of entry {seq} is malformed ({error})", seq=seq, error=exc),
                )
            if (
                detail.get(PENDING) != pending.digest()
                or statement.get("user") != name
                or statement.get("sign_key") != after.sign_key.hex()
                or statement.get("enc_key") != after.enc_key.hex()
                or after.sign_key == before.sign_key
            ):
                refuse(
                    name,
                    _t("the request at entry {seq} names other keys than the approval", seq=seq),
                )
            renewed[name] = str(detail["slot"])
        return renewed

    def _check_slots(
        self,
        user: str,
        state: TrustState,
        slots: dict[str, str | None],
        renewed: dict[str, str] | None = None,
    ) -> None:
        """Each staged slot must be one the verified state (after this batch) allows.

        - one's own slot, while active;
        - an admin: a new slot for a user with a row and no slot yet who is not
          disabled (an enrolment; an officer's registration may still wait for an
          officer's countersignature), or removing a disabled user's slot;
        - an officer holding the current custodian key (verified): the slot of an
          active user (keys share, keys rotate), of a user still pending (rotation
          strips the custodian key from every slot), or removing a disabled one's;
        - an admin approving a key renewal: exactly the slot the person's own
          signed request carries, sealed by them to their new key (``renewed``,
          :meth:`_check_renewals`).

        Anything else is refused and nothing of the transaction is stored.
        """
        renewed = renewed or {}
        have = set(KeySlots(self.home.keyslots).users())
        me = state.users.get(user)
        roles = set(me.roles) if me is not None and me.active else set()
        current = state.current_custodian()
        holder = (
            "officer" in roles and current is not None and user in state.active_holders(current[0])
        )
        for name, sealed in sorted(slots.items()):
            active = state.is_active(name)
            if sealed is None:
                ok = ("admin" in roles or holder) and not active
            elif name in renewed:
                ok = "admin" in roles and active and sealed == renewed[name]
            elif name == user:
                ok = active
            else:
                pending = name not in state.users and self.db.users.get(name) is not None
                ok = (holder and (active or (pending and name in have))) or (
                    "admin" in roles and name not in have and (active or pending)
                )
            if not ok:
                raise Refused(
                    403,
                    "binding",
                    _t(
                        "slots.put: {user} may not write the key slot of {name}",
                        user=user,
                        name=name,
                    ),
                )

    def _store_slots(self, slots: dict[str, str | None]) -> None:
        """Write checked slots into the home's key-slot file (before the database commits:
        a failure here rolls the transaction back)."""
        file = KeySlots(self.home.keyslots)
        for name, sealed in sorted(slots.items()):
            file.install(name, self.config.vault_id, sealed)

    def _bind(self, txn: _Txn, repo: str, method: str, a: list[Any], kw: Any) -> None:
        """Writes that name who acted must name the caller; entries must be theirs."""
        user = txn.user

        def arg(index: int, name: str) -> Any:
            return a[index] if len(a) > index else kw.get(name)

        def must(ok: bool, what: str) -> None:
            if not ok:
                raise Refused(
                    403,
                    "binding",
                    _t(
                        "{repo}.{method}: {what} must be {user}",
                        repo=repo,
                        method=method,
                        what=what,
                        user=user,
                    ),
                )

        if (repo, method) == ("access", "add_request"):
            req = arg(0, "req")
            must(isinstance(req, RequestRow) and req.requester == user, _t("the requester"))
        elif (repo, method) == ("access", "add_grant"):
            grant = arg(0, "grant")
            must(isinstance(grant, GrantRow) and grant.officer == user, _t("the officer"))
        elif (repo, method) in {
            ("access", "decide"),
            ("access", "revoke_grant"),
            ("records", "delete"),
        }:
            must(kw.get("by") == user, "by")
        elif (repo, method) == ("users", "add"):
            row = arg(0, "user")
            must(isinstance(row, UserRow) and row.created_by == user, "created_by")
        elif (repo, method) == ("records", "insert"):
            rows = arg(0, "records")
            must(
                isinstance(rows, list | tuple)
                and all(isinstance(r, NewRecord) and r.row.created_by == user for r in rows),
                "created_by",
            )
        elif (repo, method) == ("statements", "save_state"):
            # A verifier saves its trust state and, beside it, its verified
            # record heads (``NAME#records``, _record_trust.py) and its known
            # Merkle tree (``NAME#tree``, _registrations.py): all its own.
            must(
                arg(0, "verifier") in (user, user + "#records", user + "#tree"), _t("the verifier")
            )
        elif repo == "checkpoints":
            must(arg(3, "signer") == user, _t("the signer"))
            note = str(arg(2, "note"))
            state = self._verified.state.users[user]
            name = signer_name(self.config.vault_id, user)
            try:
                cp, _ = _note.verify_note(note, {name: state.sign_key})
            except IntegrityError as exc:
                raise Refused(
                    403,
                    "unverified",
                    _t("the checkpoint note does not verify: {error}", error=message_of(exc)),
                ) from exc
            if cp.origin != log_origin(self.config.vault_id):
                raise Refused(403, "unverified", _t("the checkpoint names another log"))
            self._check_checkpoint_root(cp, arg(0, "size"), arg(1, "root"))
            txn.notes.append(note)
        elif (repo, method) == ("users", "set_keys"):
            name, enc, sign = arg(0, "name"), arg(1, "enc_key"), arg(2, "sign_key")
            if not (isinstance(name, str) and isinstance(enc, bytes) and isinstance(sign, bytes)):
                raise Refused(400, "malformed", _t("users.set_keys takes a name and two keys"))
            txn.keys_set[name] = (enc, sign)
        elif (repo, method) == ("audit", "append"):
            # Each entry decoded once, here: _bind_own and _note_done read the same objects.
            txn.decoded = self._check_entries(user, arg(0, "rows"), txn.checked, txn.canonical)
            txn.appended = True
            for obj in txn.decoded:
                # A key renewal's approval names the person's pending request: its
                # slot is the one the admin may install (checked at commit).
                detail = obj.get("detail")
                if (
                    obj.get("action") == "user.renew"
                    and isinstance(detail, dict)
                    and detail.get("phase") == "approve"
                ):
                    pending = detail.get("pending")
                    if type(pending) is not int or not isinstance(detail.get("user"), str):
                        raise Refused(
                            400, "malformed", _t("a user.renew approval names no request")
                        )
                    txn.renewals[str(detail["user"])] = pending
        if (repo, method) in _ISSUING:
            self._stage_issue(txn, repo, method, arg)

    # -- an approval: its grant, release key and entry together (findings A-4, A-5)

    def _stage_issue(
        self, txn: _Txn, repo: str, method: str, arg: Callable[[int, str], Any]
    ) -> None:
        """Note what an approval's write issues (after :meth:`_bind` checked who acted).

        ``access.decide`` counts only for a request still pending (a decided one is
        not decided again); ``release.new`` is refused unless this transaction added
        the grant row first (409 ``unverified``, before any key is made); the
        caller's ``request.approve`` entries (verified by :meth:`_check_entries`)
        are kept for the match at commit (:meth:`_check_issued`).
        """
        issued = txn.issued
        if (repo, method) == ("access", "decide"):
            request_id = arg(0, "request_id")
            req = self.db.access.request(request_id) if isinstance(request_id, str) else None
            if req is not None and req.status == "pending":
                issued.decided.setdefault(req.id, str(arg(1, "status")))
        elif (repo, method) == ("access", "add_grant"):
            grant = arg(0, "grant")
            if grant.id in issued.grants:
                raise Refused(
                    409, "unverified", _t("grant {grant_id} is added twice", grant_id=grant.id)
                )
            issued.grants[grant.id] = grant
        elif (repo, method) == ("release", "new"):
            grant_id = arg(0, "grant_id")
            if grant_id not in issued.grants:
                raise Refused(
                    409,
                    "unverified",
                    _t(
                        "a release key is made only for a grant this transaction adds: {grant_id}",
                        grant_id=str(grant_id),
                    ),
                )
        else:
            # The entries as _check_entries decoded them, once (an import's 500 a batch).
            for row, obj in zip(arg(0, "rows"), txn.decoded, strict=True):
                if (obj.get("action"), obj.get("outcome")) == ("request.approve", "ok"):
                    grant_id = obj.get("grant")
                    if not isinstance(grant_id, str) or grant_id in issued.logged:
                        raise Refused(
                            409,
                            "unverified",
                            _t("log entry {seq} approves no grant, or one twice", seq=row[0]),
                        )
                    issued.logged[grant_id] = obj

    def _check_issued(self, txn: _Txn, state: TrustState) -> None:
        """At commit: every grant, approval decision and approval entry matched.

        Each grant row added must have the caller's verified ``request.approve``
        entry naming its request and it, and a decision ``approved`` of that
        request made in this transaction while it was pending; the grant names
        the request's requester and the caller; the entry names the request's
        records, fields and purpose, and the grant's expiry and uses. Each
        ``approved`` decision and each approval entry has its grant. Otherwise
        IntegrityError (409 ``unverified``, nothing stored). Then the approval
        rules the server can decide (:func:`_policy.issued_grant_refusal`, the
        settings from the verified ``state``): 403 ``policy``.
        """
        issued = txn.issued

        def fail(grant_id: str, why: str) -> NoReturn:
            raise IntegrityError(_t("grant {grant_id}: {why}", grant_id=grant_id, why=why))

        for grant_id in sorted(set(issued.logged) - set(issued.grants)):
            fail(grant_id, _t("an approval entry names a grant this transaction does not add"))
        approved = {r for r, status in issued.decided.items() if status == "approved"}
        granted = {g.request_id for g in issued.grants.values()}
        for request_id in sorted(approved - granted):
            raise IntegrityError(
                _t("request {request_id} is approved without a grant", request_id=request_id)
            )
        if len(granted) != len(issued.grants):
            fail(sorted(issued.grants)[0], _t("one approval issues one grant"))
        for grant in issued.grants.values():
            entry = issued.logged.get(grant.id)
            req = self.db.access.request(grant.request_id)
            if entry is None or entry.get("request") != grant.request_id:
                fail(grant.id, _t("no logged approval of its request in this transaction"))
            if grant.request_id not in approved or req is None or req.status != "approved":
                fail(grant.id, _t("its request was not approved in this transaction"))
            detail = entry.get("detail")
            if (
                (grant.officer, grant.requester) != (txn.user, req.requester)
                or req.decided_by != txn.user
                or (entry.get("records"), entry.get("fields"), entry.get("purpose"))
                != (list(req.records), list(req.fields), req.purpose)
                or not isinstance(detail, dict)
                or (detail.get("expires"), detail.get("uses")) != (grant.expires_at, grant.max_uses)
            ):
                fail(grant.id, _t("the grant, its request and its approval entry differ"))
            refusal = self._grant_policy(req, grant, state)
            if refusal is not None:
                raise Refused(
                    403,
                    "policy",
                    _t("grant {grant_id}: {why}", grant_id=grant.id, why=refusal.message),
                )

    def _grant_policy(
        self, req: RequestRow, grant: GrantRow, state: TrustState
    ) -> PolicyRefusal | None:
        """:func:`_policy.issued_grant_refusal` of ``grant``, from the server's rows: the
        verified settings, the request's logged basis and co-signers, the record rows."""

        def logged(action: str) -> list[dict[str, Any]]:
            # Committed entries: each replayed (chain, signatures) before its commit.
            out = []
            for raw in self.db.audit.entries_by_ref((action,), request=req.id):
                doc = json.loads(raw)
                if (doc.get("request"), doc.get("action"), doc.get("outcome")) == (
                    req.id,
                    action,
                    "ok",
                ):
                    out.append(doc)
            return out

        # The requester's own entry: any user may log a request.create in their own
        # name naming another's request, and the first one no longer decides (FX-2).
        created = [doc for doc in logged("request.create") if doc.get("actor") == req.requester]
        detail = created[0].get("detail") if created else None
        basis = str(detail.get("basis", "consent")) if isinstance(detail, dict) else "consent"
        ids = list(dict.fromkeys(req.records))
        rows = self.db.records.get_many(ids) if ids else {}
        blobs = self.db.records.keyblob_many(ids) if ids else {}
        schema = self._schema()
        try:
            issued, expires = parse_iso(grant.issued_at), parse_iso(grant.expires_at)
        except (TypeError, ValueError) as exc:
            raise IntegrityError(
                _t("grant {grant_id}: its times are malformed", grant_id=grant.id)
            ) from exc
        return issued_grant_refusal(
            req,
            grant,
            issued=issued,
            expires=expires,
            now=datetime.now(UTC),
            max_ttl=timedelta(seconds=int(state.setting("max_ttl_s"))),
            max_uses=int(state.setting("max_uses")),
            max_records=int(state.setting("max_records")),
            records=[RecordState(r, rows.get(r), r in blobs) for r in ids],
            allowed=basis_fields(
                basis, {name: rt.fields_for(req.purpose) for name, rt in schema.types.items()}
            ),
            basis=basis,
            # An officer's only: any user may append an entry of any action in their
            # own name, so a staff member's request.cosign is no second officer.
            cosigners=[
                str(doc.get("actor"))
                for doc in logged("request.cosign")
                if role_at(state, doc.get("actor"), "officer", doc.get("seq"), mode="was_active")
            ],
        )

    def _schema(self) -> Any:
        """The served home's schema (loaded once; the purposes' field lists)."""
        if self._loaded_schema is None:
            from childvault.vault._schema import Schema

            self._loaded_schema = Schema.load(self.home.schema)
        return self._loaded_schema

    # -- a checkpoint: over the log's own root (finding A-6)

    def _check_checkpoint_root(self, cp: _note.Checkpoint, size: Any, root: Any) -> None:
        """The call's ``size`` and ``root`` are the note's, and the note's root is the
        log's Merkle root at that size: the committed log's cached subtree hashes and
        the leaves appended in this transaction (read on this connection). Else 409
        ``unverified``; nothing is stored or appended to the witness."""
        if size != cp.size or root != cp.root:
            raise Refused(
                409, "unverified", _t("the checkpoint's size and root are not its note's")
            )
        have, _ = self.db.audit.head()
        if cp.size > have:
            raise Refused(
                409,
                "unverified",
                _t(
                    "the checkpoint covers {size} entries; the log has {have}",
                    size=cp.size,
                    have=have,
                ),
            )
        # Only committed leaves are cached: a rolled-back append must not stay in the cache.
        self._subtrees.extend_to(min(cp.size, self._verified.size))
        actual = self._subtrees.subtree(0, cp.size) if cp.size else EMPTY_ROOT
        if actual != cp.root:
            raise Refused(
                409,
                "unverified",
                _t("the checkpoint's root is not the log's root at {size} entries", size=cp.size),
            )

    def _bind_own(self, txn: _Txn, repo: str, method: str, a: list[Any], kw: Any) -> None:
        """Writes a staff member may make only on their own objects (findings A-1,
        A-2, A-3, A-8 and the blind index), after :meth:`_bind`:

        - a grant's use, refund and cache: the grant's requester only (a missing
          grant is refused); a refund also needs its failed read logged in the
          same transaction (checked at commit, :meth:`_check_refunds`);
        - a statement: only beside an entry appended earlier in this transaction
          that names exactly that envelope;
        - blind-index tags: only of records inserted in this transaction, or of
          a record's field whose tags it dropped (a correction).

        Refused: 403 ``binding`` (400 ``malformed`` for arguments of no shape).
        """
        user = txn.user

        def arg(index: int, name: str) -> Any:
            return a[index] if len(a) > index else kw.get(name)

        def refuse(what: str) -> NoReturn:
            raise Refused(
                403,
                "binding",
                _t("{repo}.{method}: {what}", repo=repo, method=method, what=what),
            )

        if (repo, method) in {
            ("access", "use_grant"),
            ("access", "refund_use"),
            ("access", "set_grant_cache"),
        }:
            grant_id = arg(0, "grant_id")
            if not is_hex_id(grant_id):
                raise Refused(400, "malformed", _t("a grant id is 32 hex characters"))
            requester = self._requester_of(grant_id)
            if requester is None:
                refuse(_t("no grant {grant_id}", grant_id=grant_id))
            if requester != user:
                refuse(
                    _t(
                        "grant {grant_id} is issued to {requester}, not {user}",
                        grant_id=grant_id,
                        requester=requester,
                        user=user,
                    )
                )
            if method == "refund_use":
                txn.refunded.add(grant_id)
        elif (repo, method) == ("statements", "add"):
            seq, envelope = arg(0, "seq"), arg(1, "envelope")
            if type(seq) is not int or not isinstance(envelope, bytes):
                raise Refused(
                    400, "malformed", _t("statements.add takes an entry number and an envelope")
                )
            if hashlib.sha256(envelope).hexdigest() not in txn.named.get(seq, ()):
                refuse(
                    _t(
                        "entry {seq} is not appended in this transaction naming this statement",
                        seq=seq,
                    )
                )
        elif (repo, method) == ("statements", "add_members"):
            # One batch statement's members, its envelope sent once: each member's
            # bytes are rebuilt here and must be what its entry names, as for add.
            seqs = arg(0, "seqs")
            try:
                members = unpack_members(
                    arg(1, "envelope"), arg(2, "indexes"), arg(3, "lengths"), arg(4, "proofs")
                )
            except IntegrityError as exc:
                raise Refused(400, "malformed", message_of(exc)) from exc
            if not (
                isinstance(seqs, list)
                and len(seqs) == len(members)
                and all(type(seq) is int for seq in seqs)
            ):
                raise Refused(
                    400, "malformed", _t("statements.add_members takes one entry number per member")
                )
            staged = []
            for seq, member in zip(seqs, members, strict=True):
                data = member.to_bytes()
                if hashlib.sha256(data).hexdigest() not in txn.named.get(seq, ()):
                    refuse(
                        _t(
                            "entry {seq} is not appended in this transaction naming this statement",
                            seq=seq,
                        )
                    )
                staged.append((seq, data))
            txn.members = staged
        elif _basis_index_write(repo, method, a, kw):
            # The basis index of a request (an index only: readers check it against
            # the logged request.create): written with the request it indexes.
            request_id = str(arg(0, "key"))[len(REQUEST_BASIS_PREFIX) :]
            if request_id not in txn.requests_added:
                refuse(
                    _t(
                        "request {request_id} is not added in this transaction",
                        request_id=request_id,
                    )
                )
        elif (repo, method) == ("records", "add_index_tags"):
            rows = arg(0, "rows")
            if not isinstance(rows, list | tuple) or not all(
                isinstance(r, list | tuple) and len(r) == 3 for r in rows
            ):
                raise Refused(
                    400, "malformed", _t("records.add_index_tags takes (field, tag, record) rows")
                )
            for name, _tag, record in rows:
                if record not in txn.inserted and (record, name) not in txn.retagged:
                    refuse(
                        _t(
                            "record {record} is neither inserted nor corrected in this transaction",
                            record=record,
                        )
                    )

    def _note_done(self, txn: _Txn, repo: str, method: str, a: list[Any], kw: Any) -> None:
        """Note what a write of ``txn`` made that its later calls may rely on, once it
        succeeded (review RV9-2): a failed call (an id that exists already, a row
        refused) leaves the transaction open, and must not leave its caller the
        rights of what it did not write (another's record's index tags, another's
        request's basis index, a use covered by a read entry refused for its
        signature).

        - ``audit.append``: the grants whose read the rows log (only their
          requester's: finding A-1) or whose failed read (a refund's), and the
          statements each entry names (:meth:`_bind_own`);
        - ``access.add_request``: the request (its basis index);
        - ``records.insert`` / ``drop_index_tags``: the records it may tag.
        """

        def arg(index: int, name: str) -> Any:
            return a[index] if len(a) > index else kw.get(name)

        if (repo, method) == ("audit", "append"):
            # Verified and decoded by _bind (in the caller's name, signed, linked),
            # and stored.
            for row, obj in zip(arg(0, "rows"), txn.decoded, strict=True):
                grant = obj.get("grant")
                if obj.get("action") == "grant.read" and obj.get("outcome") == "ok":
                    # Only the grant's requester reads with it: another's entry
                    # naming the grant covers no use of it (finding A-1).
                    if self._requester_of(grant) == obj.get("actor"):
                        txn.logged_reads.add(str(grant))
                elif obj.get("action") == "grant.read" and obj.get("outcome") == "error":
                    txn.logged_failures.add(str(grant))
                detail = obj.get("detail")
                if isinstance(detail, dict):
                    txn.named[int(row[0])] = {
                        str(detail[k]) for k in _NAMING if isinstance(detail.get(k), str)
                    }
        elif (repo, method) == ("access", "add_request"):
            txn.requests_added.add(arg(0, "req").id)
        elif (repo, method) == ("records", "insert"):
            txn.inserted.update(r.row.id for r in arg(0, "records"))
        elif (repo, method) == ("records", "drop_index_tags"):
            txn.retagged.add((str(arg(0, "record_id")), str(arg(1, "field"))))

    def _requester_of(self, grant_id: object) -> str | None:
        """The requester of grant ``grant_id`` (None: no such grant, or no id)."""
        if not is_hex_id(grant_id):
            return None
        grant = self.db.access.grant(str(grant_id))
        return None if grant is None else grant.requester

    def _check_refunds(self, txn: _Txn) -> None:
        """At commit: each use given back (``refund_use``) must come with the logged
        failed read of that grant (a ``grant.read`` entry with outcome ``error``,
        in the requester's name, in the same transaction), as the library's
        refund writes it (finding A-2)."""
        unlogged = txn.refunded - txn.logged_failures
        if unlogged:
            raise IntegrityError(
                _t(
                    "a use of grant {grant_id} was given back without its failed read entry",
                    grant_id=sorted(unlogged)[0],
                )
            )

    def _check_entries(
        self,
        user: str,
        rows: Any,
        checked: set[tuple[bytes, bytes, bytes]],
        canonical: set[bytes],
    ) -> list[dict[str, Any]]:
        """Each row: in ``user``'s name, signed by their verified key (or in a run
        of theirs closed by their signature in these rows), linked to the head.

        Each verified (key, signed message, signature) is added to ``checked``, each
        entry found canonical to ``canonical``; the reads the rows log are noted once
        they are stored (:meth:`_note_done`).
        Returns each row's decoded entry, in order.
        """
        key = self._verified.state.users[user].sign_key
        seq, prev = self.db.audit.head()
        if not isinstance(rows, list | tuple) or not rows:
            raise Refused(400, "malformed", _t("audit.append needs rows"))
        decoded: list[dict[str, Any]] = []
        runs, last = _audit.RunCheck(), seq + len(rows) - 1
        for row in rows:
            try:
                r_seq, entry, digest, sig = row
                obj = _audit.decode_entry(entry)
            except (TypeError, ValueError) as exc:
                raise Refused(400, "malformed", _t("a log row is malformed")) from exc
            if r_seq != seq or obj.get("seq") != seq:
                raise Refused(
                    409,
                    "unverified",
                    _t("log entry {r_seq} is not the next ({seq})", r_seq=r_seq, seq=seq),
                )
            if obj.get("prev") != (None if prev is None else prev.hex()):
                raise Refused(
                    409, "unverified", _t("log entry {seq} does not link to the head", seq=seq)
                )
            if leaf_hash(entry) != digest:
                raise Refused(
                    409, "unverified", _t("log entry {seq} does not match its hash", seq=seq)
                )
            if not _audit.is_canonical(obj, entry):
                # The library writes canonical bytes only. A member written twice
                # reads as its first value in SQLite's index columns (action, ids,
                # recipient) but as its last everywhere else (review RV9-6).
                raise Refused(
                    409, "unverified", _t("log entry {seq} is not in canonical form", seq=seq)
                )
            canonical.add(entry)
            if obj.get("actor") != user:
                raise Refused(403, "binding", _t("log entry {seq} is in another's name", seq=seq))
            # The run rule (docs/trust.md): unsigned entries wait for the signature
            # closing their run, which this call must hold (its last row at the latest).
            action, bad, good = obj.get("action"), None, None
            if sig is None:
                bad = runs.unsigned(seq, user, key, action)
            else:
                message = runs.message(seq, user, key, action, digest)
                if not isinstance(sig, bytes) or not verifies(key, message, sig):
                    bad = runs.end()
                    bad = seq if bad is None else bad
                else:
                    bad, good = runs.signed(seq, user, key, action), (key, message, sig)
            if bad is None and r_seq == last:
                bad = runs.end()  # the call's last run must be closed in the call
            if bad is not None:
                raise Refused(
                    403,
                    "unverified",
                    _t("log entry {seq} is not signed by {user}", seq=bad, user=user),
                )
            roles = reserved_roles(obj)
            if roles is not None and not roles & self.roles(user):
                # Signed and in their name, yet an action of a role they do not
                # hold: its readers would take it as the role's (review RV2-2).
                raise Refused(
                    403,
                    "role",
                    _t(
                        "log entry {seq}: {action} is logged by a user with the role {roles}",
                        seq=seq,
                        action=str(obj.get("action")),
                        roles=" / ".join(sorted(roles)),
                    ),
                )
            if good is not None:
                checked.add(good)
            decoded.append(obj)
            seq, prev = seq + 1, digest
        self._take_scan_quota(user, decoded)
        return decoded

    def _take_scan_quota(self, user: str, decoded: Sequence[dict[str, Any]]) -> None:
        """Refuse (429 ``rate_limited``) rows holding more entries of a scanned action
        that ``user`` logs without its role than their :class:`ScanQuota` has left;
        nothing of the call is stored."""
        roles = self.roles(user)
        count = sum(
            1
            for obj in decoded
            if obj.get("action") in SCANNED_ACTIONS
            and not ROLE_ACTIONS.get(str(obj.get("action")), frozenset()) & roles
        )
        if not self._scan_quota.take(user, count):
            raise Refused(
                429,
                "rate_limited",
                _t(
                    "{user} logged more than {burst} register, setting or user entries of "
                    "another role's actions in a short time (at most {per_hour:g} an hour): "
                    "try again later",
                    user=user,
                    burst=self._scan_quota.burst,
                    per_hour=self._scan_quota.per_hour,
                ),
            )

    @property
    def witness_path(self) -> Path:
        """The witness file this process appends to and serves."""
        return self.own_witness or self.config.witness_path(self.home)

    def _witness(self, note: str) -> str | None:
        """Have the HTTP witnesses cosign ``note``, then append it to the witness file.

        Returns why a witness did not cosign (None when all did, or none is
        configured). The note goes into the file either way: it is the log's
        own signed checkpoint, and a witness being down must not lose it.
        """
        failure = None
        signed = note

        def proof(old: int) -> list[bytes]:
            return self._proof(old, signed)

        for client in self.witnesses:
            try:
                note = client.cosign(note, proof)
            except (WitnessFailed, IntegrityError, ValueError) as exc:
                failure = message_of(exc)
                logger.error("witness %s did not cosign a checkpoint: %s", client.url, exc)
        path = self.witness_path
        try:
            append_notes(path, [note])
        except OSError:
            # The officer's client fails closed when its own witness step fails;
            # here the row is committed already, so it is logged loudly.
            logger.exception("could not append a checkpoint to the witness %s", path)
        return failure

    def _proof(self, old: int, note: str) -> list[bytes]:
        """The RFC 6962 consistency proof from ``old`` entries to the tree ``note`` signs.

        From the cached subtree hashes (:class:`SubtreeHashes`, on the DB
        thread): the leaves committed since the last proof are read once, then
        O(log n) hashes and at most a few blocks of leaves at the edges. The
        witness checks the proof against the root it holds, so a wrong one
        (say the log rewritten under the cache) only costs a refusal.
        """
        body, _ = _note.parse_note(note)
        size = _note.Checkpoint.parse_body(body).size
        return self._subtrees.consistency_proof(old, size)

    def _leaf_hashes(self, lo: int, hi: int) -> list[bytes]:
        """The committed log's leaf hashes ``lo`` to ``hi`` (exclusive; fewer if it is shorter)."""
        leaves: list[bytes] = []
        for rows in self.db.audit.pages(lo, batch=min(max(hi - lo, 1), 5000)):
            for row in rows:
                seq, _, digest = self.db.audit.row(row)
                if seq >= hi:
                    return leaves
                leaves.append(digest)
            if len(leaves) >= hi - lo:
                break
        return leaves

    def _catch_up_witness(self) -> WitnessRead:
        """(DB thread) Append to this replica's own witness the stored checkpoints it
        lacks: those committed through the other replicas of the database.

        With a witness file per replica each one would otherwise hold only the
        checkpoints of the approvals it served, and a client verifying through
        it would find the log's remembered witnessed size out of its reach.
        Each note is verified first against the key of its signer in the
        verified trust state and must name this log; one that does not is left
        out and logged (verification then names it through the other witness).

        Only the rows above the largest id read before are read (a primary-key
        range), unless the rows up to it are no longer what was read (their
        count or the last one's note changed: a row slipped in below, the table
        was restored) or the witness file no longer begins with the notes it
        held (cut short, replaced): then all once more. docs/decisions.md "A
        connection reads only the checkpoints its witness has not seen".

        Returns the witness file's notes after the catch-up: the file is read
        once, for the check, the append and the describe answer.
        """
        self._refresh()
        seen = read_notes(self.witness_path)
        state = self._verified.state
        origin = log_origin(self.config.vault_id)
        mark = self._witness_mark
        if mark is not None and self.db.checkpoints.through(mark[0]) != mark[1:]:
            logger.warning("the stored checkpoints up to id %d changed: reading them all", mark[0])
            mark = None
        held = self._witness_held
        if mark is not None and (
            held is None
            or len(seen.notes) < held[0]
            or notes_digest(seen.notes[: held[0]]) != held[1]
        ):
            # Cut short or replaced since: refilled from every verified row, as
            # a catch-up always did (docs/scale.md).
            logger.warning("the witness file lacks checkpoints it held: reading them all")
            mark = None
        if mark is None:
            rows = sorted(self.db.checkpoints.all(), key=lambda r: r.id)
        else:
            rows = self.db.checkpoints.after(mark[0])
        if not rows:
            return seen
        notes: list[str] = []
        for row in rows:
            found = state.users.get(row.signer)
            try:
                if found is None:
                    raise IntegrityError(_t("{signer!r} is not a verified user", signer=row.signer))
                name = signer_name(self.config.vault_id, row.signer)
                cp, _ = _note.verify_note(row.note, {name: found.sign_key})
                if cp.origin != origin:
                    raise IntegrityError(_t("it names another log"))
            except IntegrityError as exc:
                logger.warning("stored checkpoint %d is not copied to the witness: %s", row.id, exc)
                continue
            notes.append(row.note)
        try:
            added, after = append_missing(self.witness_path, notes, seen)
        except OSError:
            # The mark stays: the next catch-up reads these rows again.
            logger.exception("could not append checkpoints to the witness %s", self.witness_path)
            return seen
        # Counted from the rows read, not asked again: a row inserted below the
        # mark meanwhile makes the next count differ, so it is read then.
        count = len(rows) + (0 if mark is None else mark[1])
        self._witness_mark = (rows[-1].id, count, rows[-1].note)
        # The whole file as it now begins, not only the notes copied: it holds
        # every verified note up to the mark (append_missing kept those already
        # there), and anything that only appends keeps this prefix.
        self._witness_held = (len(after.notes), notes_digest(after.notes))
        logger.info(
            "witness catch-up: %d stored checkpoint(s) read (%s), %d copied",
            len(rows),
            "all" if mark is None else f"after id {mark[0]}",
            added,
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


def _check_many(method: str, a: list[Any], kw: dict[Any, Any]) -> None:
    """A batched record read names a list of record ids (and, for ``fields_many``,
    field names or None), within :data:`MAX_MANY`; anything else is refused before
    it reaches the database (400 ``malformed``)."""
    allowed = 2 if method == "fields_many" else 1
    ids = a[0] if a else None
    names = a[1] if len(a) > 1 else None
    if (
        kw
        or not 1 <= len(a) <= allowed
        or not isinstance(ids, list | tuple)
        or len(ids) > MAX_MANY
        or not all(isinstance(r, str) and 0 < len(r) <= 64 for r in ids)
        or not (
            names is None
            or (isinstance(names, list | tuple) and all(isinstance(n, str) for n in names))
        )
    ):
        raise Refused(
            400,
            "malformed",
            _t(
                "records.{method} takes a list of at most {n} record ids "
                "and a list of field names (or null)",
                method=method,
                n=MAX_MANY,
            )
            if allowed == 2
            else _t(
                "records.{method} takes a list of at most {n} record ids",
                method=method,
                n=MAX_MANY,
            ),
        )


def _size(value: object) -> int:
    """How many items an argument names (0 for anything but a list)."""
    return len(value) if isinstance(value, list | tuple) else 0


#: Reads of a page whose size is their ``limit`` (counted in :func:`_work`).
_PAGED = frozenset(
    {
        ("records", "page"),
        ("records", "due"),
        ("records", "pending_shreds"),
        ("records", "keyblob_page"),
    }
)


def _claimed_size(note: object) -> int | None:
    """The tree size a checkpoint note claims (unverified: it only chooses which
    stored checkpoints to send ahead), or None if it is not one."""
    try:
        return _note.Checkpoint.parse_body(_note.parse_note(str(note))[0]).size
    except IntegrityError:
        return None


def _count(value: object) -> bool:
    """Whether ``value`` is a count of rows or an entry number: an int, 0 or more."""
    return type(value) is int and value >= 0


def _number(value: object, default: int) -> int:
    """An integer argument (``default`` when absent or not an integer), at least 0."""
    return max(value if type(value) is int else default, 0)


def _work(repo: str, method: str, a: list[Any], kw: dict[Any, Any]) -> tuple[int, int]:
    """(log entries, other rows) one call reads or writes, from its arguments alone.

    An upper bound taken before the call runs: a page counts its page size, a
    signature range its length, a scan whose size its arguments do not give
    :data:`SCAN_COST`; calls of a few rows count nothing (:data:`MAX_BATCH`
    bounds how many there are).
    """

    def arg(index: int, name: str, default: object = None) -> object:
        return a[index] if len(a) > index else kw.get(name, default)

    call = (repo, method)
    if call == ("audit", "page"):
        return min(max(_number(kw.get("batch"), 5000), 1), 5000), 0
    if call == ("audit", "sync"):
        return SYNC_PAGE, 0
    if call == ("audit", "signatures"):
        first, last = arg(0, "first"), arg(1, "last")
        if type(first) is int and type(last) is int:
            return max(last - first + 1, 0), 0
        return 0, 0
    if call == ("audit", "append"):
        return _size(arg(0, "rows")), 0
    if call in {("audit", "entries_by_action"), ("audit", "entries_by_ref")}:
        return SCAN_COST, 0
    if call == ("statements", "get_many"):
        return _size(arg(0, "seqs")), 0
    if call == ("statements", "add_members"):
        # Statement rows, each rebuilt from a few bytes of the body: counted by
        # the longer of its lists, so a pack cannot name more than the budget.
        return 0, max(_size(arg(0, "seqs")), _size(arg(2, "indexes")))
    if call in _MANY:
        return 0, _size(arg(0, "ids"))
    if call == ("records", "insert"):
        return 0, _size(arg(0, "records"))
    if call == ("records", "add_index_tags"):
        return 0, _size(arg(0, "rows"))
    if call == ("records", "find_by_tags"):
        return 0, _size(arg(1, "tags"))
    if call in {("records", "page"), ("records", "due"), ("records", "pending_shreds")}:
        return 0, _number(kw.get("limit"), 1000)
    if call == ("records", "keyblob_page"):
        return 0, _number(kw.get("limit"), 500)
    if call in {("records", "field_names_between"), ("access", "requests")}:
        return 0, SCAN_COST
    if call == ("audit", "entries_with_recipient"):
        return SCAN_COST, 0
    if call in {("checkpoints", "all"), ("checkpoints", "since"), ("access", "live_grants_of")}:
        return 0, SCAN_COST
    if repo == "inputs":
        # At most: its own trust sync (fresh), three log scans, and the three
        # batched reads of the request's records (at most MAX_MANY; their latest
        # statements are no more, and the server's own scan for them is bounded
        # by HEADS_STEP, not by this request's budget).
        syncs = any(flag is True for flag in a[1:3])
        return (SYNC_PAGE if syncs else 0) + 3 * SCAN_COST, 3 * MAX_MANY
    return 0, 0


def _check_scanned(actions: object) -> None:
    """Refuse (400 ``malformed``) a scan of log entries naming an action outside
    :data:`SCANNED_ACTIONS`: a bulk action's entries are a share of the whole
    log, yet the scan counts as one (review RV2-1)."""
    names = list(actions) if isinstance(actions, list | tuple) else [actions]
    bulk = sorted(str(n) for n in names if not (isinstance(n, str) and n in SCANNED_ACTIONS))
    if bulk:
        raise Refused(
            400,
            "malformed",
            _t(
                "audit.entries_by_action: {actions} are not scanned (read them by their index)",
                actions=", ".join(bulk),
            ),
        )


def _check_work(calls: Sequence[tuple[str, str, list[Any], dict[Any, Any]]]) -> None:
    """Refuse (400 ``malformed``) a request whose calls together would read or write
    more than :data:`MAX_BATCH_ENTRIES` log entries or :data:`MAX_BATCH_ROWS` other
    rows (finding A-12), before any of them runs."""
    entries = rows = 0
    for repo, method, a, kw in calls:
        if (repo, method) == ("audit", "entries_by_action"):
            _check_scanned(a[0] if a else kw.get("actions"))
        e, r = _work(repo, method, a, kw)
        entries, rows = entries + e, rows + r
    if entries > MAX_BATCH_ENTRIES or rows > MAX_BATCH_ROWS:
        raise Refused(
            400,
            "malformed",
            _t(
                "too much in one batch: {entries} log entries and {rows} rows "
                "(at most {max_entries} and {max_rows})",
                entries=entries,
                rows=rows,
                max_entries=MAX_BATCH_ENTRIES,
                max_rows=MAX_BATCH_ROWS,
            ),
        )


def _open_backend(home: Home, config: Config, key: bytes) -> Backend:
    from childvault.vault._facade import _open_store

    return _open_store(home, config.store_dsn(home), key)


__all__ = [
    "PRIVILEGED",
    "ROLE_WRITES",
    "Refused",
    "ScanQuota",
    "VaultHost",
    "unlock_home",
    "unlock_home_as",
]
