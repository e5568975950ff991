"""What VaultHost and its collaborators share: the server's limits, the refusal
error, and the state of one client transaction (a module of its own so the
collaborators need not import the host).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from childvault.keys._encoding import is_hex_id
from childvault.vault._backend import REQUEST_BASIS_PREFIX, GrantRow
from childvault.vault._registrations import Verified
from childvault.vault._statements import TrustState

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
    valid approval of the request (:func:`~childvault.server._grants.check_issued`)."""

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
    #: (:func:`~childvault.server._submitted.check_entries`): the replay at commit does not verify
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
    #: :func:`~childvault.server._bindings.bind_own`, ``(seq, bytes)``, stored by the call itself.
    members: list[tuple[int, bytes]] = field(default_factory=list)
    #: The entries of the ``audit.append`` being checked, decoded once (``bind``).
    decoded: list[dict[str, Any]] = field(default_factory=list)
    #: Records inserted in this transaction, and (record, field) pairs whose
    #: blind-index tags it dropped (a correction): the only ones it may tag.
    inserted: set[str] = field(default_factory=set)
    #: Requests this transaction added (in the caller's name, ``bind``).
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
    legal-obligation or vital-interests request (bound in ``bind_own``)."""
    if (repo, method) != ("meta", "set"):
        return False
    key = a[0] if a else kw.get("key")
    return (
        isinstance(key, str)
        and is_hex_id(key[len(REQUEST_BASIS_PREFIX) :])
        and (key.startswith(REQUEST_BASIS_PREFIX))
    )


def active_roles(state: TrustState, user: str) -> frozenset[str]:
    """The roles ``user`` holds in the verified ``state`` (empty if disabled or unknown)."""
    found = state.users.get(user)
    return frozenset(found.roles) if found is not None and found.active else frozenset()
