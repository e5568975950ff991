"""The repositories of both stores: settings, users, custodians, access, audit log, checkpoints."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from typing import Any

from childvault.vault._backend import CheckpointRow, GrantRow, RequestRow, UserRow
from childvault.vault._sql._conn import SqlConnection as Connection
from childvault.vault._sql._conn import as_bytes, marks

_REQUEST_SELECT = (
    "SELECT id, requester, records, fields, purpose, reason, created_at, status, decided_by, "
    "decided_at, decision_reason FROM requests"
)


class Meta:
    """The settings table."""

    def __init__(self, connection: Connection) -> None:
        self._c = connection

    def get(self, key: str) -> str | None:
        """A value of the vault's settings table, or None."""
        row = self._c.q("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def set(self, key: str, value: str) -> None:
        """Set a value in the vault's settings table."""
        self._c.q(
            "INSERT INTO meta (key, value) VALUES (?, ?) "
            "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            (key, value),
        )

    def delete(self, key: str) -> None:
        """Remove a value from the vault's settings table."""
        self._c.q("DELETE FROM meta WHERE key = ?", (key,))

    def replace(self, key: str, old: str, new: str) -> bool:
        """Set ``key`` to ``new`` only if it still holds ``old`` (one conditional UPDATE).

        A compare-and-set: of two writers that read ``old``, one changes the
        row and the other is told (False), whatever isolation or lock the
        caller's transaction has (the release count of ``childvault serve``).
        """
        cur = self._c.q("UPDATE meta SET value = ? WHERE key = ? AND value = ?", (new, key, old))
        return bool(cur.rowcount == 1)


class Users:
    """Registered users."""

    def __init__(self, connection: Connection) -> None:
        self._c = connection

    def add(self, user: UserRow) -> None:
        """Register a user's public keys and roles."""
        self._c.q(
            "INSERT INTO users (name, roles, enc_key, sign_key, created_at, created_by) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            (
                user.name,
                ",".join(user.roles),
                user.enc_key,
                user.sign_key,
                user.created_at,
                user.created_by,
            ),
        )

    def get(self, name: str) -> UserRow | None:
        """A registered user, or None."""
        row = self._c.q(
            "SELECT name, roles, enc_key, sign_key, created_at, created_by FROM users "
            "WHERE name = ?",
            (name,),
        ).fetchone()
        return None if row is None else _user(row)

    def all(self) -> list[UserRow]:
        """All registered users, by name."""
        rows = self._c.q(
            "SELECT name, roles, enc_key, sign_key, created_at, created_by FROM users ORDER BY name"
        ).fetchall()
        return [_user(r) for r in rows]

    def set_keys(self, name: str, enc_key: bytes, sign_key: bytes) -> None:
        """Replace a user's public keys (``keys renew``, after the signed statement)."""
        self._c.q(
            "UPDATE users SET enc_key = ?, sign_key = ? WHERE name = ?",
            (enc_key, sign_key, name),
        )


class Custodians:
    """Custodian public keys and holders (local provider)."""

    def __init__(self, connection: Connection) -> None:
        self._c = connection

    def add(self, generation: int, public_key: bytes, state: str, at: str) -> None:
        """Register a custodian key pair's public half."""
        self._c.q(
            "INSERT INTO custodians (generation, public_key, state, created_at) "
            "VALUES (?, ?, ?, ?)",
            (generation, public_key, state, at),
        )

    def set_state(self, generation: int, state: str) -> None:
        """Mark a custodian generation current, pending or retired."""
        self._c.q("UPDATE custodians SET state = ? WHERE generation = ?", (state, generation))

    def all(self) -> list[tuple[int, bytes, str]]:
        """(generation, public key, state) of every custodian generation."""
        rows = self._c.q(
            "SELECT generation, public_key, state FROM custodians ORDER BY generation"
        ).fetchall()
        return [(int(g), as_bytes(p), str(s)) for g, p, s in rows]

    def add_holder(self, generation: int, officer: str) -> None:
        """Note that ``officer``'s key slot holds the custodian secret of ``generation``.

        Bookkeeping only: the secret itself lives in the key-slot file, outside
        the database, so a copy of the database alone never holds it.
        """
        self._c.q(
            "INSERT INTO custodian_holders (generation, officer) VALUES (?, ?) "
            "ON CONFLICT DO NOTHING",
            (generation, officer),
        )

    def holders(self, generation: int) -> list[str]:
        """Officers holding the custodian secret of ``generation``."""
        rows = self._c.q(
            "SELECT officer FROM custodian_holders WHERE generation = ? ORDER BY officer",
            (generation,),
        ).fetchall()
        return [str(r[0]) for r in rows]

    def delete(self, generation: int) -> None:
        """Forget a custodian generation (its secret is removed from the key slots)."""
        self._c.q("DELETE FROM custodian_holders WHERE generation = ?", (generation,))
        self._c.q("DELETE FROM custodians WHERE generation = ?", (generation,))


