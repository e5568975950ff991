"""The bindings of a transaction's writes to its caller: who acted, their own
objects only, and a checkpoint over the log's own root (findings A-1..A-8).
"""

from __future__ import annotations

import hashlib
from typing import Any, NoReturn

from childvault._i18n import _t
from childvault.keys import IntegrityError
from childvault.keys._encoding import is_hex_id
from childvault.server._grants import stage_issue
from childvault.server._host_common import Refused, _basis_index_write, _Txn, active_roles
from childvault.server._submitted import ScanQuota, check_entries
from childvault.vault import _note
from childvault.vault._backend import (
    REQUEST_BASIS_PREFIX,
    Backend,
    GrantRow,
    NewRecord,
    RequestRow,
    UserRow,
)
from childvault.vault._merkle import EMPTY_ROOT, SubtreeHashes
from childvault.vault._record_trust import RECORD_STATEMENT
from childvault.vault._registrations import PENDING, STATEMENT, Verified
from childvault.vault._session import log_origin, signer_name
from childvault.vault._statements import unpack_members
from childvault.vault._wire_messages import message_of

#: Detail members of a log entry naming the statement stored beside it (its digest):
#: a trust statement, one still pending, a record statement.
_NAMING = (STATEMENT, PENDING, RECORD_STATEMENT)
#: The writes an approval is made of, noted for the check at commit
#: (:func:`~childvault.server._grants.stage_issue`,
#: :func:`~childvault.server._grants.check_issued`).
_ISSUING = frozenset(
    {("access", "decide"), ("access", "add_grant"), ("release", "new"), ("audit", "append")}
)


def bind(
    db: Backend,
    txn: _Txn,
    repo: str,
    method: str,
    a: list[Any],
    kw: Any,
    *,
    verified: Verified,
    vault_id: str,
    quota: ScanQuota,
    subtrees: SubtreeHashes,
) -> None:
    """Writes that name who acted must name the caller; entries must be theirs
    (``verified``: the host's verified state, which the caller's key is read from)."""
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
        # Merkle tree (``NAME#tree``, _trust_saved.py): all its own.
        must(arg(0, "verifier") in (user, user + "#records", user + "#tree"), _t("the verifier"))
    elif repo == "checkpoints":
        must(arg(3, "signer") == user, _t("the signer"))
        note = str(arg(2, "note"))
        state = verified.state.users[user]
        name = signer_name(vault_id, user)
        try:
            cp, _ = _note.verify_note(note, {name: state.sign_key})
        except IntegrityError as exc:
            raise Refused(
                403,
                "unverified",
                _t("the checkpoint note does not verify: {error}", error=message_of(exc)),
            ) from exc
        if cp.origin != log_origin(vault_id):
            raise Refused(403, "unverified", _t("the checkpoint names another log"))
        check_checkpoint_root(db, subtrees, verified.size, cp, arg(0, "size"), arg(1, "root"))
        txn.notes.append(note)
    elif (repo, method) == ("users", "set_keys"):
        name, enc, sign = arg(0, "name"), arg(1, "enc_key"), arg(2, "sign_key")
        if not (isinstance(name, str) and isinstance(enc, bytes) and isinstance(sign, bytes)):
            raise Refused(400, "malformed", _t("users.set_keys takes a name and two keys"))
        txn.keys_set[name] = (enc, sign)
    elif (repo, method) == ("audit", "append"):
        # Each entry decoded once, here: bind_own and note_done read the same objects.
        roles = active_roles(verified.state, user)
        txn.decoded = check_entries(
            db, verified.state, roles, quota, user, arg(0, "rows"), txn.checked, txn.canonical
        )
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
                    raise Refused(400, "malformed", _t("a user.renew approval names no request"))
                txn.renewals[str(detail["user"])] = pending
    if (repo, method) in _ISSUING:
        stage_issue(db, txn, repo, method, arg)


def check_checkpoint_root(
    db: Backend,
    subtrees: SubtreeHashes,
    verified_size: int,
    cp: _note.Checkpoint,
    size: Any,
    root: Any,
) -> None:
    """The call's ``size`` and ``root`` are the note's, and the note's root is the
    log's Merkle root at that size: the committed log's cached subtree hashes and
    the leaves appended in this transaction (read on this connection). Else 409
    ``unverified``; nothing is stored or appended to the witness."""
    if size != cp.size or root != cp.root:
        raise Refused(409, "unverified", _t("the checkpoint's size and root are not its note's"))
    have, _ = db.audit.head()
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
    subtrees.extend_to(min(cp.size, verified_size))
    actual = subtrees.subtree(0, cp.size) if cp.size else EMPTY_ROOT
    if actual != cp.root:
        raise Refused(
            409,
            "unverified",
            _t("the checkpoint's root is not the log's root at {size} entries", size=cp.size),
        )


def bind_own(db: Backend, txn: _Txn, repo: str, method: str, a: list[Any], kw: Any) -> None:
    """Writes a staff member may make only on their own objects (findings A-1,
    A-2, A-3, A-8 and the blind index), after :func:`bind`:

    - a grant's use, refund and cache: the grant's requester only (a missing
      grant is refused); a refund also needs its failed read logged in the
      same transaction (checked at commit, :func:`check_refunds`);
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
        requester = requester_of(db, grant_id)
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


def note_done(db: Backend, txn: _Txn, repo: str, method: str, a: list[Any], kw: Any) -> None:
    """Note what a write of ``txn`` made that its later calls may rely on, once it
    succeeded (review RV9-2): a failed call (an id that exists already, a row
    refused) leaves the transaction open, and must not leave its caller the
    rights of what it did not write (another's record's index tags, another's
    request's basis index, a use covered by a read entry refused for its
    signature).

    - ``audit.append``: the grants whose read the rows log (only their
      requester's: finding A-1) or whose failed read (a refund's), and the
      statements each entry names (:func:`bind_own`);
    - ``access.add_request``: the request (its basis index);
    - ``records.insert`` / ``drop_index_tags``: the records it may tag.
    """

    def arg(index: int, name: str) -> Any:
        return a[index] if len(a) > index else kw.get(name)

    if (repo, method) == ("audit", "append"):
        # Verified and decoded by bind (in the caller's name, signed, linked),
        # and stored.
        for row, obj in zip(arg(0, "rows"), txn.decoded, strict=True):
            grant = obj.get("grant")
            if obj.get("action") == "grant.read" and obj.get("outcome") == "ok":
                # Only the grant's requester reads with it: another's entry
                # naming the grant covers no use of it (finding A-1).
                if requester_of(db, grant) == obj.get("actor"):
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


def requester_of(db: Backend, grant_id: object) -> str | None:
    """The requester of grant ``grant_id`` (None: no such grant, or no id)."""
    if not is_hex_id(grant_id):
        return None
    grant = db.access.grant(str(grant_id))
    return None if grant is None else grant.requester


def check_refunds(txn: _Txn) -> None:
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
