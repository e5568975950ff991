"""Review finding RV-3 (session 6, witness keys recorded in the vault): ``audit
verify`` and ``doctor`` now check the witnesses' cosignatures with the keys
recorded in the vault when the auditor gives none. Those keys are a setting one
admin signs, so the parties the witness guards against (an admin with the
server's host) choose the witness that vouches for the log: an admin swaps the
recorded key for a witness of their own, which cosigns from then on, and the
auditor's default check passes without a word. ``verify_cosignatures``'s own
docstring says why the keys must come out of band: "keys read from the vault
could be swapped by an insider".

Fixed: a check that uses the recorded keys (no ``--witness-key``) warns with
the last change of the setting (who, when) and how many there were; the
``--json`` form lists them (``witness_keys_changed``), and ``doctor`` warns too.
"""

from __future__ import annotations

from pathlib import Path

from childvault.vault import Vault
from tests.server._vaultserver import SAMPLE_CSV, admin_workstation, make_vault, passphrase
from tests.server.test_witness import WitnessProcess
from tests.server.test_witness_keys_recorded import _approve_one


class SwapNotReported(Exception):
    """The one failure this reproducer expects (a failing setup step is a real failure)."""


def test_a_witness_key_swapped_by_an_admin_is_reported(tmp_path: Path) -> None:
    vs = make_vault(tmp_path, ("officer1", "worker1"))
    admin_workstation(vs)
    with Vault.open(vs.home, "admin", passphrase("admin")) as admin:
        log_keys = admin.signer_vkeys()
    honest = WitnessProcess(vs.root / "honest-witness", log_keys)
    own = WitnessProcess(vs.root / "admins-witness", log_keys)  # the admin's own
    honest.start()
    own.start()
    try:
        vs.start(extra=["--witness-url", honest.url, "--witness-key", honest.vkey()])
        vs.cli("officer1", "import", "--confirm-backdated", str(SAMPLE_CSV))
        vs.cli("admin", "witness-keys", "add", honest.vkey())
        _approve_one(vs)
        assert vs.cli_json("officer1", "audit", "verify")["witness_cosigned"] >= 1
        # The admin points the server at their own witness and swaps the recorded key.
        vs.stop()
        vs.start(extra=["--witness-url", own.url, "--witness-key", own.vkey()])
        vs.cli("admin", "witness-keys", "remove", honest.vkey())
        vs.cli("admin", "witness-keys", "add", own.vkey())
        _approve_one(vs)
        # The auditor's default check (no --witness-key) must not pass silently.
        done = vs.cli("officer1", "audit", "verify", expect=None)
        said = (done.stdout + done.stderr).decode()
        reported = "witness" in said.lower() and "changed" in said.lower()
        if done.returncode == 0 and not reported:
            raise SwapNotReported(said)
        changed = vs.cli_json("officer1", "audit", "verify")["witness_keys_changed"]
        assert [c["actor"] for c in changed] == ["admin", "admin"]
        # The auditor who passes the honest key sees the new checkpoint uncosigned.
        explicit = vs.cli_json("officer1", "audit", "verify", "--witness-key", honest.vkey())
        assert "witness_keys_changed" not in explicit
    finally:
        vs.stop()
        own.stop()
        honest.stop()