class Access:
    """Access requests and grants."""

    def __init__(self, connection: Connection) -> None:
        self._c = connection

    def add_request(self, req: RequestRow) -> None:
        """Store a new access request."""
        self._c.q(
            "INSERT INTO requests (id, requester, records, fields, purpose, reason, created_at, "
            "status) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                req.id,
                req.requester,
                json.dumps(list(req.records)),
                json.dumps(list(req.fields)),
                req.purpose,
                req.reason,
                req.created_at,
                req.status,
            ),
        )

    def request(self, request_id: str) -> RequestRow | None:
        """An access request, or None."""
        row = self._c.q(_REQUEST_SELECT + " WHERE id = ?", (request_id,)).fetchone()
        return None if row is None else _request(row)

    def requests(self, status: str | None = "pending") -> list[RequestRow]:
        """Requests with ``status`` (all if None), oldest first."""
        if status is None:
            rows = self._c.q(_REQUEST_SELECT + " ORDER BY created_at, id").fetchall()
        else:
            rows = self._c.q(
                _REQUEST_SELECT + " WHERE status = ? ORDER BY created_at, id", (status,)
            ).fetchall()
        return [_request(r) for r in rows]

    def decide(self, request_id: str, *, status: str, by: str, at: str, reason: str | None) -> bool:
        """Mark a pending request approved or denied; False if it was not pending."""
        cur = self._c.q(
            "UPDATE requests SET status = ?, decided_by = ?, decided_at = ?, "
            "decision_reason = ? "
            "WHERE id = ? AND status = 'pending'",
            (status, by, at, reason, request_id),
        )
        return bool(cur.rowcount == 1)

    def add_grant(self, grant: GrantRow) -> None:
        """Record an issued grant."""
        self._c.q(
            "INSERT INTO grants (id, request_id, officer, requester, issued_at, expires_at, "
            "max_uses, uses) VALUES (?, ?, ?, ?, ?, ?, ?, 0)",
            (
                grant.id,
                grant.request_id,
                grant.officer,
                grant.requester,
                grant.issued_at,
                grant.expires_at,
                grant.max_uses,
            ),
        )

    def grant(self, grant_id: str) -> GrantRow | None:
        """A grant's server-side state, or None."""
        row = self._c.q(
            "SELECT id, request_id, officer, requester, issued_at, expires_at, max_uses, uses, "
            "revoked_at, revoked_by, cache FROM grants WHERE id = ?",
            (grant_id,),
        ).fetchone()
        if row is None:
            return None
        return GrantRow(
            str(row[0]),
            str(row[1]),
            str(row[2]),
            str(row[3]),
            str(row[4]),
            str(row[5]),
            int(row[6]),
            int(row[7]),
            None if row[8] is None else str(row[8]),
            None if row[9] is None else str(row[9]),
            None if row[10] is None else as_bytes(row[10]),
        )

    def use_grant(self, grant_id: str) -> bool:
        """Consume one use if any is left and the grant is not revoked."""
        cur = self._c.q(
            "UPDATE grants SET uses = uses + 1 WHERE id = ? AND uses < max_uses "
            "AND revoked_at IS NULL",
            (grant_id,),
        )
        return bool(cur.rowcount == 1)

    def refund_use(self, grant_id: str) -> bool:
        """Give back a use consumed by a read that failed before any plaintext."""
        cur = self._c.q(
            "UPDATE grants SET uses = uses - 1 WHERE id = ? AND uses > 0 AND revoked_at IS NULL",
            (grant_id,),
        )
        return bool(cur.rowcount == 1)

    def set_grant_cache(self, grant_id: str, cache: bytes | None) -> None:
        """Keep redeemed key material (sealed to the requester) for later uses."""
        self._c.q("UPDATE grants SET cache = ? WHERE id = ?", (cache, grant_id))

    def revoke_grant(self, grant_id: str, *, at: str, by: str) -> bool:
        """Revoke a grant; False if unknown or already revoked."""
        cur = self._c.q(
            "UPDATE grants SET revoked_at = ?, revoked_by = ?, cache = NULL "
            "WHERE id = ? AND revoked_at IS NULL",
            (at, by, grant_id),
        )
        return bool(cur.rowcount == 1)

    def live_grants_of(self, requester: str) -> list[str]:
        """Ids of ``requester``'s grants that are not revoked."""
        rows = self._c.q(
            "SELECT id FROM grants WHERE requester = ? AND revoked_at IS NULL ORDER BY id",
            (requester,),
        ).fetchall()
        return [str(r[0]) for r in rows]


