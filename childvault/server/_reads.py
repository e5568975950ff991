"""The server's composite reads: the trust sync, an operation's inputs read in one
snapshot, and requests as their reader may see them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from childvault._i18n import _t
from childvault.keys import IntegrityError
from childvault.server._host_common import MAX_MANY, PRIVILEGED, SYNC_PAGE, Refused
from childvault.vault import _note
from childvault.vault._backend import Backend, request_basis_key
from childvault.vault._remote._codec import encode_twice
from childvault.vault._remote._methods import (
    ACTIONS_AHEAD,
    BASIS_ACTIONS,
    GRANT_ACTIONS,
    SETTINGS_AHEAD,
)


def requests_of(
    db: Backend, roles: frozenset[str], user: str, method: str, a: list[Any], kw: Any
) -> Any:
    """``access.request`` / ``access.requests`` as ``user`` may read them (finding
    A-11): officers and admins every request; anyone else only their own, as
    the library shows them (docs/decisions.md, "Staff see their own
    requests"). Another's request is refused (403 ``binding``); a list
    leaves others' out. An unknown id answers None, as before."""
    found = getattr(db.access, method)(*a, **kw)
    if roles & PRIVILEGED:
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


def sync(db: Backend, start: int) -> list[Any]:
    """The trust sync: ``[size, head hash, rows, signatures]``, read together.

    ``rows`` is one page (at most :data:`SYNC_PAGE` entries) from entry
    ``start`` as ``audit.page`` answers it, ``signatures`` what
    ``audit.signatures`` answers for those rows. Exactly what the three
    reads answer one after another, in one snapshot: the client verifies
    every row and signature as before (docs/server.md).
    """
    size, head = db.audit.head()
    rows = next(iter(db.audit.pages(start, batch=SYNC_PAGE)), [])
    out = [db.audit.row(r) for r in rows]
    sigs = db.audit.signatures(out[0][0], out[-1][0]) if out else {}
    return [size, head, [list(r) for r in out], sigs]


def inputs(
    db: Backend,
    user: str,
    method: str,
    ident: str,
    *,
    fresh: bool = False,
    records: bool = False,
    statement_seqs: Callable[[list[str]], list[int]],
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
        result = getattr(getattr(db, repo), name)(*args, **kwargs)
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
        size = db.audit.head()[0]
        # The record scan starts one entry before its saved point (none saved:
        # at the first entry).
        scan = max(heads[0] - 1, 0) if heads is not None else 0
        if (points or records) and size - scan <= SYNC_PAGE:
            # Only if one page from there reaches the head: else the trust
            # sync alone (the record scan pages on as before).
            points.append(scan)
        if points:
            start = min(points)
            synced = encode_twice(sync(db, start))
            out.append(["audit", "sync", encode_twice([start]), encode_twice({}), synced])

    request_id = ident
    if method == "read":
        # The grant's revocations and reads as the log holds them: the read
        # checks them, not only the row's revoked_at and uses
        # (AccessReads._grant_in_log). Looked up before the row: a read that
        # commits in between (its use and its entry commit together) is then in
        # both, so the client cannot take a concurrent read of the same grant for
        # a counter reset by SQL (log spent, row not).
        logged = db.audit.entries_by_ref(GRANT_ACTIONS, grant=ident)
        grant = put("access", "grant", (ident,), {})
        if grant is None:
            return out
        if grant.requester != user:
            raise Refused(403, "role", _t("grant {id} is issued to another user", id=ident))
        out.append(
            [
                "audit",
                "entries_by_ref",
                encode_twice([GRANT_ACTIONS]),
                encode_twice({"grant": ident}),
                encode_twice(logged),
            ]
        )
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
        seqs = statement_seqs(ids)
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
        claimed = claimed_size(latest[0]) if latest is not None else None
        if claimed is not None:
            put("checkpoints", "since", (claimed,), {})
        else:
            put("checkpoints", "all", (), {})
    return out


def claimed_size(note: object) -> int | None:
    """The tree size a checkpoint note claims (unverified: it only chooses which
    stored checkpoints to send ahead), or None if it is not one."""
    try:
        return _note.Checkpoint.parse_body(_note.parse_note(str(note))[0]).size
    except IntegrityError:
        return None
