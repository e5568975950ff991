"""An officer with a valid identity, calling the server's RPCs directly.

Officers may decide, issue grants, make release keys and sign checkpoints
(``ROLE_WRITES``); the attacks here use those writes outside the approval the
library performs (``Vault.approve``: policy checks, the logged decision, the
witnessed checkpoint). Refused attacks are regressions; accepted ones are
findings (``/work/briefs/findings-A.md``), kept as strict xfails.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from childvault.vault import _note
from childvault.vault._audit import Event
from childvault.vault._backend import GrantRow
from childvault.vault._merkle import root_of
from childvault.vault._session import log_origin, signer_name
from childvault.vault._time import iso
from tests.attack import _wire
from tests.attack._wire import batch, call, log_rows, read, refused, refused_somehow
from tests.server._vaultserver import VaultServer


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VaultServer]:
    """The attack vault (two officers, two staff, four records), served."""
    yield from _wire.served_fixture(tmp_path_factory)


def _pending(vs: VaultServer, requester: str) -> str:
    """A pending request by ``requester`` (the honest client) for one record's name."""
    with vs.connect(requester) as who:
        return who.request_access(
            _wire.record_ids(vs)[:1], ["name"], "case_management", "home visit"
        )


def _grant_row(request_id: str, officer: str, requester: str) -> GrantRow:
    now = datetime.now(UTC)
    return GrantRow(
        secrets.token_hex(16),
        request_id,
        officer,
        requester,
        iso(now),
        iso(now + timedelta(hours=1)),
        1,
        0,
        None,
        None,
        None,
    )


def test_an_officer_cannot_redeem_a_grant_issued_to_someone_else(served: VaultServer) -> None:
    vs = served
    grant_id, token = _wire.approved(vs, "worker1")
    with vs.connect("worker1") as staff:
        staff.read_with_grant(token)  # a logged use: a release is now due, to worker1
    for officer in ("officer1", "officer2"):
        r = batch(vs, officer, call("release", "redeem", grant_id))
        refused(r, 403, "release_refused")
        assert "issued to worker1" in r.json()["error"]
        assert _wire.refusal_logged(vs, officer, "release_refused")
    # A second release key for the same grant (to know it) is refused too.
    refused(batch(vs, "officer2", call("release", "new", grant_id)), 409, "release_refused")


def test_an_officer_cannot_issue_a_grant_in_another_officers_name(served: VaultServer) -> None:
    vs = served
    req = _pending(vs, "worker1")
    row = _grant_row(req, "officer2", "worker1")
    refused(batch(vs, "officer1", call("access", "add_grant", row)), 403, "binding")
    r = batch(
        vs,
        "officer1",
        call(
            "access",
            "decide",
            req,
            status="approved",
            by="officer2",
            at=iso(datetime.now(UTC)),
            reason=None,
        ),
    )
    refused(r, 403, "binding")
    assert read(vs, "access", "grant", row.id) is None
    assert read(vs, "access", "request", req).status == "pending"


def test_an_officer_cannot_log_an_approval_in_another_officers_name(served: VaultServer) -> None:
    vs = served
    req = _pending(vs, "worker1")
    before = read(vs, "audit", "head")
    rows = log_rows(vs, vs.identity("officer1"), Event("officer2", "request.approve", request=req))
    refused(batch(vs, "officer1", call("audit", "append", rows)), 403, "binding")
    assert read(vs, "audit", "head") == before


@pytest.mark.xfail(
    strict=True,
    reason="finding A-4: the server stores a grant and makes its release key with no "
    "decision and no logged approval",
)
def test_a_grant_needs_a_logged_approval(served: VaultServer) -> None:
    vs = served
    req = _pending(vs, "worker1")
    row = _grant_row(req, "officer1", "worker1")
    before = read(vs, "audit", "head")
    # No access.decide, no request.approve entry, no checkpoint: a grant and its
    # release key, nothing in the log.
    r = batch(vs, "officer1", call("access", "add_grant", row), call("release", "new", row.id))
    assert read(vs, "audit", "head")[0] == before[0]
    refused_somehow(r, 403, 409)
    assert read(vs, "access", "grant", row.id) is None


@pytest.mark.xfail(
    strict=True,
    reason="finding A-5: the server lets an officer decide (and grant) their own request; "
    "the rule is only in the officer's client (_policy.py)",
)
def test_an_officer_cannot_approve_their_own_request(served: VaultServer) -> None:
    vs = served
    req = _pending(vs, "officer1")
    now = iso(datetime.now(UTC))
    row = _grant_row(req, "officer1", "officer1")
    rows = log_rows(
        vs,
        vs.identity("officer1"),
        Event("officer1", "request.approve", request=req, grant=row.id),
    )
    r = batch(
        vs,
        "officer1",
        call("access", "decide", req, status="approved", by="officer1", at=now, reason=None),
        call("access", "add_grant", row),
        call("release", "new", row.id),
        call("audit", "append", rows),
    )
    refused_somehow(r, 403, 409)
    assert read(vs, "access", "request", req).status == "pending"


@pytest.mark.xfail(
    strict=True,
    reason="finding A-6: the server stores a signed checkpoint whose root is not the log's "
    "(only the note's signature and origin are checked); every later audit verify fails",
)
def test_a_checkpoint_that_hides_an_entry_is_refused(served: VaultServer) -> None:
    """Runs last in this module: when accepted, the vault no longer verifies."""
    vs = served
    size, _ = read(vs, "audit", "head")
    leaves = [row[2] for row in read(vs, "audit", "page", 0)]
    assert len(leaves) == size
    # The tree of the log with one entry (an approval, say) replaced.
    hidden = list(leaves)
    hidden[size // 2] = b"\x00" * 32
    fake_root = root_of(hidden)
    with vs.connect("officer1") as officer:
        vault_id = officer.vault_id
    ident = vs.identity("officer1")
    cp = _note.Checkpoint(log_origin(vault_id), size, fake_root)
    note = _note.sign_note(
        cp.body(), signer_name(vault_id, "officer1"), ident.sign, ident.public.signing_key
    )
    now = iso(datetime.now(UTC))
    r = batch(
        vs,
        "officer1",
        call("checkpoints", "add_at_head", size, fake_root, note, "officer1", now, b""),
    )
    refused_somehow(r, 403, 409)
    assert all(c.root != fake_root for c in read(vs, "checkpoints", "all"))