class AuditLog:
    """The audit log table."""

    def __init__(self, connection: Connection) -> None:
        self._c = connection
        #: The acting user's identity: entries in their name are signed by it.
        self.signer: Any = None

    def signatures(self, first: int, last: int) -> dict[int, bytes]:
        """The actors' signatures of the entries ``first`` to ``last`` (inclusive) that have one."""
        rows = self._c.q(
            "SELECT seq, sig FROM audit WHERE seq BETWEEN ? AND ? AND sig IS NOT NULL",
            (first, last),
        ).fetchall()
        return {int(seq): as_bytes(sig) for seq, sig in rows}

    def head(self) -> tuple[int, bytes | None]:
        """(next sequence number, hash of the last entry or None)."""
        row = self._c.q("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1").fetchone()
        if row is None:
            return 0, None
        return int(row[0]) + 1, as_bytes(row[1])

    def append(self, rows: Sequence[tuple[int, bytes, bytes, bytes | None]]) -> None:
        """Append (seq, entry bytes, entry hash, actor's signature or None) rows."""
        self._c.append("INSERT INTO audit (seq, entry, hash, sig) VALUES (?, ?, ?, ?)", rows)

    def size(self) -> int:
        """Number of log entries (by count, not by the last sequence number)."""
        return int(self._c.q("SELECT count(*) FROM audit").fetchone()[0])

    def entries(self, start: int = 0, *, batch: int = 5000) -> Iterator[tuple[int, bytes, bytes]]:
        """Stream (seq, entry, hash) in sequence order, in pages to keep memory flat."""
        audit_row = self.row
        for rows in self.pages(start, batch=batch):
            for row in rows:
                yield audit_row(row)

    def pages(self, start: int = 0, *, batch: int = 5000) -> Iterator[list[Any]]:
        """The raw (seq, entry, hash) rows from ``start`` in sequence order, a page at a time.

        Unconverted, for ``audit verify``'s bulk checks; pass each row through
        :meth:`row` to get checked types (a column altered to another
        type raises there, when that row is reached).
        """
        after = start - 1
        while True:
            rows = self._c.q(
                "SELECT seq, entry, hash FROM audit WHERE seq > ? ORDER BY seq LIMIT ?",
                (after, batch),
            ).fetchall()
            if not rows:
                return
            yield rows
            after = int(rows[-1][0])

    @staticmethod
    def row(row: Any) -> tuple[int, bytes, bytes]:
        """One raw row of :meth:`pages` as (seq, entry, hash)."""
        seq, entry, digest = row
        return int(seq), as_bytes(entry), as_bytes(digest)

    def entries_by_action(self, actions: Sequence[str]) -> list[bytes]:
        """Entries whose action is one of ``actions``, through the action index.

        The index is derived from the entries; callers still parse each entry
        and check its action (a damaged index can hide an entry, which makes
        the caller's check fail closed, but cannot invent one).
        """
        if not actions:
            return []
        rows = self._c.q(
            f"SELECT entry FROM audit WHERE action IN ({marks(actions)}) ORDER BY seq",  # noqa: S608
            list(actions),
        ).fetchall()
        return [as_bytes(r[0]) for r in rows]

    def entries_by_ref(
        self, actions: Sequence[str], *, request: str | None = None, grant: str | None = None
    ) -> list[bytes]:
        """Entries of ``actions`` naming ``request`` (or ``grant``), through an index.

        The ids are derived from the entry bytes (migration 4), so the lookup
        costs the same for a log of any size. As with :meth:`entries_by_action`,
        callers parse each entry and check what it names.
        """
        if not actions or (request is None) == (grant is None):
            return []
        column, value = ("request_ref", request) if request is not None else ("grant_ref", grant)
        rows = self._c.q(
            f"SELECT entry FROM audit WHERE {column} = ? AND action IN ({marks(actions)}) "  # noqa: S608
            "ORDER BY seq",
            [value, *actions],
        ).fetchall()
        return [as_bytes(r[0]) for r in rows]

    def entries_with_recipient(self, actions: Sequence[str]) -> list[bytes]:
        """Entries of ``actions`` whose detail names a recipient, through an index.

        The recipient is derived from the entry bytes (migration 5), so the
        lookup reads those entries only, not every entry of the actions. As
        with :meth:`entries_by_action`, callers parse each entry and check it.
        """
        if not actions:
            return []
        where = f"recipient_ref IS NOT NULL AND action IN ({marks(actions)})"
        rows = self._c.q(
            f"SELECT entry FROM audit WHERE {where} ORDER BY seq",  # noqa: S608
            list(actions),
        ).fetchall()
        return [as_bytes(r[0]) for r in rows]

    def entry_at(self, seq: int) -> tuple[bytes, bytes] | None:
        """(entry, hash) at ``seq``, or None."""
        row = self._c.q("SELECT entry, hash FROM audit WHERE seq = ?", (seq,)).fetchone()
        return None if row is None else (as_bytes(row[0]), as_bytes(row[1]))


