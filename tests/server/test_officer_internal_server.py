"""Officer-internal decryption through the server (a regression).

A consent update (the age check decrypts the date of birth) and an anonymised
export release keys to the officer's own identity. In server mode every
release was wrapped under a server-held release key, which the server makes
only for a grant a logged approval adds, and redeems only for a real grant:
both commands failed through the server. They now release to the officer
directly (``Keyring.officer_to_self``), after their own log entry, as in the
embedded mode.
"""

from __future__ import annotations

from pathlib import Path

from childvault.vault import Vault
from tests.conftest import TODAY, add_children, consent, lower_export_k
from tests.server._vaultserver import make_vault, passphrase


def test_consent_update_and_export_through_the_server(tmp_path: Path) -> None:
    vs = make_vault(tmp_path, ("officer1", "worker1"))
    with Vault.open(vs.home, "worker1", passphrase("worker1")) as v:
        ids = add_children(v, 6, purposes=("case_management", "statistics"))
    vs.start()
    try:
        with vs.connect("officer1") as officer:
            wider = consent(("case_management", "statistics", "education_support"), today=TODAY)
            officer.update_consent(ids[0], wider)
            assert "education_support" in officer.consent_of(ids[0]).purposes
            lower_export_k(officer)
            summary = officer.export_anonymized(tmp_path / "stats.csv", k=3)
            assert summary.k == 3
            assert (tmp_path / "stats.csv").read_text(encoding="utf-8-sig").strip()
            actions = [e["entry"]["action"] for e in officer.audit_entries()]
        assert "consent.renew" in actions
        assert "export.anonymized" in actions
    finally:
        vs.stop()
