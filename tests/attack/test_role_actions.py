"""Review RV2-2 (round 2, session 9): entries of actions reserved to a role, logged
by a user without it.

Any user may append a log entry of any action in their own name (signed by their
own key, linked to the head). An entry of an action whose command needs a role
decides something for its readers, so it counts only when its author held that
role (docs/trust.md "Entries reserved to a role"): the server refuses it at
``audit.append`` (a real ``childvault serve`` process, ``_wire``), and each reader
ignores it in the embedded mode (a staff member with their own database key).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from childvault.keys import AccessDenied
from childvault.vault import Basis, NewRecordInput
from childvault.vault._audit import Event
from childvault.vault._svc_settings import SettingsService
from tests._insider import Insider
from tests.attack import _wire
from tests.attack._wire import log_rows, refused
from tests.conftest import World, child_values, consent
from tests.server._vaultserver import VaultServer

_SETTING = Event("worker2", "setting.set", detail={"key": "max_uses", "value": "9"})
_EXPORT = Event(
    "worker2", "export.anonymized", detail={"export": "ab" * 16, "released_sha256": "00" * 32}
)
_COSIGN = Event("worker2", "vault.decommission", detail={"phase": "cosign"})


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VaultServer]:
    """The attack vault (two officers, two staff, four records), served."""
    yield from _wire.served_fixture(tmp_path_factory)


#: Actions reserved to a role since the table covers every action (issue 12 follow-up).
_MORE = [
    Event("worker2", "request.approve", request="ab" * 16, grant="cd" * 16),
    Event("worker2", "request.deny", request="ab" * 16),
    Event("worker2", "incident.close", detail={"incident": "ef" * 16}),
    Event("worker2", "rights.close", detail={"rights": "ef" * 16, "outcome": "done"}),
    Event("worker2", "user.disable", detail={"user": "worker1"}),
    Event("worker2", "keys.rotate", detail={"phase": "start"}),
]


@pytest.mark.parametrize("event", [_SETTING, _EXPORT, _COSIGN, *_MORE], ids=lambda e: e.action)
def test_a_staff_members_entry_of_a_roles_action_is_refused_by_the_server(
    served: VaultServer, event: Event
) -> None:
    """The server refuses (403 ``role``) a successful entry of a role's action from
    a user without the role, before it is stored; the same action refused (the
    library logs a denied attempt in the name of whoever tried) is taken."""
    vs = served
    size = _wire.read(vs, "audit", "size")
    rows = log_rows(vs, vs.identity("worker2"), event)
    refused(_wire.rpc(vs, "worker2", "audit", "append", rows), 403, "role")
    assert _wire.read(vs, "audit", "size") == size
    denied = Event("worker2", event.action, "denied", detail={"reason": "role"})
    rows = log_rows(vs, vs.identity("worker2"), denied)
    assert _wire.ok(_wire.rpc(vs, "worker2", "audit", "append", rows)) is None


def test_an_officers_setting_entry_is_taken_by_the_server(served: VaultServer) -> None:
    """The role's holder logs it through the server as before."""
    with served.connect("officer1") as officer:
        assert officer.set_setting("export_min_k", "7").value == "7"
        (row,) = [s for s in officer.list_settings() if s.key == "export_min_k"]
        assert row.signed_by == "officer1"


def test_a_staff_members_setting_entry_is_not_shown_as_the_signer(world: World) -> None:
    """``settings list`` names the signer of a setting, ``settings history`` every
    change: a staff member's ``setting.set`` entry (no statement, nothing applied)
    must show in neither."""
    with world.open("admin") as v:
        v.set_setting("max_uses", "40")
    with world.open("worker2") as v:
        v._session.log([_SETTING], datetime.now(UTC))
    with world.open("admin") as v:
        (row,) = [s for s in v.list_settings() if s.key == "max_uses"]
        assert (row.value, row.signed_by) == ("40", "admin")
        history = SettingsService(v._session).history("max_uses")
        assert [(h["actor"], h["value"]) for h in history] == [("admin", "40")]


