"""Signed settings over ``childvault serve`` (issues 12, 15).

``settings set`` runs from a workstation with ``--server`` as it runs locally:
the client signs the ``setting.set`` statement and the server's commit-time
replay verifies it. A statement the signer was not entitled to make is
refused at commit and nothing is stored.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from childvault.keys import ChildVaultError
from childvault.vault import _statements
from childvault.vault._audit import Event
from childvault.vault._registrations import append_with_statements, with_statement
from childvault.vault._svc_settings import setting_statement
from childvault.vault._time import iso
from tests.server._vaultserver import VaultServer, make_vault


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VaultServer]:
    vs = make_vault(tmp_path_factory.mktemp("settings-vault"))
    vs.start()
    try:
        yield vs
    finally:
        vs.stop()


def test_settings_set_and_list_over_the_server(served: VaultServer) -> None:
    done = served.cli_json("officer1", "settings", "set", "rights_deadline_days.object", "30")
    assert done["setting"] == {
        "key": "rights_deadline_days.object",
        "value": "30",
        "default": "15",
        "signer": "officer",
        "source": "signed",
        "signed_by": "officer1",
        "meta": None,
    }
    listed = {s["key"]: s for s in served.cli_json("worker1", "settings", "list")["settings"]}
    assert (listed["rights_deadline_days.object"]["value"], listed["max_uses"]["value"]) == (
        "30",
        "10",
    )
    refused = served.cli("worker1", "settings", "set", "max_uses", "99", expect=3)
    assert b"max_uses" in refused.stderr


def test_a_staff_members_setting_statement_is_refused_at_commit(served: VaultServer) -> None:
    with served.connect("worker1") as v:
        s = v._session
        moment = s.now()
        envelope = _statements.sign(
            setting_statement(s.vault_id, iso(moment), "consent_backdate_days", "366"), [s.me]
        )
        detail = with_statement({"key": "consent_backdate_days"}, envelope)
        with pytest.raises(ChildVaultError), s.db.transaction():
            append_with_statements(
                s.db, [(Event("worker1", "setting.set", detail=detail), envelope)], moment
            )
    with served.connect("officer1") as v:
        assert v.setting("consent_backdate_days") == "30"
        v.verify_audit()  # nothing unverifiable was stored
