"""A log entry holding U+0000 (review RV11-2).

PostgreSQL's ``jsonb`` refuses the character U+0000, so the generated index
columns of an entry holding it (``action``, ``request_ref``, ``grant_ref``,
``recipient_ref``: ``cv_entry_member`` answers null when the cast fails) are
null, and every look-up through them misses it. A staff member with the
store's credentials appends their own signed ``grant.read`` with a detail
member ``"\\u0000"``: canonical, linked, signed, yet absent from the transfers
register and from every look-up of the grant's reads. The trust replay
(``audit verify``, ``audit checkpoint``, every operation that seals, approves or
reads) refuses such an entry on either store, and the library never writes one.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from childvault.keys import IntegrityError, UsageError
from childvault.vault import Basis, _audit
from childvault.vault._audit import Event
from childvault.vault._merkle import leaf_hash
from childvault.vault._time import iso
from tests.attack import _wire
from tests.attack._own_entry import append_own, approved_read
from tests.attack._wire import read, refused
from tests.conftest import World, add_children

# any_world: the two-store fixture of tests/postgres (tests/attack/conftest.py).
from tests.postgres.conftest import PgWorld
from tests.server._vaultserver import VaultServer

#: The honest detail's end, and the same with a member holding U+0000 after it
#: (still canonical: "x" sorts after "recipient").
_END = b'"recipient":"court"}'
_NUL = b'"recipient":"court","x":"\\u0000"}'


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VaultServer]:
    """The attack vault (two officers, two staff, four records), served."""
    yield from _wire.served_fixture(tmp_path_factory)


def test_a_read_holding_nul_is_refused_on_either_store(any_world: World) -> None:
    world = any_world
    event = approved_read(world)
    seq, entry = append_own(world, event, (_END, _NUL))
    with world.open("worker1") as v:
        db = v._session.db
        # The premise: PostgreSQL's indexes do not see it; SQLite's do.
        found = db.audit.entries_by_ref(("grant.read",), grant=event.grant)
        assert found == ([] if isinstance(world, PgWorld) else [entry])
        assert _audit.canonical(_audit.decode_entry(entry)) == entry
    match = f"log entry {seq} holds the character U\\+0000"
    with world.open("officer2") as v, pytest.raises(IntegrityError, match=match):
        v.verify_audit(full=True)
    with world.open("officer1") as v, pytest.raises(IntegrityError, match=match):
        v.checkpoint()


def test_the_library_logs_no_entry_holding_nul(world: World) -> None:
    with world.open("officer1") as v:
        ids = add_children(v, 1)
    nul = Basis("legal_obligation", recipient="court\x00", provision="s.110", assessment="P")
    with world.open("worker1") as v:
        before = v._session.db.audit.head()
        # Refused at the API boundary, naming the argument (review FX-3) ...
        with pytest.raises(UsageError, match=r"'basis\.recipient' cannot hold .*U\+0000"):
            v.request_access(ids, ["name"], "legal_protection", "court", basis=nul)
        assert v._session.db.audit.head() == before
        # ... and by encode_entry itself, the last line.
        event = Event("worker1", "request.create", request="0" * 32, detail=nul.detail())
        with pytest.raises(ValueError, match="U\\+0000"):
            _audit.encode_entry(before[0], iso(world.clock.now), event, before[1])
        # A backslash and "u0000" as text is no U+0000: logged as ever.
        text = Basis("legal_obligation", recipient="court\\u0000", provision="s", assessment="P")
        v.request_access(ids, ["name"], "legal_protection", "court", basis=text)
    with world.open("officer2") as v:
        assert v.verify_audit(full=True).entries == before[0] + 1


def test_the_server_stores_no_entry_holding_nul(served: VaultServer) -> None:
    vs = served
    seq, prev = read(vs, "audit", "head")
    event = Event("worker1", "record.list", detail={"x": "y"})
    entry = _audit.encode_entry(seq, iso(datetime.now(UTC)), event, prev)
    entry = entry.replace(b'"x":"y"', b'"x":"\\u0000"')
    digest = leaf_hash(entry)
    row = (seq, entry, digest, vs.identity("worker1").sign(_audit.entry_message(digest)))
    refused(_wire.rpc(vs, "worker1", "audit", "append", [row]), 409, "unverified")
    assert read(vs, "audit", "head") == (seq, prev)
