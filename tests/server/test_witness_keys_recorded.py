"""Witness keys recorded in the vault (issue 13): the signed setting ``witness_keys``.

An admin records a witness's verifier key (``witness-keys add``, a signed and
logged ``setting.set``); ``audit verify``, ``doctor`` and ``serve`` then use
the recorded keys when none is given. An explicit ``--witness-key`` still
works, and one that differs from the recorded keys is reported. An insider's
edit of the ``meta`` row changes nothing (the signed statement decides).
Real processes: a witness, the vault server, CLI clients.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import nacl.signing

from childvault.vault import Vault, _note
from tests._insider import Insider
from tests._sample import lasting
from tests.server._vaultserver import (
    CLI_TIMEOUT,
    VaultServer,
    admin_workstation,
    make_vault,
    passphrase,
)
from tests.server.conftest import ROOT
from tests.server.test_witness import WitnessProcess, _witness_notes

SAMPLE = Path(__file__).resolve().parents[2] / "childvault" / "vault" / "data" / "sample.csv"


def _approve_one(vs: VaultServer) -> None:
    (record,) = lasting(vs.cli_json("worker1", "list")["records"], 1)
    req = vs.cli_json(
        "worker1", "request", "--record", record, "--field", "name",
        "--purpose", "case_management", "--reason", "home visit",
    )  # fmt: skip
    vs.cli("officer1", "approve", str(req["request_id"]))


def _doctor(vs: VaultServer, *args: str) -> dict[str, str]:
    env = dict(os.environ, CHILDVAULT_PASSPHRASE=passphrase("admin"), LANG="C.UTF-8")
    for name in ("CHILDVAULT_SERVER", "CHILDVAULT_WITNESS_KEYS", "CHILDVAULT_HOME"):
        env.pop(name, None)
    cmd = [sys.executable, "-m", "childvault", "--home", str(vs.home), "--as", "admin"]
    done = subprocess.run(
        [*cmd, "--json", "doctor", *args],
        cwd=vs.root,
        env=env,
        capture_output=True,
        timeout=CLI_TIMEOUT,
    )
    return {c["name"]: c["status"] for c in json.loads(done.stdout)["checks"]}


def test_recorded_witness_keys_are_used_by_default(tmp_path: Path) -> None:
    vs = make_vault(tmp_path, ("officer1", "worker1"))
    admin_workstation(vs)
    with Vault.open(vs.home, "admin", passphrase("admin")) as admin:
        log_keys = admin.signer_vkeys()
    witness = WitnessProcess(vs.root / "witness", log_keys)
    witness.start()
    other = _note.vkey("other-witness", bytes(nacl.signing.SigningKey.generate().verify_key))
    try:
        # No key recorded yet: a --witness-url without --witness-key is refused.
        env = dict(os.environ, CHILDVAULT_PASSPHRASE=passphrase("admin"), LANG="C.UTF-8")
        cmd = [sys.executable, "-m", "childvault", "--home", str(vs.home), "--as", "admin"]
        cmd += ["serve", "--listen", "127.0.0.1:1", "--witness-url", witness.url]
        refused = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, timeout=CLI_TIMEOUT)
        assert refused.returncode == 2, refused.stderr.decode()
        assert b"witness-keys add" in refused.stderr

        vs.start(extra=["--witness-url", witness.url, "--witness-key", witness.vkey()])
        vs.cli("officer1", "import", "--confirm-backdated", str(SAMPLE))
        listed = vs.cli_json("admin", "witness-keys", "list")
        assert listed["witness_keys"] == []
        # Staff cannot record one (an admin's signed setting).
        denied = vs.cli("worker1", "witness-keys", "add", witness.vkey(), expect=3)
        assert b"admin" in denied.stderr
        added = vs.cli_json("admin", "witness-keys", "add", witness.vkey())
        assert added["witness_keys"] == [witness.vkey()] and added["signed_by"] == "admin"
        _approve_one(vs)

        # audit verify and doctor use the recorded key when none is given.
        done = vs.cli_json("officer1", "audit", "verify")
        assert done["witness_cosigned"] >= 1
        assert "witness_keys_recorded" not in done
        assert _doctor(vs)["cosignatures"] == "ok"

        # A recorded witness that never cosigned fails the default check; the explicit
        # key still verifies, and the difference from the recorded keys is reported.
        vs.cli("admin", "witness-keys", "add", other)
        assert vs.cli("officer1", "audit", "verify", expect=4).returncode == 4
        explicit = vs.cli_json("officer1", "audit", "verify", "--witness-key", witness.vkey())
        assert explicit["witness_cosigned"] >= 1
        assert explicit["witness_keys_recorded"] == sorted([witness.vkey(), other])
        checks = _doctor(vs, "--witness-key", witness.vkey())
        assert checks["cosignatures"] == "ok" and checks["witness keys"] == "warn"
        removed = vs.cli_json("admin", "witness-keys", "remove", other)
        assert removed["witness_keys"] == [witness.vkey()]

        # An insider's edit of the readable copy changes nothing.
        with Insider(vs.home, vs.identity("worker1")) as insider:
            insider.update("meta", {"value": other}, where={"key": "witness_keys"})
        assert vs.cli_json("admin", "witness-keys", "list")["witness_keys"] == [witness.vkey()]
        assert vs.cli_json("officer1", "audit", "verify")["witness_cosigned"] >= 1
        # Both changes are in the log, signed by the admin.
        entries = vs.cli_json("officer1", "audit", "log", "--action", "setting.set")["entries"]
        signed = [e["entry"] for e in entries if e["entry"]["outcome"] == "ok"]
        assert [(e["actor"], e["detail"]["key"]) for e in signed] == [("admin", "witness_keys")] * 3
        # The staff member's attempt is logged as denied.
        assert any(
            e["entry"]["outcome"] == "denied" and e["entry"]["actor"] == "worker1" for e in entries
        )

        # serve --witness-url without a key: the witness cosigns under a recorded key.
        vs.stop()
        before = len(_witness_notes(vs))
        vs.start(extra=["--witness-url", witness.url])
        _approve_one(vs)
        name, public = _note.parse_vkey(witness.vkey())
        notes = _witness_notes(vs)
        assert len(notes) > before
        assert _note.open_note(notes[-1], {name: public})[1] == [name]
    finally:
        vs.stop()
        witness.stop()
