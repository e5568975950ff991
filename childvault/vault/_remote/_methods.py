"""The backend methods callable over the wire, shared by client and server.

Each is ``(repo, method)`` with the kind of access it needs: ``read`` (any
active user), or ``write`` (run inside a server-side transaction, allowed
per role by the server's policy, :mod:`childvault.server._vault`). Anything
not listed here is refused by the server before it reaches the database.
"""

from __future__ import annotations

from childvault.vault._audit_entry import GRANT_ACTIONS as _GRANT_ACTIONS

READ = "read"
WRITE = "write"

METHODS: dict[str, dict[str, str]] = {
    "meta": {"get": READ, "set": WRITE, "delete": WRITE},
    "users": {"get": READ, "all": READ, "add": WRITE, "set_keys": WRITE},
    "custodians": {
        "all": READ,
        "holders": READ,
        "add": WRITE,
        "set_state": WRITE,
        "add_holder": WRITE,
        "delete": WRITE,
    },
    "records": {
        "get": READ,
        "page": READ,
        "count": READ,
        "due": READ,
        "fields": READ,
        "field_names": READ,
        "field_names_between": READ,
        "keyblob": READ,
        "keyblob_page": READ,
        "tombstone": READ,
        "pending_shreds": READ,
        "find_by_tag": READ,
        "find_by_tags": READ,
        "import_progress": READ,
        # Not a repository method: fields(id, field_names(id)), fetched ahead with a
        # record (the remote backend's read-ahead, docs/server.md).
        "fields_all": READ,
        # Many records at once (approve, read, record verification): with
        # get_many the remote backend reads the other two ahead (docs/server.md).
        "get_many": READ,
        "keyblob_many": READ,
        "fields_many": READ,
        "insert": WRITE,
        "update": WRITE,
        "put_field": WRITE,
        "replace_keyblob": WRITE,
        "put_keyblob_if_version": WRITE,
        "delete": WRITE,
        "mark_key_destroyed": WRITE,
        "add_index_tags": WRITE,
        "drop_index_tags": WRITE,
        "set_import_progress": WRITE,
    },
    "access": {
        "request": READ,
        "requests": READ,
        "grant": READ,
        "live_grants_of": READ,
        "add_request": WRITE,
        "decide": WRITE,
        "add_grant": WRITE,
        "use_grant": WRITE,
        # use_grant and decide whose False fails the request (409) instead of
        # being answered: queued with the commit (docs/server.md).
        "use_grant_cas": WRITE,
        "decide_cas": WRITE,
        "refund_use": WRITE,
        "set_grant_cache": WRITE,
        "revoke_grant": WRITE,
    },
    "audit": {
        "head": READ,
        "signatures": READ,
        "size": READ,
        "page": READ,  # one page of AuditRepo.pages, rows converted
        "entries_by_action": READ,
        "entries_by_ref": READ,
        "entries_with_recipient": READ,
        "entry_at": READ,
        "append": WRITE,
        # Not a repository method: the trust sync, one request for what a
        # verification reads at its start (head, one page from an entry, and
        # that page's signatures: docs/server.md "Trust sync").
        "sync": READ,
        # Not a repository method: head() with the last entry (entry_at(size - 1)),
        # which an append reads one after the other (docs/server.md).
        "last": READ,
    },
    "checkpoints": {
        "latest_by": READ,
        "all": READ,
        # An approval's resumed check reads only the checkpoints of trees at
        # least as large as its officer's latest one (docs/decisions.md).
        "since": READ,
        "add": WRITE,
        "add_at_head": WRITE,
        # add_at_head whose failed compare-and-set fails the request instead of
        # answering None: queued with the commit (docs/server.md).
        "add_at_head_cas": WRITE,
    },
    "statements": {
        "get": READ,
        "get_many": READ,
        "saved_state": READ,
        "add": WRITE,
        # Not a repository method: the members of one batch statement, the
        # envelope sent once (_statements.pack_members); the server rebuilds
        # each member's bytes and stores them as ``add`` would (docs/server.md).
        "add_members": WRITE,
        "save_state": WRITE,
    },
    # Not a repository: release after logging (server mode only, _release.py).
    # redeem_at_commit: a redemption sent with the commit of the read's use,
    # answering None where redeem would refuse (docs/server.md).
    "release": {"new": WRITE, "redeem": WRITE, "redeem_at_commit": WRITE},
    # Not a repository: the server's key-slot file (names, and sealed slots put
    # inside a transaction, stored only if its verified entries allow them: _slots.py).
    "slots": {"users": READ, "put": WRITE},
    # Not a repository: an operation's inputs in one request (docs/server.md
    # "Operation inputs"): the answers of the reads an approval (officers only)
    # or a read with a grant (its requester only) makes, from one snapshot.
    "inputs": {"approval": READ, "read": READ},
}

