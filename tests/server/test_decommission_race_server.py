"""Through a server, a record whose add passed the client's check before the vault
was decommissioned is refused by the server's own transaction (P-23, compliance
gap 8): ``records.insert`` reads ``accepting_records`` where it runs, so a
client cannot skip the check. The add is held at its write (an event, no timing)
while the admin decommissions, then goes on.
"""

from __future__ import annotations

import shutil
import threading
from pathlib import Path
from typing import Any

import pytest

from childvault.keys import AccessDenied
from childvault.vault import Vault
from childvault.vault._svc_records_write import RecordWrites
from tests.conftest import add_children
from tests.server._vaultserver import make_vault, passphrase

_WAIT_S = 60.0  # a guard against a hang only


def test_a_held_add_is_refused_by_the_server_after_decommissioning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    vs = make_vault(tmp_path, ("officer1", "officer2", "worker1"))
    vs.start()
    try:
        with vs.connect("worker1") as v:
            listed = add_children(v, 2)
        with vs.connect("officer1") as v:
            assert v.cosign_decommission(tmp_path / "contacts.sealed").records == 2
        reached, go = threading.Event(), threading.Event()
        original = RecordWrites._write
        outcome: list[Any] = []

        def held(*args: Any, **kwargs: Any) -> Any:
            reached.set()
            assert go.wait(_WAIT_S)
            return original(*args, **kwargs)

        monkeypatch.setattr(RecordWrites, "_write", held)

        def add() -> None:
            try:
                with vs.connect("worker1") as w:
                    outcome.append(add_children(w, 1))
            except BaseException as exc:
                outcome.append(exc)

        worker = threading.Thread(target=add, daemon=True)
        worker.start()
        assert reached.wait(_WAIT_S), outcome
        monkeypatch.setattr(RecordWrites, "_write", original)  # the admin's own writes
        # Embedded, on the served file: in local mode decommissioning deletes the
        # custodian rows, which the server allows no remote caller.
        with Vault.open(vs.home, "admin", passphrase("admin")) as v:
            assert v.decommission(confirm=True).records_shredded == len(listed)
        go.set()
        worker.join(_WAIT_S)
        assert len(outcome) == 1 and isinstance(outcome[0], AccessDenied), outcome
        assert "decommissioned" in str(outcome[0])
        with vs.connect("officer1") as v:
            assert list(v.list_records()) == []
    finally:
        vs.stop()


def test_the_contact_list_is_opened_through_the_server_and_logged(tmp_path: Path) -> None:
    """Compliance gap 9 through a server: the entry is an officer's (the server
    checks the role at ``audit.append``); another officer is refused."""
    vs = make_vault(tmp_path, ("officer1", "officer2", "worker1"))
    vs.start()
    try:
        with vs.connect("worker1") as v:
            listed = add_children(v, 2)
        sealed = tmp_path / "contacts.sealed"
        with vs.connect("officer1") as v:
            v.cosign_decommission(sealed)
            opened = v.open_decommission_contacts(sealed)
        assert {c["record_id"] for c in opened.contacts} == set(listed)
        with vs.connect("officer2") as v, pytest.raises(AccessDenied, match="not the guardian"):
            v.open_decommission_contacts(sealed)
        with vs.connect("officer1") as v:
            logged = [
                (e["entry"]["actor"], e["entry"]["outcome"])
                for e in v.audit_entries()
                if e["entry"]["action"] == "decommission.read_contacts"
            ]
        assert logged == [("officer1", "ok"), ("officer2", "denied")]
    finally:
        vs.stop()


def test_decommissioning_a_local_vault_through_a_server_is_refused_before_anything(
    tmp_path: Path,
) -> None:
    """Regression: in local mode decommissioning ends by removing the custodian key
    from every key slot and the database, which no remote caller may do; through a
    server it shredded every record and then failed there, half done. It is now
    refused before anything changes (logged), and works on the server machine."""
    vs = make_vault(tmp_path, ("officer1", "officer2", "worker1"))
    ws = vs.workstation("admin") / "identities"
    ws.mkdir(parents=True, mode=0o700)
    shutil.copy2(vs.home / "identities" / "admin.id", ws / "admin.id")
    vs.start()
    try:
        with vs.connect("worker1") as v:
            listed = add_children(v, 2)
        with vs.connect("officer1") as v:
            v.cosign_decommission(tmp_path / "contacts.sealed")
        with vs.connect("admin") as v, pytest.raises(AccessDenied, match="server machine"):
            v.decommission(confirm=True)
        with vs.connect("officer1") as v:
            assert sorted(r.id for r in v.list_records()) == sorted(listed)
            refused = [
                e["entry"]["detail"]["reason"]
                for e in v.audit_entries()
                if (e["entry"]["action"], e["entry"]["outcome"]) == ("vault.decommission", "denied")
            ]
        assert refused == ["remote_local_provider"]
        with Vault.open(vs.home, "admin", passphrase("admin")) as v:
            assert v.decommission(confirm=True).records_shredded == len(listed)
    finally:
        vs.stop()