class Checkpoints:
    """Signed checkpoints."""

    def __init__(self, connection: Connection) -> None:
        self._c = connection

    def add(
        self, size: int, root: bytes, note: str, signer: str, at: str, resume_state: bytes
    ) -> int:
        """Store a signed checkpoint with the Merkle state it was signed over; return its id."""
        cur = self._c.q(
            "INSERT INTO checkpoints (size, root, note, signer, created_at, resume_state) "
            "VALUES (?, ?, ?, ?, ?, ?) RETURNING id",
            (size, root, note, signer, at, resume_state),
        )
        row = cur.fetchone()
        assert row is not None  # RETURNING always gives the new row
        return int(row[0])

    def add_at_head(
        self, size: int, root: bytes, note: str, signer: str, at: str, resume_state: bytes
    ) -> int | None:
        """:meth:`add`, only while the log still has exactly ``size`` entries; else None.

        Compare-and-set: a checkpoint signed over ``size`` entries is stored
        only if no entry was appended (or removed) since it was computed. The
        log's sequence numbers are contiguous from 0 (verification checks it),
        so its size is the last one plus one: an index lookup, not a count.
        """
        cur = self._c.q(
            "INSERT INTO checkpoints (size, root, note, signer, created_at, resume_state) "
            "SELECT ?, ?, ?, ?, ?, ? "
            "WHERE (SELECT coalesce(max(seq) + 1, 0) FROM audit) = ? RETURNING id",
            (size, root, note, signer, at, resume_state, size),
        )
        row = cur.fetchone()
        return None if row is None else int(row[0])

    def latest_by(self, signer: str) -> tuple[str, bytes] | None:
        """(note, resume state) of ``signer``'s checkpoint of the largest tree that has one.

        The columns are only claims: the caller verifies the note's signature
        with its own key and the state against the signed root.
        """
        row = self._c.q(
            "SELECT note, resume_state FROM checkpoints "
            "WHERE signer = ? AND length(resume_state) > 0 "
            "ORDER BY size DESC, id DESC LIMIT 1",
            (signer,),
        ).fetchone()
        if row is None or not isinstance(row[0], str) or not isinstance(row[1], bytes):
            return None
        return row[0], row[1]

    def all(self) -> list[CheckpointRow]:
        """Every stored checkpoint, by tree size then id."""
        return self._rows(self._c.q(_CHECKPOINT_ROWS + " ORDER BY size, id").fetchall())

    def since(self, size: int) -> list[CheckpointRow]:
        """The stored checkpoints of trees of ``size`` entries or more, by tree size then id."""
        return self._rows(
            self._c.q(_CHECKPOINT_ROWS + " WHERE size >= ? ORDER BY size, id", (size,)).fetchall()
        )

    def after(self, last_id: int) -> list[CheckpointRow]:
        """The stored checkpoints with an id above ``last_id``, by id (a primary-key range)."""
        return self._rows(
            self._c.q(_CHECKPOINT_ROWS + " WHERE id > ? ORDER BY id", (last_id,)).fetchall()
        )

    def through(self, last_id: int) -> tuple[int, str | None]:
        """(how many stored checkpoints have an id of ``last_id`` or less, the note of
        the one with id ``last_id`` or None): enough to tell the rows below a
        remembered id apart from those another read of :meth:`after` found."""
        count = self._c.q("SELECT count(*) FROM checkpoints WHERE id <= ?", (last_id,)).fetchone()
        row = self._c.q("SELECT note FROM checkpoints WHERE id = ?", (last_id,)).fetchone()
        return int(count[0]) if count else 0, None if row is None else str(row[0])

    @staticmethod
    def _rows(rows: Sequence[Any]) -> list[CheckpointRow]:
        return [
            CheckpointRow(int(i), int(s), as_bytes(r), str(n), str(g), str(c))
            for i, s, r, n, g, c in rows
        ]


