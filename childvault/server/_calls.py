"""The checks of one client call before anything runs: known method, argument
shapes, the caller's role (:data:`ROLE_WRITES`) and the request's cost in rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from childvault._i18n import _t, join
from childvault.keys import IntegrityError
from childvault.keys._encoding import is_hex_id
from childvault.server._host_common import (
    MAX_BATCH_ENTRIES,
    MAX_BATCH_ROWS,
    MAX_MANY,
    SCAN_COST,
    SYNC_PAGE,
    Refused,
    _basis_index_write,
)
from childvault.vault._remote._codec import decode
from childvault.vault._remote._methods import METHODS, SCANNED_ACTIONS, WRITE
from childvault.vault._wire_messages import message_of

#: The batched record reads (approve, read, record verification: docs/server.md).
_MANY = frozenset(
    {("records", "get_many"), ("records", "keyblob_many"), ("records", "fields_many")}
)


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
#: it (:func:`~childvault.server._submitted.check_slots`).
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
        # the same keys (:func:`~childvault.server._submitted.check_renewals`).
        ("users", "set_keys"),
    },
}


def check_call(
    roles: frozenset[str], repo: str, method: str, args: Any, kwargs: Any
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
        and all(_count(a[i] if len(a) > i else kw.get(n)) for i, n in enumerate(("first", "last")))
    ):
        raise Refused(400, "malformed", _t("audit.signatures takes two entry numbers (0 or more)"))
    if (repo, method) == ("checkpoints", "since") and not (len(a) == 1 and not kw and _count(a[0])):
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


def check_work(calls: Sequence[tuple[str, str, list[Any], dict[Any, Any]]]) -> None:
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
