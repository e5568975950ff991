"""A staff member's own signed log entry, appended to the store directly.

For the attack tests of entries the library never writes (a member written
twice, U+0000: tests/attack/test_log_entries_canonical.py, test_log_entries_nul.py):
worker1, holding the store's credentials, appends a ``grant.read`` of a real,
approved grant, signed with their own key, its bytes changed by the test.
"""

from __future__ import annotations

from childvault.vault import Basis, _audit
from childvault.vault._audit import Event
from childvault.vault._merkle import leaf_hash
from childvault.vault._time import iso
from tests.conftest import World, add_children

LEGAL = Basis("legal_obligation", recipient="court", provision="s.110", assessment="P")


def approved_read(world: World) -> Event:
    """worker1's legal-obligation request for a record's name for the court,
    co-signed and approved: the read entry the library would log for it."""
    with world.open("officer1") as v:
        ids = add_children(v, 1)
    with world.open("worker1") as v:
        req = v.request_access(ids, ["name"], "legal_protection", "court", basis=LEGAL)
    with world.open("officer2") as v:
        v.cosign(req)
    with world.open("officer1") as v:
        grant_id = v.approve(req).grant_id
    return Event(
        "worker1",
        "grant.read",
        records=tuple(ids),
        fields=("name",),
        purpose="legal_protection",
        request=req,
        grant=grant_id,
        detail=LEGAL.detail(),
    )


def append_own(
    world: World, event: Event, change: tuple[bytes, bytes] | None = None
) -> tuple[int, bytes]:
    """worker1 appends ``event`` as the library encodes it, its bytes changed by
    ``change`` (old, new: ``old`` found exactly once), linked, hashed and signed
    by them: its (seq, entry)."""
    with world.open("worker1") as v:
        db = v._session.db
        with db.transaction():
            seq, prev = db.audit.head()
            entry = _audit.encode_entry(seq, iso(world.clock.now), event, prev)
            if change is not None:
                assert entry.count(change[0]) == 1
                entry = entry.replace(*change)
            digest = leaf_hash(entry)
            sig = world.ids["worker1"].sign(_audit.entry_message(digest))
            db.audit.append([(seq, entry, digest, sig)])
    return seq, entry