#: Vault settings that approve, read and request look up one after another (the
#: approval limits, the notices, the legal time zone): read ahead together
#: (none is the server's own).
SETTINGS_AHEAD = (
    "default_ttl_s",
    "max_ttl_s",
    "max_uses",
    "max_records",
    "notice_version",
    "notices",
    "time_zone",
)

#: The witness reach row (``_svc_audit.WITNESSED_SIZE_KEY``) an approval through a
#: server raises in its own commit: read ahead with its decision.
WITNESS_REACH = "witnessed_size"

#: Log scans approve and read make one after another (the notice register):
#: read ahead together with the settings above.
ACTIONS_AHEAD: tuple[tuple[str, ...], ...] = (("notice.publish",),)

#: The actions whose log entries a remote caller may scan (``audit.entries_by_action``):
#: those the library scans, each logged per user, key, setting or register entry,
#: never per record, read or request. A scan of a bulk action (``grant.read``,
#: ``record.*``, ``request.*``, ``server.refuse``) answers a share of the whole log,
#: built in memory on the server's one database thread; the library finds those
#: through their indexes (``entries_by_ref``, ``entries_with_recipient``), and the
#: server refuses the scan (review RV2-1, docs/server.md "Limits").
SCANNED_ACTIONS = frozenset(
    {
        "user.add",
        "user.invite",
        "user.renew",
        "custodian.create",
        "keys.rotate",
        "vault.decommission",
        "vault.upgrade",
        "notice.publish",
        "export.anonymized",
        "setting.set",
        "rights.open",
        "rights.close",
        "rights.link",
        "incident.open",
        "incident.add_records",
        "incident.notify",
        "incident.close",
    }
)

#: A legal-obligation request's co-signatures are looked up by its index
#: (``entries_by_ref``), never by a scan of every ``request.cosign`` entry.
COSIGN_ACTIONS = ("request.cosign",)

#: A request's basis is looked up by its index (``entries_by_ref``), never by a
#: scan of every ``request.create`` entry.
BASIS_ACTIONS = ("request.create",)
#: The actions a read looks up by its grant, defined with the log's format so the
#: library's read need not import this package.
GRANT_ACTIONS = _GRANT_ACTIONS

#: Writes whose result is None: inside a transaction the remote backend queues
#: them and sends them with the next call that needs an answer, or the commit
#: (one ``/v1/rpc/batch`` request). A write with a result (``use_grant``,
#: ``decide``, ``replace_keyblob``, ``checkpoints.add`` ...) is sent at once.
QUEUED: frozenset[tuple[str, str]] = frozenset(
    {
        ("meta", "set"),
        ("meta", "delete"),
        ("custodians", "add"),
        ("custodians", "set_state"),
        ("custodians", "add_holder"),
        ("custodians", "delete"),
        ("records", "insert"),
        ("records", "update"),
        ("records", "put_field"),
        ("records", "delete"),
        ("records", "mark_key_destroyed"),
        ("records", "add_index_tags"),
        ("records", "drop_index_tags"),
        ("records", "set_import_progress"),
        ("access", "add_request"),
        ("access", "add_grant"),
        ("access", "set_grant_cache"),
        ("audit", "append"),
        ("statements", "add"),
        ("statements", "add_members"),
        ("statements", "save_state"),
        # Answers None, or fails the batch (and its commit) if nothing was stored.
        ("checkpoints", "add_at_head_cas"),
        ("access", "use_grant_cas"),
        ("access", "decide_cas"),
    }
)