def test_a_staff_members_export_entry_does_not_stop_exports(world: World, tmp_path: Path) -> None:
    """A logged ``export.anonymized`` release missing from the releases table makes
    every later export refuse: a staff member's entry is no release."""
    with world.open("worker1") as v:
        v.add_records(
            [NewRecordInput("child", child_values(i), consent(("statistics",))) for i in range(6)]
        )
    with world.open("worker2") as v:
        v._session.log([_EXPORT], datetime.now(UTC))
    with world.open("officer1") as v:
        assert v.export_anonymized(tmp_path / "s.csv").k == 5
        assert v.export_anonymized(tmp_path / "t.csv").k == 5


def test_a_staff_members_cosignature_does_not_allow_decommissioning(world: World) -> None:
    """Decommissioning needs an officer's logged co-signature: officers are taken
    from the verified trust state, not the ``users`` table an insider edits."""
    with Insider(world, "worker2") as insider:
        assert insider.update("users", {"roles": "officer"}, {"name": "worker2"}) == 1
    with world.open("worker2") as v:
        v._session.log([_COSIGN], datetime.now(UTC))
    with world.open("admin") as v, pytest.raises(AccessDenied, match="co-signature"):
        v.decommission(confirm=True)
    with world.open("admin") as v:
        assert v._session.db.meta.get("accepting_records") != "0"


def test_a_staff_members_decommission_start_ends_no_collection_locally(world: World) -> None:
    """The embedded reader of RV9-5 (no server to refuse the entry): a staff
    member's ``vault.decommission`` start leaves collection open."""
    start = Event("worker2", "vault.decommission", detail={"phase": "start"})
    with world.open("worker2") as v:
        v._session.log([start], datetime.now(UTC))
    with world.open("worker1") as v:
        (rid,) = v.add_records(
            [NewRecordInput("child", child_values(1), consent(("case_management",)))]
        )
        assert rid


def test_a_staff_members_cosignature_is_no_officers_locally(world: World) -> None:
    """The embedded reader of RV9-1: a staff member's ``request.cosign`` is no
    second officer for a legal-obligation approval."""
    legal = Basis("legal_obligation", recipient="court", provision="s.110", assessment="P")
    with world.open("worker1") as v:
        (rid,) = v.add_records(
            [NewRecordInput("child", child_values(2), consent(("case_management",)))]
        )
        req = v.request_access([rid], ["name"], "legal_protection", "court", basis=legal)
        info = v._session.db.access.request(req)
    assert info is not None
    cosign = Event(
        "worker2",
        "request.cosign",
        records=info.records,
        fields=info.fields,
        purpose=info.purpose,
        request=req,
    )
    with world.open("worker2") as v:
        v._session.log([cosign], datetime.now(UTC))
    with world.open("officer1") as v, pytest.raises(AccessDenied, match="two officers"):
        v.approve(req)


def test_a_staff_members_entries_close_no_incident_and_no_rights_request(world: World) -> None:
    """The incident and rights registers are folded from the log: a staff member's
    ``incident.close`` or ``rights.close`` (in their own name, signed) closes
    nothing in the embedded mode; the officer's does."""
    with world.open("worker1") as v:
        (rid,) = v.add_records(
            [NewRecordInput("child", child_values(5), consent(("case_management",)))]
        )
    with world.open("officer1") as v:
        incident = v.incident_open("leak", v.now())
        rights = v.rights_open(
            "object", rid, requester="guardian", received=v.now().date(), identity_checked=True
        )
    with world.open("worker2") as v:
        v._session.log(
            [
                Event("worker2", "incident.close", detail={"incident": incident.id}),
                Event(
                    "worker2",
                    "rights.close",
                    records=[rid],
                    detail={"rights": rights.id, "outcome": "withdrawn"},
                ),
            ],
            datetime.now(UTC),
        )
    with world.open("officer1") as v:
        assert [i.status for i in v.incidents() if i.id == incident.id] == ["open"]
        assert [r.status for r in v.rights_list() if r.id == rights.id] == ["open"]
        v.incident_notify(incident.id, "authority")
        v.incident_close(incident.id)
        v.rights_close(rights.id, "withdrawn")
        assert [i.status for i in v.incidents() if i.id == incident.id] == ["closed"]
        assert [r.status for r in v.rights_list() if r.id == rights.id] == ["closed"]