_CHECKPOINT_ROWS = "SELECT id, size, root, note, signer, created_at FROM checkpoints"


def _user(row: Sequence[Any]) -> UserRow:
    return UserRow(
        str(row[0]),
        tuple(r for r in str(row[1]).split(",") if r),
        as_bytes(row[2]),
        as_bytes(row[3]),
        str(row[4]),
        str(row[5]),
    )


def _request(row: Sequence[Any]) -> RequestRow:
    return RequestRow(
        str(row[0]),
        str(row[1]),
        tuple(json.loads(row[2])),
        tuple(json.loads(row[3])),
        str(row[4]),
        str(row[5]),
        str(row[6]),
        str(row[7]),
        None if row[8] is None else str(row[8]),
        None if row[9] is None else str(row[9]),
        None if row[10] is None else str(row[10]),
    )


class Statements:
    """Signed statement envelopes (by the seq of their log entry) and saved trust states."""

    def __init__(self, connection: Connection) -> None:
        self._c = connection

    def add(self, seq: int, envelope: bytes) -> None:
        """Keep the envelope carried by the log entry at ``seq``."""
        self._c.q("INSERT INTO statements (seq, envelope) VALUES (?, ?)", (seq, envelope))

    def add_many(self, items: Sequence[tuple[int, bytes]]) -> None:
        """:meth:`add` of each ``(seq, envelope)``, in one statement (an import's batch)."""
        if items:
            self._c.many("INSERT INTO statements (seq, envelope) VALUES (?, ?)", items)

    def get(self, seq: int) -> bytes | None:
        """The envelope of the entry at ``seq``, or None."""
        row = self._c.q("SELECT envelope FROM statements WHERE seq = ?", (seq,)).fetchone()
        return None if row is None else as_bytes(row[0])

    def get_many(self, seqs: Sequence[int]) -> dict[int, bytes]:
        """:meth:`get` of each of ``seqs`` in few statements: ``{seq: envelope}`` for
        those stored (a seq without one is absent, as :meth:`get` gives None).

        Approving or reading many records fetches their statements together:
        one round trip instead of one per record through the server.
        """
        unique = list(dict.fromkeys(int(s) for s in seqs))
        found: dict[int, bytes] = {}
        for start in range(0, len(unique), _IN_CHUNK):
            chunk = unique[start : start + _IN_CHUNK]
            rows = self._c.q(
                f"SELECT seq, envelope FROM statements WHERE seq IN ({marks(chunk)})",  # noqa: S608
                chunk,
            ).fetchall()
            found.update((int(r[0]), as_bytes(r[1])) for r in rows)
        return found

    def save_state(self, verifier: str, size: int, head: bytes, state: bytes, sig: bytes) -> None:
        """Keep ``verifier``'s last verified trust state (replacing the older one)."""
        self._c.q(
            "INSERT INTO trust_states (verifier, size, head, state, sig) "
            "VALUES (?, ?, ?, ?, ?) ON CONFLICT (verifier) DO UPDATE SET "
            "size = EXCLUDED.size, head = EXCLUDED.head, state = EXCLUDED.state, "
            "sig = EXCLUDED.sig",
            (verifier, size, head, state, sig),
        )

    def saved_state(self, verifier: str) -> tuple[int, bytes, bytes, bytes] | None:
        """(size, head, state, sig) last saved by ``verifier``, or None."""
        row = self._c.q(
            "SELECT size, head, state, sig FROM trust_states WHERE verifier = ?", (verifier,)
        ).fetchone()
        if row is None:
            return None
        return int(row[0]), as_bytes(row[1]), as_bytes(row[2]), as_bytes(row[3])


#: Values per ``IN (...)``: well inside SQLite's oldest bound of 999 parameters.
_IN_CHUNK = 500
